"""Languages: WER per language of the routed models on real and made speech, base against tiny.en on English, and
what routing costs.

    python -m benchmarks.languages            # make bench
    python -m benchmarks.languages --quick    # fewer recordings, one voice per language, two English passages

The engine of the config's Transcriber (``WhisperEngine``, no Ray: routing and decoding are the same code the
replicas run), on:

1. real recordings with the exact text said (``benchmarks.support.real_speech.SPOKEN``: Spanish, Swedish and
   Japanese read by volunteers, English read and spontaneous), and each language of
   ``benchmarks.support.speech.LANGUAGES`` read by two or three made voices (SVOX Pico's, espeak-ng's,
   festival's Italian and Russian), each sent with no model and no language: the language the detector heard, the
   model routing chose, the error rate (characters for Japanese), and the detection's time (one encoder pass of
   the detector on the source's first window);
2. English, real and made (flite's and festival's voices, not espeak-ng), decoded by tiny.en and by base named
   explicitly: WER and audio hours per hour of each, the reason English is routed to tiny.en.

Writes ``languages-<machine>-<date>.json`` and ``.md`` under ``--out`` (``-quick`` in the name for a quick run)
and prints the tables. The machine's load average is recorded: detection time grows with it.
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.support.harness import benchmark_parser, load_config
from benchmarks.support.real_speech import SPOKEN_QUICK, spoken
from benchmarks.support.results import cpu_machine, write_result
from benchmarks.support.speech import LANGUAGES, clip_set, error_rate, missing_tools, speak, word_error_rate
from deployments.audio import decode
from deployments.schemas import TranscribeOptions
from deployments.settings import TranscriberSettings
from deployments.transcriber import WhisperEngine
from deployments.window_decoding import detect_language

VOICES = {"en": ["espeak-ng:en", "flite:slt"], "de": ["pico:de-DE", "espeak-ng:de", "espeak-ng:de+m3"],
          "es": ["pico:es-ES", "espeak-ng:es", "espeak-ng:es-419"],
          "fr": ["pico:fr-FR", "espeak-ng:fr", "espeak-ng:fr-be"],
          "it": ["festival:lp_diphone", "festival:pc_diphone", "pico:it-IT"],
          "ru": ["festival:msu_ru_nsh_clunits", "espeak-ng:ru"]}
"""Who reads each language's text (SVOX Pico, espeak-ng, festival); a quick run takes the first voice of each."""
ENGLISH_PASSAGES = {"45s": 45.0}


def routed_row(engine: WhisperEngine, audio: np.ndarray, language: str, text: str, source: str,
               real: bool) -> dict[str, Any]:
    """One source sent as a routed request: detected language, model, error rate, seconds of each stage."""
    detection: list[float] = []
    started = time.perf_counter()
    options = engine.route(audio[:30 * 16000], TranscribeOptions(model="auto"),
                           lambda _, seconds: detection.append(seconds))
    result = engine.transcribe(audio, options)
    total = time.perf_counter() - started
    wer = round(error_rate(language, text, result.text), 4)
    whole, whole_s = whole_window_detection(engine, audio)
    return {"language": language, "source": source, "real": real, "audio_s": round(len(audio) / 16000, 2),
            "detected": result.language, "model": result.model, "wer": wer,
            "detect_s": round(detection[0], 3), "total_s": round(total, 3), "detected_30s": whole,
            "detect_30s_s": round(whole_s, 3), "text": result.text}


def whole_window_detection(engine: WhisperEngine, audio: np.ndarray) -> tuple[str, float]:
    """The detector's answer and seconds on Whisper's whole 30-s window, beside the config's ``detect_context_s``."""
    routing = engine.settings.routing
    assert routing is not None, "the languages benchmark needs a routed config"
    _, model = engine.model_for(routing.detector)
    started = time.perf_counter()
    language = detect_language(model, audio[:30 * 16000], engine.settings.languages.get(routing.detector, []), 30.0)
    return language, time.perf_counter() - started


def routed_rows(engine: WhisperEngine, quick: bool) -> list[dict[str, Any]]:
    """The real recordings, then each language's made voices, as routed requests."""
    rows = [routed_row(engine, decode(s.path), s.language, s.text, f"{s.name}, {s.corpus.split(':')[0]}", True)
            for s in spoken(SPOKEN_QUICK if quick else None)]
    for code, (_, text) in LANGUAGES.items():
        for voice in VOICES[code][:1] if quick else VOICES[code]:
            rows.append(routed_row(engine, decode(speak(text, voice)), code, text, voice, False))
    return rows


