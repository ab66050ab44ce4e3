"""Throughput side by side: faster-whisper direct, a model per request, and the service at 1 to 16 clients.

    python -m benchmarks.throughput                       # the full run (make bench): 10 s, 30 s, 2 min, 10 min
    python -m benchmarks.throughput --quick               # a smoke run: two short clips, one repetition

One run on one machine, on the same generated speech (espeak-ng, so every clip has its exact script) and
the same model and decoding settings (configs/local.yaml's transcriber args), measures:

1. the faster-whisper library called directly in this process, sequentially: the reference limit;
2. the naive design from the incident: a new WhisperModel for every request;
3. the service (``local_app``, the config as ``serve run`` deploys it), one client at a time;
4. the service under 2, 4, 8 and 16 concurrent clients;
5. one long file: directly, through the service with one Transcriber replica, and through a second app
   whose Transcriber has ``--fanout-replicas`` replicas sharing the same cores (the file's windows fan out);
6. a YouTube mix (half the videos captioned) through ``/v1/transcripts`` against a local YouTube double:
   the audio that captions answered, never downloaded or decoded, is counted.

Each row has audio hours per wall hour, the real-time factor, p50/p95 latency, the peak RSS of each
process, model loads, 503 retries and the WER against the script. Writes ``<machine>-<date>.json``, the
table as ``.md`` and a PNG of throughput against concurrency under ``--out``, and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import functools
import json
import math
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from benchmarks.harness import ROOT, load_config, local_app
from benchmarks.soak import gpu_config, model_loads, replica_memory
from benchmarks.speech import Clip, clip_set, lecture, missing_tools, word_error_rate

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

    from deployments.settings import TranscriberSettings
    from tests.fake_youtube import FakeYouTube

FULL_CLIPS = {"5s": 5.0, "15s": 15.0, "45s": 45.0, "2min": 120.0}
QUICK_CLIPS = {"5s": 5.0, "15s": 15.0}
FULL_PER_LENGTH, QUICK_PER_LENGTH = 2, 1
"""Clips of each length, each read by another voice from other sentences."""
BATCH_SIZE = 8
"""The library's batched pipeline reference: its VAD chunks of one clip decoded 8 at a time."""
REQUESTS_PER_CLIENT = 4
"""Requests each concurrent client sends at least, so that a run measures that concurrency, not its drain."""
MIX_CLIENTS = 4
"""Concurrent clients of the YouTube mix."""
MAX_RETRIES = 200
"""503 answers one request may get before it counts as failed."""
MIB = 2**20


@dataclass
class Run:
    """What one mode measured: per request its audio, latency, transcript and script, and the wall time."""

    audio_s: list[float] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    retries: int = 0
    failed: int = 0


# --- audio -------------------------------------------------------------------------------------------------


def youtube_double(clips: list[Clip], folder: Path) -> tuple[FakeYouTube, list[Clip]]:
    """The tests' local YouTube double serving each clip twice: with manual captions (its script), and without."""
    from tests.fake_youtube import FakeVideo, FakeYouTube

    fake, videos = FakeYouTube(), []
    for index, clip in enumerate(clips):
        path = folder / f"{clip.name}.wav"
        path.write_bytes(clip.wav)
        for prefix, track in (("capt", [(0.0, clip.seconds, clip.text)]), ("asrv", None)):
            video = f"{prefix}{index:07d}"  # YouTube ids are 11 characters
            fake.videos[video] = FakeVideo(clip.name, audio=path, captions=track)
            videos.append(dataclasses.replace(clip, video=video))
    return fake, videos


def workload(clips: list[Clip], repetitions: int, clients: int) -> list[Clip]:
    """The clips, interleaved, ``repetitions`` times, or more so that every client sends four requests or so.

    With about one request per client, the run's end is a drain at falling concurrency that says little
    about throughput at ``clients`` (9 requests for 8 clients measured 1.27x and 1.56x on two runs).
    """
    return clips * max(repetitions, math.ceil(REQUESTS_PER_CLIENT * clients / len(clips)))


# --- memory ------------------------------------------------------------------------------------------------


