"""The throughput benchmark's workload: the clips, the library modes run in this process, and the service modes."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.support.fake_youtube import FakeVideo, FakeYouTube
from benchmarks.support.harness import deployments, local_app
from benchmarks.support.load import Run, clients
from benchmarks.support.processes import PeakRss, service_processes, this_process
from benchmarks.support.soak_loop import model_loads
from benchmarks.support.speech import Clip
from benchmarks.throughput.probes import downloaded_audio, stage_figures, stages_since
from benchmarks.throughput.report import row

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

    from deployments.settings import TranscriberSettings

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


def youtube_double(clips: list[Clip], folder: Path) -> tuple[FakeYouTube, list[Clip]]:
    """The tests' local YouTube double serving each clip twice: with manual captions (its script), and without."""
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
            rows.append(row(f"{prefix}{kind or 'direct'}", f"{label}{suffix}", 1, run, peak.peaks,
                             {settings.default_model: 1}))
    return rows


def naive_row(settings: TranscriberSettings, clips: list[Clip], repetitions: int) -> dict:
    """Mode 2: the same requests, a new model for each."""
    naive = Naive(settings, decoding(settings))
    with PeakRss(this_process) as peak:
        run = sequential(workload(clips, 1, 1), naive)
    return row("naive", "naive: new WhisperModel per request", 1, run, peak.peaks,
               {settings.default_model: naive.loads})


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


def transcriber_replicas(config: dict[str, Any]) -> int:
    """How many Transcriber replicas ``config`` runs."""
    return int(deployments(config)["Transcriber"].get("num_replicas", 1))


def replicated(config: dict[str, Any], replicas: int) -> dict[str, Any]:
    """``config`` with ``replicas`` Transcriber replicas splitting its threads and workers (the same cores in all)."""
    config = copy.deepcopy(config)
    app = config["applications"][0]
    transcriber = app["args"]["transcriber"]
    transcriber["cpu_threads"] = max(1, transcriber.get("cpu_threads", 2) // replicas)
    transcriber["num_workers"] = max(1, transcriber.get("num_workers", 1) // replicas)
    transcriber["live_workers"] = min(transcriber.get("live_workers", 0), transcriber["num_workers"] - 1)
    deployments(config)["Transcriber"]["num_replicas"] = replicas
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
