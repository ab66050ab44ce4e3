"""Languages: WER per language of the routed models, base against tiny.en on English, and what routing costs.

    python -m benchmarks.languages            # make bench
    python -m benchmarks.languages --quick    # one voice per language, two English passages

The engine of the config's Transcriber (``WhisperEngine``, no Ray: routing and decoding are the same code the
replicas run), on speech made here:

1. each language of ``benchmarks.support.speech.LANGUAGES`` read by one or two voices (espeak-ng's, festival's
   Italian and Russian), sent with no model and no language: the language the detector heard, the model routing
   chose, the WER, and the detection's time (one encoder pass of the detector on the source's first window);
2. English lecture passages read by flite's and festival's voices (not espeak-ng), decoded by tiny.en and by base
   named explicitly: WER and audio hours per hour of each, the reason English is routed to tiny.en.

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

from benchmarks.support.harness import benchmark_parser, load_config
from benchmarks.support.results import cpu_machine, write_result
from benchmarks.support.speech import LANGUAGES, clip_set, missing_tools, speak, word_error_rate
from deployments.audio import decode
from deployments.schemas import TranscribeOptions
from deployments.settings import TranscriberSettings
from deployments.transcriber import WhisperEngine

VOICES = {"en": ["espeak-ng:en", "flite:slt"], "de": ["espeak-ng:de", "espeak-ng:de+m3"],
          "es": ["espeak-ng:es", "espeak-ng:es-419"], "fr": ["espeak-ng:fr", "espeak-ng:fr-be"],
          "it": ["festival:lp_diphone", "festival:pc_diphone"], "ru": ["festival:msu_ru_nsh_clunits", "espeak-ng:ru"]}
"""Who reads each language's text; a quick run takes the first voice of each."""
ENGLISH_PASSAGES = {"45s": 45.0}


def routed_rows(engine: WhisperEngine, quick: bool) -> list[dict[str, Any]]:
    """Each language and voice sent as a routed request: detected language, model, WER, seconds of each stage."""
    rows = []
    for code, (_, text) in LANGUAGES.items():
        for voice in VOICES[code][:1] if quick else VOICES[code]:
            audio = decode(speak(text, voice))
            detection: list[float] = []
            started = time.perf_counter()
            options = engine.route(audio[:30 * 16000], TranscribeOptions(model="auto"),
                                   lambda _, seconds, heard=detection: heard.append(seconds))
            result = engine.transcribe(audio, options)
            rows.append({"language": code, "voice": voice, "audio_s": round(len(audio) / 16000, 2),
                         "detected": result.language, "model": result.model,
                         "wer": round(word_error_rate(text, result.text), 4), "detect_s": round(detection[0], 3),
                         "total_s": round(time.perf_counter() - started, 3), "text": result.text})
    return rows


def english_rows(engine: WhisperEngine, quick: bool) -> list[dict[str, Any]]:
    """tiny.en and base on the same held-out English passages: corpus WER and audio hours per hour."""
    clips = clip_set(ENGLISH_PASSAGES, per_length=2 if quick else 4)
    audio = [decode(clip.wav) for clip in clips]
    rows = []
    for model in ("tiny.en", "base"):
        started = time.perf_counter()
        texts = [engine.transcribe(samples, TranscribeOptions(model=model, language="en")).text for samples in audio]
        wall = time.perf_counter() - started
        seconds = sum(clip.seconds for clip in clips)
        rows.append({"model": engine.settings.resolve(model), "clips": len(clips), "audio_s": round(seconds, 1),
                     "wall_s": round(wall, 2), "audio_hours_per_hour": round(seconds / wall, 2),
                     "wer": round(word_error_rate([c.text for c in clips], texts), 4),
                     "voices": [clip.voice for clip in clips]})
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per language: WER (mean over voices), detection right, and the detection's time per source."""
    by_language: dict[str, Any] = {}
    for code in LANGUAGES:
        mine = [row for row in rows if row["language"] == code]
        if mine:
            by_language[code] = {"wer": round(statistics.mean(r["wer"] for r in mine), 4),
                                 "detected_right": sum(r["detected"] == code for r in mine), "sources": len(mine),
                                 "models": sorted({r["model"] for r in mine})}
    detect = sorted(row["detect_s"] for row in rows)
    return {"by_language": by_language, "detect_s_mean": round(statistics.mean(detect), 3),
            "detect_s_p50": round(statistics.median(detect), 3), "detect_s_max": detect[-1],
            "detect_share_of_routed_time": round(sum(detect) / sum(r["total_s"] for r in rows), 3)}


def table(result: dict[str, Any]) -> str:
    lines = [f"# Languages, {result['machine']}, {result['date']}{' (quick)' if result['quick'] else ''}",
             f"Load average at the start and the end: {result['load_average']}", "",
             "| language | voice | audio s | detected | model | WER | detection s | routed total s |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['language']} | {r['voice']} | {r['audio_s']} | {r['detected']} | {r['model']} | {r['wer']:.1%} | "
              f"{r['detect_s']} | {r['total_s']} |" for r in result["routed"]]
    s = result["summary"]
    lines += ["", f"Detection per source: mean {s['detect_s_mean']} s, median {s['detect_s_p50']} s, max "
              f"{s['detect_s_max']} s; {s['detect_share_of_routed_time']:.0%} of the routed requests' time.", "",
              "| English, held-out voices | clips | audio s | wall s | audio h/h | WER |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['clips']} | {r['audio_s']} | {r['wall_s']} | {r['audio_hours_per_hour']} | "
              f"{r['wer']:.1%} |" for r in result["english"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser("benchmarks.languages", __doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if missing := missing_tools(("espeak-ng", "flite", "festival")):
        raise SystemExit(f"{missing} missing: run `make install-test`")
    section = load_config(Path(args.config))["applications"][0]["args"]["transcriber"]
    load = [round(os.getloadavg()[0], 1)]
    engine = WhisperEngine(TranscriberSettings.model_validate(section))
    routed = routed_rows(engine, args.quick)
    english = english_rows(engine, args.quick)
    load.append(round(os.getloadavg()[0], 1))
    result = {"machine": cpu_machine(), "date": date.today().isoformat(), "config": args.config,
              "quick": args.quick, "load_average": load, "routed": routed, "summary": summary(routed),
              "english": english}
    write_result(args.out, f"languages-{'quick-' if args.quick else ''}{result['machine']}-{result['date']}", result,
                 table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