class PeakRss:
    """Samples figures by key (RSS by process, or a GPU's) in a thread and keeps each one's maximum.

    With ``timeline`` every sample is kept too, as (seconds since the start, figures).
    """

    def __init__(self, read: Callable[[], dict[str, int]], interval_s: float = 0.25, timeline: bool = False) -> None:
        self.read, self.interval_s = read, interval_s
        self.peaks: dict[str, int] = {}
        self.timeline: list[tuple[float, dict[str, int]]] | None = [] if timeline else None
        self._started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        figures = self.read()
        for key, value in figures.items():
            self.peaks[key] = max(value, self.peaks.get(key, 0))
        if self.timeline is not None:
            self.timeline.append((round(time.perf_counter() - self._started, 2), figures))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> PeakRss:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def gpu_figures(devices: list[dict[str, int | None]] | None = None) -> dict[str, int]:
    """Each GPU's utilisation (%) and memory used (bytes) now, keyed ``gpu<N>/util`` and ``gpu<N>/vram``; a figure
    NVML does not give (utilisation on MIG) is left out, and without NVML there are none."""
    from deployments.nvml import read_devices

    devices = read_devices() if devices is None else devices
    return {f"gpu{index}/{key}": device[key] for index, device in enumerate(devices) for key in ("util", "vram")
            if device[key] is not None}


def gpu_summary(sampled: PeakRss, devices: list[dict[str, int | None]] | None = None) -> dict[str, Any]:
    """GPU utilisation (mean, peak) and VRAM (peak, the card's size) over the service's run, and the timeline;
    None where NVML gave no figure (no NVML, or MIG's utilisation)."""
    from deployments.nvml import read_devices

    devices = read_devices() if devices is None else devices
    timeline = sampled.timeline or []
    util = [figures["gpu0/util"] for _, figures in timeline if "gpu0/util" in figures]
    return {"nvml": bool(devices), "util_mean_pct": round(sum(util) / len(util), 1) if util else None,
            "util_peak_pct": max(util, default=None), "vram_peak_mib": round(sampled.peaks.get("gpu0/vram", 0) / MIB),
            "vram_total_mib": round(devices[0]["total"] / MIB) if devices else None, "timeline": timeline}


def this_process() -> dict[str, int]:
    """This process's RSS: the library modes run here."""
    import psutil

    return {f"benchmark/{os.getpid()}": psutil.Process().memory_info().rss}


def service_processes(head_pid: int) -> dict[str, int]:
    """RSS of every replica of the app (ingress included) and of Serve's HTTP proxy."""
    import psutil

    found = {key: figures["rss"] or 0 for key, figures in replica_memory(head_pid).items()}
    for proc in psutil.Process(head_pid).children(recursive=True):
        try:
            if "ProxyActor" in " ".join(proc.cmdline()):
                found[f"Proxy/{proc.pid}"] = proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


# --- the library, in this process --------------------------------------------------------------------------


def transcriber_settings(config: dict[str, Any]) -> TranscriberSettings:
    """The service's transcriber section, validated as the app validates it."""
    from deployments.settings import TranscriberSettings

    return TranscriberSettings(**config["applications"][0]["args"]["transcriber"])


def decoding(settings: TranscriberSettings) -> dict[str, Any]:
    """The ``transcribe`` arguments the service uses for a plain request (``TranscribeOptions`` defaults)."""
    return {"language": None, "task": "transcribe", "beam_size": settings.beam_size, "vad_filter": settings.vad_filter,
            "word_timestamps": False, "initial_prompt": None, "temperature": 0.0}


def load_model(settings: TranscriberSettings) -> WhisperModel:
    """The default model, constructed as a Transcriber replica constructs it."""
    from faster_whisper import WhisperModel

    from deployments.transcriber import whisper_model_location

    name = settings.default_model
    return WhisperModel(whisper_model_location(name, settings.models[name]), device=settings.device,
                        compute_type=settings.compute_type, cpu_threads=settings.cpu_threads,
                        num_workers=settings.num_workers, download_root=settings.download_root)


def transcribe(model: WhisperModel, clip: Clip, options: dict[str, Any]) -> str:
    """Decode the WAV as the downloader does, then transcribe it; the text as the service joins it."""
    from deployments.audio import decode

    segments, _ = model.transcribe(decode(clip.wav), **options)
    return " ".join(segment.text.strip() for segment in segments).strip()


def transcribe_batched(model: WhisperModel, clip: Clip, options: dict[str, Any]) -> str:
    """The library's batched pipeline on one clip, with its defaults (its VAD, no timestamps) and our decoding."""
    from faster_whisper import BatchedInferencePipeline

    from deployments.audio import decode

    batched = {key: value for key, value in options.items() if key != "vad_filter"}
    segments, _ = BatchedInferencePipeline(model).transcribe(decode(clip.wav), batch_size=BATCH_SIZE, **batched)
    return " ".join(segment.text.strip() for segment in segments).strip()