def english_rows(engine: WhisperEngine, quick: bool) -> list[dict[str, Any]]:
    """tiny.en and base on the same English, real recordings and held-out made voices: WER and audio h/h."""
    clips = clip_set(ENGLISH_PASSAGES, per_length=2 if quick else 4)
    real = [s for s in spoken() if s.language == "en"]
    sets = {"real": ([decode(s.path) for s in real], [s.text for s in real]),
            "made": ([decode(clip.wav) for clip in clips], [clip.text for clip in clips])}
    rows = []
    for kind, (audio, references) in sets.items():
        for model in ("tiny.en", "base"):
            started = time.perf_counter()
            texts = [engine.transcribe(samples, TranscribeOptions(model=model, language="en")).text
                     for samples in audio]
            wall = time.perf_counter() - started
            seconds = sum(len(samples) for samples in audio) / 16000
            rows.append({"speech": kind, "model": engine.settings.resolve(model), "clips": len(audio),
                         "audio_s": round(seconds, 1), "wall_s": round(wall, 2),
                         "audio_hours_per_hour": round(seconds / wall, 2),
                         "wer": round(word_error_rate(references, texts), 4)})
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per language: WER (mean over voices), detection right, and the detection's time per source."""
    by_language: dict[str, Any] = {}
    for code, real in sorted({(row["language"], row["real"]) for row in rows}):
        mine = [row for row in rows if (row["language"], row["real"]) == (code, real)]
        by_language[f"{code} {'real' if real else 'made'}"] = {
            "wer": round(statistics.mean(r["wer"] for r in mine), 4),
            "detected_right": sum(r["detected"] == code for r in mine), "sources": len(mine),
            "models": sorted({r["model"] for r in mine})}
    detect = sorted(row["detect_s"] for row in rows)
    whole = [row["detect_30s_s"] for row in rows]
    return {"by_language": by_language, "detect_s_mean": round(statistics.mean(detect), 3),
            "detect_s_p50": round(statistics.median(detect), 3), "detect_s_max": detect[-1],
            "detect_share_of_routed_time": round(sum(detect) / sum(r["total_s"] for r in rows), 3),
            "detect_30s_s_mean": round(statistics.mean(whole), 3),
            "detect_30s_over_config": round(statistics.mean(whole) / statistics.mean(detect), 2),
            "same_language_as_30s": sum(r["detected_30s"] == r["detected"] for r in rows), "sources": len(rows)}


def table(result: dict[str, Any]) -> str:
    lines = [f"# Languages, {result['machine']}, {result['date']}{' (quick)' if result['quick'] else ''}",
             f"Load average at the start and the end: {result['load_average']}", "",
             "| language | speech | source | audio s | detected | model | WER (ja: CER) | detection s | "
             "routed total s |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['language']} | {'real' if r['real'] else 'made'} | {r['source']} | {r['audio_s']} | "
              f"{r['detected']} | {r['model']} | {r['wer']:.1%} | {r['detect_s']} | {r['total_s']} |"
              for r in result["routed"]]
    s = result["summary"]
    lines += ["", f"Detection per source ({result['detect_context_s']:g} s heard): mean {s['detect_s_mean']} s, median "
              f"{s['detect_s_p50']} s, max {s['detect_s_max']} s; {s['detect_share_of_routed_time']:.0%} of the "
              f"routed requests' time. On Whisper's whole 30-s window: mean {s['detect_30s_s_mean']} s "
              f"({s['detect_30s_over_config']}x), the same language for {s['same_language_as_30s']} of "
              f"{s['sources']} sources.", "",
              "| English | model | clips | audio s | wall s | audio h/h | WER |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['speech']} | {r['model']} | {r['clips']} | {r['audio_s']} | {r['wall_s']} | "
              f"{r['audio_hours_per_hour']} | {r['wer']:.1%} |" for r in result["english"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser("benchmarks.languages", __doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if missing := missing_tools(("espeak-ng", "flite", "festival", "pico")):
        raise SystemExit(f"{missing} missing: run `make install-test`")
    section = load_config(Path(args.config))["applications"][0]["args"]["transcriber"]
    load = [round(os.getloadavg()[0], 1)]
    engine = WhisperEngine(TranscriberSettings.model_validate(section))
    routed = routed_rows(engine, args.quick)
    english = english_rows(engine, args.quick)
    load.append(round(os.getloadavg()[0], 1))
    result = {"machine": cpu_machine(), "date": date.today().isoformat(), "config": args.config,
              "quick": args.quick, "load_average": load, "routed": routed, "summary": summary(routed),
              "detect_context_s": engine.settings.routing.detect_context_s if engine.settings.routing else None,
              "english": english}
    write_result(args.out, f"languages-{'quick-' if args.quick else ''}{result['machine']}-{result['date']}", result,
                 table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