def sequential(work: list[Clip], run_one: Callable[[Clip], str]) -> Run:
    """Each clip in turn, timed."""
    run = Run()
    started = time.perf_counter()
    for clip in work:
        start = time.perf_counter()
        text = run_one(clip)
        run.latency_s.append(time.perf_counter() - start)
        run.names.append(clip.name)
        run.audio_s.append(clip.seconds)
        run.texts.append(text)
        run.references.append(clip.text)
    run.wall_s = time.perf_counter() - started
    return run


class Naive:
    """The incident's design: a new WhisperModel for every request."""

    def __init__(self, settings: TranscriberSettings, options: dict[str, Any]) -> None:
        self.settings, self.options = settings, options
        self.loads = 0

    def __call__(self, clip: Clip) -> str:
        model = load_model(self.settings)
        self.loads += 1
        return transcribe(model, clip, self.options)


# --- the service -------------------------------------------------------------------------------------------


async def post(http: httpx.AsyncClient, url: str, clip: Clip, response_format: str) -> tuple[str | None, int]:
    """One transcription (of the upload, or of the clip's video by URL); a 503 is retried after its Retry-After.

    Returns the text (None: failed) and the retries.
    """
    for retries in range(MAX_RETRIES + 1):
        if clip.video is None:
            response = await http.post(f"{url}/v1/audio/transcriptions", data={"response_format": response_format},
                                       files={"file": (f"{clip.name}.wav", clip.wav, "audio/wav")})
        else:
            response = await http.post(f"{url}/v1/transcripts", json={"url": clip.video, "embed": False})
        if response.status_code == 200:
            return response.json()["text"], retries
        if response.status_code != 503:
            print(f"{clip.name}: {response.status_code} {response.text[:300]}", file=sys.stderr)
            return None, retries
        await asyncio.sleep(float(response.headers.get("retry-after", 1)))
    return None, MAX_RETRIES


async def clients(url: str, work: list[Clip], concurrency: int, response_format: str = "json") -> Run:
    """``work`` shared by ``concurrency`` clients, each sending its next request when the last one returns.

    The run lists the completed requests in the order of ``work``, whatever order they returned in.
    """
    queue, done = list(reversed(list(enumerate(work)))), {}
    run = Run()
    async with httpx.AsyncClient(timeout=httpx.Timeout(3600.0)) as http:

        async def client() -> None:
            while queue:
                index, clip = queue.pop()
                start = time.perf_counter()
                text, retries = await post(http, url, clip, response_format)
                run.retries += retries
                if text is None:
                    run.failed += 1
                else:
                    done[index] = (time.perf_counter() - start, text)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        run.wall_s = time.perf_counter() - started
    for index in sorted(done):
        run.latency_s.append(done[index][0])
        run.texts.append(done[index][1])
        run.audio_s.append(work[index].seconds)
        run.names.append(work[index].name)
        run.references.append(work[index].text)
    return run


# --- rows --------------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def row(kind: str, label: str, clients: int, run: Run, peaks: dict[str, int], model_loads: int) -> dict[str, Any]:
    """The figures of one mode."""
    audio = sum(run.audio_s)
    return {
        "kind": kind, "label": label, "clients": clients, "requests": len(run.latency_s) + run.failed,
        "failed": run.failed, "retries_503": run.retries, "audio_s": round(audio, 2), "wall_s": round(run.wall_s, 2),
        "audio_hours_per_hour": round(audio / run.wall_s, 3) if run.wall_s else 0.0,
        "rtf": round(sum(run.latency_s) / audio, 4) if audio else None,
        "latency_p50_s": percentile(run.latency_s, 50), "latency_p95_s": percentile(run.latency_s, 95),
        "wer": round(word_error_rate(run.references, run.texts), 4) if run.texts else None,
        "model_loads": model_loads, "peak_rss_mib": {key: round(rss / MIB) for key, rss in sorted(peaks.items())},
        "by_length": by_length(run),
    }


def by_length(run: Run) -> dict[str, dict[str, float]]:
    """Per clip length (the clip name's prefix): audio seconds per processing second as each request saw it, and
    WER. For one client at a time that is the mode's speed on that length; under concurrency, its latency."""
    lengths: dict[str, list[int]] = {}
    for index, name in enumerate(run.names):
        lengths.setdefault(name.rsplit("-", 1)[0], []).append(index)
    figures = {}
    for length, found in lengths.items():
        speed = sum(run.audio_s[i] for i in found) / sum(run.latency_s[i] for i in found)
        wer = word_error_rate([run.references[i] for i in found], [run.texts[i] for i in found])
        figures[length] = {"x_realtime": round(speed, 2), "wer": round(wer, 4)}
    return figures


def compare(rows: list[dict[str, Any]]) -> None:
    """Each row's throughput against both references on the same audio (short set or long file): the library
    sequential (``x_direct``) and its batched pipeline one clip at a time (``x_batched``); WER against the first."""
    reference = {(kind, length): next(r for r in rows if r["kind"] == ("long_" if length == "long" else "") + kind)
                 for kind in ("direct", "batched") for length in ("short", "long")}
    for r in rows:
        length = "long" if r["kind"].startswith("long") else "short"
        for kind in ("direct", "batched"):
            r[f"x_{kind}"] = round(r["audio_hours_per_hour"] / reference[kind, length]["audio_hours_per_hour"], 3)
        base = reference["direct", length]
        both = r["wer"] is not None and base["wer"] is not None
        r["wer_delta_points"] = round(100 * (r["wer"] - base["wer"]), 2) if both else None


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets of issue #12 on a 2-core CPU, with what this run reached."""
    by = {(r["kind"], r["clients"]): r for r in rows}
    found = []
    one, eight, sixteen = by.get(("service", 1)), by.get(("service", 8)), by.get(("service", 16))
    if one:
        found.append({"target": "service, one client at a time >= 0.95x the library's batched pipeline",
                      "reached": f"{one['x_batched']}x", "met": one["x_batched"] >= 0.95})
    if eight:
        found.append({"target": "service, 8 clients >= 1.5x sequential and >= 1.3x batched",
                      "reached": f"{eight['x_direct']}x and {eight['x_batched']}x",
                      "met": eight["x_direct"] >= 1.5 and eight["x_batched"] >= 1.3})
    if eight and sixteen:
        found.append({"target": "service, 16 clients no worse than 8",
                      "reached": f"{sixteen['audio_hours_per_hour']} against {eight['audio_hours_per_hour']} "
                                 f"audio h/h, p95 {sixteen['latency_p95_s']} s",
                      "met": sixteen["audio_hours_per_hour"] >= 0.95 * eight["audio_hours_per_hour"]})
    service = [r for r in rows if r["kind"] == "service" and r["wer_delta_points"] is not None]
    if service:
        worst = max(r["wer_delta_points"] for r in service)
        found.append({"target": "service WER within 0.5 points of the sequential library",
                      "reached": f"{worst:+} points", "met": worst <= 0.5})
    return found


def notes(rows: list[dict[str, Any]]) -> list[str]:
    """What the fan-out and the captions bought, in words."""
    by = {r["kind"]: r for r in rows}
    found = []
    one, many = by.get("long_service"), by.get("long_fanout")
    if one and many and one["latency_p50_s"] and many["latency_p50_s"]:
        found.append(f"long file latency: {one['latency_p50_s']} s through 1 Transcriber replica, "
                     f"{many['latency_p50_s']} s fanned out ({many['label'].split(': ')[1]}), "
                     f"{one['latency_p50_s'] / many['latency_p50_s']:.2f}x")
    mix = by.get("youtube_mix")
    if mix and mix.get("audio_s_by_source"):
        sources = mix["audio_s_by_source"]
        total = sum(sources.values())
        captions = sources.get("captions", 0.0)
        found.append(f"YouTube mix: {captions:.0f} of {total:.0f} audio seconds ({100 * captions / total:.0f}%) came "
                     "from captions, never downloaded, decoded or transcribed")
    return found


# --- output ------------------------------------------------------------------------------------------------


def rss_summary(peaks: dict[str, int]) -> str:
    """Peak RSS by process, named by its deployment (with the pid only when a name repeats)."""
    names = [key.split("/")[0] for key in peaks]
    return ", ".join(f"{key if names.count(key.split('/')[0]) > 1 else key.split('/')[0]} {mib}"
                     for key, mib in peaks.items())


def shown_argv(argv: list[str]) -> list[str]:
    """The command line without ``--out`` and its folder."""
    shown, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--out="):
            skip = False
            continue
        skip = arg == "--out"
        if not skip:
            shown.append(arg)
    return shown


def table(result: dict[str, Any]) -> str:
    """The rows as a markdown table, with the targets and how to reproduce them."""
    lines = [f"### Throughput on {result['machine']}, {result['date']}{' (quick)' if result['quick'] else ''}", "",
             f"{result['model']} {result['decoding']['compute_type']}, beam {result['decoding']['beam_size']}, "
             f"VAD {result['decoding']['vad_filter']}, {result['decoding']['cpu_threads']} threads; clips "
             + ", ".join(f"{c['name']} ({c['seconds']} s, {c['voice']})" for c in result["clips"])
             + f"; {result['repetitions']} repetition(s); load average {result['load_average_start']} at the start.",
             "",
             "| mode | clients | requests | audio h / wall h | × sequential | × batched | RTF | p50 s | p95 s | WER % "
             "| Δ WER pts | model loads | 503 retries | peak RSS MiB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in result["rows"]:
        wer = "–" if r["wer"] is None else f"{100 * r['wer']:.1f}"
        delta = "–" if r["wer_delta_points"] is None else f"{r['wer_delta_points']:+.1f}"
        failed = f" ({r['failed']} failed)" if r["failed"] else ""
        lines.append(f"| {r['label']} | {r['clients']} | {r['requests']}{failed} | {r['audio_hours_per_hour']:.1f} | "
                     f"{r['x_direct']:.2f} | {r['x_batched']:.2f} | {r['rtf']} | {r['latency_p50_s']} | "
                     f"{r['latency_p95_s']} | {wer} | "
                     f"{delta} | {r['model_loads']} | {r['retries_503']} | {rss_summary(r['peak_rss_mib'])} |")
    lines += ["", "RTF: processing seconds per audio second as each request saw it (latency / audio), so under "
              "concurrency it rises while throughput grows. × sequential and × batched: throughput against the "
              "library called sequentially and against its batched pipeline one clip at a time, on the same audio "
              "(the long file against the long file). Δ WER: percentage points against the sequential library. "
              "Model loads: for the service, the Transcriber replica's loads since it started.", ""]
    lines += length_table(result["rows"])
    lines += stage_table(result["rows"])
    lines += [f"- {t['target']}: {t['reached']} — {'met' if t['met'] else 'not met'}" for t in result["targets"]]
    lines += [f"- {note}" for note in notes(result["rows"])]
    command = " ".join(["python -m benchmarks.throughput", *shown_argv(result["argv"])])
    lines += ["", f"Reproduce: `make bench` for the full run; this one was `{command}`."]
    return "\n".join(lines) + "\n"


def length_table(rows: list[dict[str, Any]]) -> list[str]:
    """Speed (audio seconds per second of latency) and WER by clip length, for the modes sending one clip at a time."""
    shown = [r for r in rows if r["clients"] == 1 and r["kind"] in ("direct", "batched", "service")]
    lengths = list(shown[0]["by_length"]) if shown else []
    lines = ["By clip length, one clip at a time (× real time, WER %):", "",
             "| mode | " + " | ".join(lengths) + " |", "| --- |" + " ---: |" * len(lengths)]
    for r in shown:
        cells = [f"{r['by_length'][n]['x_realtime']}× ({100 * r['by_length'][n]['wer']:.1f})" for n in lengths]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return [*lines, ""]


STAGES = ["Downloader/audio_decode", "Downloader/vad", "Transcriber/queue_wait", "Transcriber/batch_decode",
          "Transcriber/features", "Transcriber/encode", "Transcriber/generate", "Transcriber/align"]
"""The stages in a window's order: decoding and VAD at the Downloader; at the Transcriber its wait for a
decoder, and the batch's decode (log-Mel features, encoder, search, alignment when times are asked for)."""


def column(r: dict[str, Any]) -> str:
    """A stage-table column's heading: the row's clients, and the response format when it asks for times."""
    return f"{r['clients']} client(s)" + (", verbose_json" if r["kind"] == "service_timed" else "")


def stage_table(rows: list[dict[str, Any]]) -> list[str]:
    """Where the service's time went, per stage, for each concurrency: seconds per minute of audio (mean per run)."""
    shown = [r for r in rows if r.get("stages")]
    if not shown:
        return []
    lines = ["Where the time goes: seconds per minute of audio (mean ms per run) by stage. Stages overlap across "
             "windows and requests, and a batch's stages count once for all its windows.", "",
             "| stage | " + " | ".join(column(r) for r in shown) + " |",
             "| --- |" + " ---: |" * len(shown)]
    for stage in STAGES:
        cells = []
        for r in shown:
            figure = r["stages"].get(stage)
            if figure is None:
                cells.append("–")
                continue
            mean_ms = 1000 * figure["seconds"] / figure["runs"]
            cells.append(f"{60 * figure['seconds'] / r['audio_s']:.2f} ({mean_ms:.0f})")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines.append("| batches by size | " + " | ".join(
        ", ".join(f"{size}: {count}" for size, count in r["stages"]["batch_sizes"].items()) for r in shown) + " |")
    return [*lines, ""]


def plot(result: dict[str, Any], path: Path) -> None:
    """Audio hours per wall hour against concurrent clients, with the library's sequential lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    service = sorted((r["clients"], r["audio_hours_per_hour"]) for r in rows if r["kind"] == "service")
    figure, axes = plt.subplots(figsize=(8, 5))
    axes.plot([c for c, _ in service], [t for _, t in service], "o-", label="service (short clips)")
    lines = [("direct", "--", "grey", "library sequential (short clips)"),
             ("batched", "-.", "black", "library batched pipeline, one clip at a time"),
             ("naive", ":", "red", "model per request")]
    for kind, style, color, label in lines:
        axes.axhline(next(r for r in rows if r["kind"] == kind)["audio_hours_per_hour"], linestyle=style,
                     color=color, label=label)
    for kind, marker in [("long_direct", "s"), ("long_batched", "v"), ("long_service", "^"), ("long_fanout", "D")]:
        r = next(r for r in rows if r["kind"] == kind)
        axes.plot([r["clients"]], [r["audio_hours_per_hour"]], marker, label=r["label"])
    ticks = sorted({1, *[c for c, _ in service], *[r["clients"] for r in rows]})
    axes.set_xscale("log", base=2)
    axes.set_xticks(ticks, labels=[str(c) for c in ticks])
    axes.set_xlabel("concurrent clients")
    axes.set_ylabel("audio hours per wall hour")
    axes.set_ylim(bottom=0)
    axes.set_title(f"transcribe-serve throughput ({result['machine']}, {result['model']})")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_gpu(gpu: dict[str, Any], path: Path) -> None:
    """GPU utilisation and VRAM over the service's part of the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = [t for t, _ in gpu["timeline"]]
    figure, (util, vram) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    util.plot(seconds, [f.get("gpu0/util", float("nan")) for _, f in gpu["timeline"]])
    util.set_ylabel("GPU utilisation %")
    vram.plot(seconds, [f.get("gpu0/vram", float("nan")) / MIB for _, f in gpu["timeline"]])
    if gpu["vram_total_mib"]:
        vram.axhline(0.8 * gpu["vram_total_mib"], linestyle="--", color="red", label="80% of the card")
    vram.set_ylabel("VRAM used MiB")
    vram.set_xlabel("seconds")
    vram.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --- the run -----------------------------------------------------------------------------------------------


def direct_rows(settings: TranscriberSettings, clips: list[Clip], long: Clip, repetitions: int) -> list[dict]:
    """The two references on one model loaded here (and freed when this returns): the library sequential, and its
    batched pipeline one clip at a time; on the short clips and on the long file."""
    options = decoding(settings)
    model = load_model(settings)
    transcribe(model, clips[0], options)  # warm-up, not counted
    modes = [("", "library sequential", transcribe), ("batched", "library batched pipeline", transcribe_batched)]
    rows = []
    for kind, label, run_one in modes:
        for prefix, suffix, work in [("", "", workload(clips, repetitions, 1)), ("long_", ", long file", [long])]:
            with PeakRss(this_process) as peak:
                run = sequential(work, functools.partial(run_one, model, options=options))
            rows.append(row(f"{prefix}{kind or 'direct'}", f"{label}{suffix}", 1, run, peak.peaks, 1))
    return rows


def naive_row(settings: TranscriberSettings, clips: list[Clip], repetitions: int) -> dict:
    """Mode 2: the same requests, a new model for each."""
    naive = Naive(settings, decoding(settings))
    with PeakRss(this_process) as peak:
        run = sequential(workload(clips, 1, 1), naive)
    return row("naive", "naive: new WhisperModel per request", 1, run, peak.peaks, naive.loads)


def service_rows(config: dict[str, Any], folder: Path, clips: list[Clip], long: Clip, videos: list[Clip],
                 repetitions: int, concurrency: list[int], gpus: int | None) -> list[dict]:
    """Modes 3, 4, the first half of 5, and 6, against one running app."""
    rows = []
    with local_app(config, folder, num_cpus=os.cpu_count() or 2 if gpus else 2, num_gpus=gpus) as app:
        asyncio.run(clients(app.url, clips[:1], 1))  # warm-up, not counted
        read = functools.partial(service_processes, app.head_pid)
        for count in [1, *concurrency]:
            before = stage_figures(app.url)
            with PeakRss(read) as peak:
                run = asyncio.run(clients(app.url, workload(clips, repetitions, count), count))
            label = "service, one client at a time" if count == 1 else f"service, {count} concurrent clients"
            rows.append({**row("service", label, count, run, peak.peaks, model_loads(app.url)["model_loads"]),
                         "stages": stages_since(before, stage_figures(app.url))})
        timed = max(concurrency, default=1)
        before = stage_figures(app.url)
        with PeakRss(read) as peak:
            run = asyncio.run(clients(app.url, workload(clips, repetitions, timed), timed, "verbose_json"))
        rows.append({**row("service_timed", f"service, {timed} clients, verbose_json (segment times)", timed, run,
                           peak.peaks, model_loads(app.url)["model_loads"]),
                     "stages": stages_since(before, stage_figures(app.url))})
        with PeakRss(read) as peak:
            run = asyncio.run(clients(app.url, [long], 1))
        rows.append(row("long_service", f"long file, service: {transcriber_replicas(config)} Transcriber replica(s)",
                        1, run, peak.peaks, model_loads(app.url)["model_loads"]))
        before = downloaded_audio(app.url)
        with PeakRss(read) as peak:
            run = asyncio.run(clients(app.url, videos, MIX_CLIENTS))
        by_source = {kind: round(total - before.get(kind, 0.0), 2) for kind, total in downloaded_audio(app.url).items()}
        rows.append({**row("youtube_mix", "YouTube mix, half captioned, /v1/transcripts", MIX_CLIENTS, run,
                           peak.peaks, model_loads(app.url)["model_loads"]), "audio_s_by_source": by_source})
    return rows


def stage_figures(url: str) -> dict[str, dict[str, Any]]:
    """Each model deployment's seconds and runs by stage so far, and the Transcriber's batches by size."""
    stats = httpx.get(f"{url}/stats", timeout=60).raise_for_status().json()
    return {name: {"seconds": stats[name].get("stage_seconds", {}), "counts": stats[name].get("stage_counts", {}),
                   "batches": stats[name].get("batch_sizes", {})} for name in ("Downloader", "Transcriber")}


def stages_since(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What each stage took during a run: total seconds and runs, by deployment; and the batches decoded."""
    found: dict[str, Any] = {}
    for name, figures in after.items():
        for stage, seconds in figures["seconds"].items():
            runs = figures["counts"][stage] - before[name]["counts"].get(stage, 0)
            if runs:
                found[f"{name}/{stage}"] = {"seconds": round(seconds - before[name]["seconds"].get(stage, 0.0), 3),
                                            "runs": runs}
    batches = {size: count - before["Transcriber"]["batches"].get(size, 0)
               for size, count in after["Transcriber"]["batches"].items()}
    found["batch_sizes"] = {size: count for size, count in sorted(batches.items(), key=lambda x: int(x[0])) if count}
    return found


def downloaded_audio(url: str) -> dict[str, float]:
    """The Downloader's audio seconds so far by how they were answered: ``asr`` (decoded) or ``captions``."""
    stats = httpx.get(f"{url}/stats", timeout=60).raise_for_status().json()["Downloader"]
    return stats["audio_seconds_by_model"]


def transcriber_replicas(config: dict[str, Any]) -> int:
    """How many Transcriber replicas ``config`` runs."""
    return int(next(d for d in config["applications"][0]["deployments"] if d["name"] == "Transcriber")
               .get("num_replicas", 1))


def replicated(config: dict[str, Any], replicas: int) -> dict[str, Any]:
    """``config`` with ``replicas`` Transcriber replicas splitting its threads and workers (the same cores in all)."""
    config = copy.deepcopy(config)
    app = config["applications"][0]
    transcriber = app["args"]["transcriber"]
    transcriber["cpu_threads"] = max(1, transcriber.get("cpu_threads", 2) // replicas)
    transcriber["num_workers"] = max(1, transcriber.get("num_workers", 1) // replicas)
    next(d for d in app["deployments"] if d["name"] == "Transcriber")["num_replicas"] = replicas
    return config


def fanout_row(config: dict[str, Any], folder: Path, clips: list[Clip], long: Clip, replicas: int,
               gpus: int | None) -> dict:
    """Mode 5's second half: the long file through an app with ``replicas`` Transcriber replicas."""
    with local_app(replicated(config, replicas), folder, num_cpus=replicas + 1, num_gpus=gpus) as app:
        asyncio.run(clients(app.url, clips[:1] * replicas, replicas))  # warm-up of every replica, not counted
        with PeakRss(functools.partial(service_processes, app.head_pid)) as peak:
            run = asyncio.run(clients(app.url, [long], 1))
        loads = model_loads(app.url)["model_loads"]
    return row("long_fanout", f"long file, service: {replicas} Transcriber replica(s)", 1, run, peak.peaks, loads)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two short clips, one repetition, a 0.5-minute long file")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--long-minutes", type=float, default=None, help="length of the long file (10; quick 0.5)")
    parser.add_argument("--concurrency", default="2,4,8,16", help="concurrent clients, comma-separated")
    parser.add_argument("--repetitions", type=int, default=None, help="times each clip is sent (3; quick 1)")
    parser.add_argument("--fanout-replicas", type=int, default=None,
                        help="Transcriber replicas of the second long-file app (2 sharing the cores; --gpu: 1)")
    parser.add_argument("--gpu", action="store_true",
                        help="the GPU layout of benchmarks.soak --gpu (four Whisper replicas on one card)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "local.yaml"))
    args = parser.parse_args(argv)
    args.long_minutes = args.long_minutes or (0.5 if args.quick else 10.0)
    args.repetitions = args.repetitions or (1 if args.quick else 3)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.fanout_replicas = args.fanout_replicas or (1 if args.gpu else 2)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if missing := missing_tools():
        raise SystemExit(f"the held-out voices need {', '.join(missing)}: run `make test`, which installs them")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so a TERM still stops the cluster it started
    config = load_config(Path(args.config))
    config, gpus = (gpu_config(config), 1) if args.gpu else (config, None)
    with tempfile.TemporaryDirectory() as scratch:
        config["applications"][0]["args"]["store"]["uri"] = str(Path(scratch) / "store")
        settings = transcriber_settings(config)
        lengths, per_length = (QUICK_CLIPS, QUICK_PER_LENGTH) if args.quick else (FULL_CLIPS, FULL_PER_LENGTH)
        clips = clip_set(lengths, per_length)
        long = lecture(f"long-{args.long_minutes:g}min", args.long_minutes * 60)
        fake, videos = youtube_double(clips, Path(scratch))
        downloader = config["applications"][0]["args"]["downloader"]
        downloader.update(youtube_base_url=fake.base_url, allow_private_networks=True)  # the double is on loopback
        started, load_start = time.perf_counter(), [round(x, 1) for x in os.getloadavg()]
        rows = direct_rows(settings, clips, long, args.repetitions)
        rows.append(naive_row(settings, clips, args.repetitions))
        with fake, PeakRss(gpu_figures, interval_s=0.5, timeline=True) as gpu:
            rows += service_rows(config, Path(scratch) / "app", clips, long, videos, args.repetitions,
                                 args.concurrency, gpus)
            rows.append(fanout_row(config, Path(scratch) / "fanout", clips, long, args.fanout_replicas, gpus))
    compare(rows)
    result = write(args, argv, settings, clips + [long], rows, started, load_start, gpu_summary(gpu) if gpus else None)
    print(table(result))
    return 0


def write(args: argparse.Namespace, argv: list[str] | None, settings: TranscriberSettings, clips: list[Clip],
          rows: list[dict], started: float, load_start: list[float], gpu: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON, the markdown table and the PNG under ``--out``; returns the result."""
    import ctranslate2
    import faster_whisper
    import ray

    machine = f"{platform.node() or 'host'}-{'gpu' if gpu else f'{os.cpu_count()}cpu'}"
    result = {
        "machine": machine, "date": date.today().isoformat(), "quick": args.quick, "argv": list(argv or sys.argv[1:]),
        "config": args.config, "model": settings.default_model,
        "decoding": {"compute_type": settings.compute_type, "cpu_threads": settings.cpu_threads,
                     "num_workers": settings.num_workers, "device": settings.device, **decoding(settings)},
        "versions": {"faster_whisper": faster_whisper.__version__, "ctranslate2": ctranslate2.__version__,
                     "ray": ray.__version__, "python": platform.python_version()},
        "clips": [{"name": c.name, "seconds": c.seconds, "words": len(c.text.split()), "voice": c.voice}
                  for c in clips],
        "repetitions": args.repetitions, "concurrency": args.concurrency,
        "load_average_start": load_start, "load_average_end": [round(x, 1) for x in os.getloadavg()],
        "total_wall_s": round(time.perf_counter() - started, 1), "rows": rows, "targets": targets(rows),
        "gpu": gpu,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{machine}-{result['date']}{'-quick' if args.quick else ''}"
    Path(f"{stem}.json").write_text(json.dumps(result, indent=1))
    Path(f"{stem}.md").write_text(table(result))
    plot(result, Path(f"{stem}.png"))
    if gpu:
        plot_gpu(gpu, Path(f"{stem}-gpu.png"))
    print(f"wrote {stem}.json, .md and .png")
    return result


if __name__ == "__main__":
    raise SystemExit(main())
