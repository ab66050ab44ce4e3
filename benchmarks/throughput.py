"""Throughput side by side: faster-whisper direct, a model per request, and the service at 1 to 16 clients.

    python -m benchmarks.throughput                       # the full run (make bench): 10 s, 30 s, 2 min, 10 min
    python -m benchmarks.throughput --quick               # a smoke run: two short clips, one repetition

One run on one machine, on the same generated speech (espeak-ng, so every clip has its exact script) and
the same model and decoding settings (configs/local.yaml's transcriber args), measures:

1. the faster-whisper library called directly in this process, sequentially: the reference limit;
2. the naive design from the incident: a new WhisperModel for every request;
3. the service (``local_app``, the config as ``serve run`` deploys it), one client at a time;
4. the service under 2, 4, 8 and 16 concurrent clients;
5. one long file: directly, through the service as one request (there is no fan-out yet), and as N
   concurrent requests each carrying 1/N of it: the upper bound a fan-out could reach.

Each row has audio hours per wall hour, the real-time factor, p50/p95 latency, the peak RSS of each
process, model loads, 503 retries and the WER against the script. Writes ``<machine>-<date>.json``, the
table as ``.md`` and a PNG of throughput against concurrency under ``--out``, and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import json
import math
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from benchmarks.harness import ROOT, load_config, local_app
from benchmarks.soak import model_loads, replica_memory

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

    from serve_app.settings import TranscriberSettings

SENTENCES = [
    "Today we talk about the water cycle and how the rain moves from the clouds into the rivers.",
    "The library opened in the old town more than a century ago, and people came from every village.",
    "Cut the onions and the carrots into small pieces before you cook them slowly in a large pan.",
    "Our train left the station early in the morning and reached the coast just before lunch.",
    "Plants use sunlight, water and air to make the sugar they need to grow tall and strong.",
    "The committee will meet again next week to discuss the new budget for the school.",
    "A good map shows the roads, the rivers and the small villages that lie between the hills.",
    "After the storm, the fishermen repaired their nets and painted their boats red and blue.",
    "Many birds fly south in the autumn and return to the north when the spring begins.",
    "Please open your books at the chapter about the ocean and read the first few pages.",
    "The engineer checked every bridge on the road before the heavy trucks arrived from the city.",
    "In the evening the market fills with people buying bread, fruit, cheese and fresh fish.",
]
"""The scripts: every clip is some of these, spoken one by one and joined, so its reference text is exact."""
FULL_CLIPS = {"10s": 10.0, "30s": 30.0, "2min": 120.0}
QUICK_CLIPS = {"5s": 5.0, "15s": 15.0}
GAP_S = 0.3
"""Silence between two sentences of a clip."""
MAX_RETRIES = 200
"""503 answers one request may get before it counts as failed."""
MIB = 2**20


@dataclass(frozen=True)
class Voice:
    """Each script sentence as 16-bit mono PCM, as espeak-ng spoke it."""

    frames: list[bytes]
    rate: int

    def seconds(self, index: int) -> float:
        """How long sentence ``index`` lasts, with the gap after it."""
        return len(self.frames[index]) / 2 / self.rate + GAP_S


@dataclass(frozen=True)
class Clip:
    """A WAV file and its script."""

    name: str
    wav: bytes
    text: str
    seconds: float
    pieces: tuple[int, ...]


@dataclass
class Run:
    """What one mode measured: per request its audio, latency, transcript and script, and the wall time."""

    audio_s: list[float] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    retries: int = 0
    failed: int = 0


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER after lower-casing and dropping punctuation (as tests/conftest.py does), so only words count."""
    import jiwer

    normalise = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(),
                               jiwer.Strip(), jiwer.ReduceToListOfListOfWords()])
    return jiwer.wer(references, hypotheses, reference_transform=normalise, hypothesis_transform=normalise)


# --- audio -------------------------------------------------------------------------------------------------


def speak(sentences: list[str], folder: Path) -> Voice:
    """Speak each sentence once with espeak-ng."""
    frames, rate = [], 0
    for index, text in enumerate(sentences):
        path = folder / f"sentence-{index}.wav"
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
        with wave.open(str(path)) as audio:
            assert audio.getnchannels() == 1 and audio.getsampwidth() == 2, "espeak-ng writes 16-bit mono"
            frames.append(audio.readframes(audio.getnframes()))
            rate = audio.getframerate()
    return Voice(frames, rate)


def sentence_order(count: int, seed: int = 7) -> Iterator[int]:
    """Sentence indices without end: each round of ``count`` in a new (seeded) order."""
    rng = random.Random(seed)
    while True:
        order = list(range(count))
        rng.shuffle(order)
        yield from order


def make_clip(name: str, voice: Voice, pieces: tuple[int, ...]) -> Clip:
    """The sentences ``pieces`` joined by short silences, as a WAV file."""
    gap = b"\0\0" * int(GAP_S * voice.rate)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(voice.rate)
        out.writeframes(b"".join(voice.frames[i] + gap for i in pieces))
    return Clip(name=name, wav=buffer.getvalue(), text=" ".join(SENTENCES[i] for i in pieces),
                seconds=round(sum(voice.seconds(i) for i in pieces), 2), pieces=pieces)


def clip_of(name: str, voice: Voice, seconds: float, order: Iterator[int]) -> Clip:
    """A clip as close to ``seconds`` as whole sentences from ``order`` make it."""
    pieces = [next(order)]
    total = voice.seconds(pieces[0])
    while total < seconds:
        piece = next(order)
        if total + voice.seconds(piece) - seconds > seconds - total:
            break
        pieces.append(piece)
        total += voice.seconds(piece)
    return make_clip(name, voice, tuple(pieces))


def split(long: Clip, voice: Voice, parts: int) -> list[Clip]:
    """``long`` cut at sentence boundaries into ``parts`` clips of about equal length."""
    bounds, elapsed, groups = [long.seconds * (k + 1) / parts for k in range(parts)], 0.0, [[] for _ in range(parts)]
    for piece in long.pieces:
        middle = elapsed + voice.seconds(piece) / 2
        groups[next(k for k, bound in enumerate(bounds) if middle <= bound or k == parts - 1)].append(piece)
        elapsed += voice.seconds(piece)
    return [make_clip(f"{long.name}-part{k + 1}of{parts}", voice, tuple(g)) for k, g in enumerate(groups) if g]


def workload(clips: list[Clip], repetitions: int, clients: int) -> list[Clip]:
    """The clips, interleaved, ``repetitions`` times, or more so that every client has at least one request."""
    return clips * max(repetitions, math.ceil(clients / len(clips)))


# --- memory ------------------------------------------------------------------------------------------------


class PeakRss:
    """Samples RSS by process in a thread and keeps each one's maximum."""

    def __init__(self, read: Callable[[], dict[str, int]], interval_s: float = 0.25) -> None:
        self.read, self.interval_s = read, interval_s
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        for key, rss in self.read().items():
            self.peaks[key] = max(rss, self.peaks.get(key, 0))

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
    from serve_app.settings import TranscriberSettings

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


def sequential(work: list[Clip], run_one: Callable[[Clip], str]) -> Run:
    """Each clip in turn, timed."""
    run = Run()
    started = time.perf_counter()
    for clip in work:
        start = time.perf_counter()
        text = run_one(clip)
        run.latency_s.append(time.perf_counter() - start)
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


async def post(http: httpx.AsyncClient, url: str, clip: Clip) -> tuple[str | None, int]:
    """One transcription; a 503 is retried after its Retry-After. Returns the text (None: failed) and retries."""
    for retries in range(MAX_RETRIES + 1):
        response = await http.post(f"{url}/v1/audio/transcriptions", data={"response_format": "json"},
                                   files={"file": (f"{clip.name}.wav", clip.wav, "audio/wav")})
        if response.status_code == 200:
            return response.json()["text"], retries
        if response.status_code != 503:
            print(f"{clip.name}: {response.status_code} {response.text[:300]}", file=sys.stderr)
            return None, retries
        await asyncio.sleep(float(response.headers.get("retry-after", 1)))
    return None, MAX_RETRIES


async def clients(url: str, work: list[Clip], concurrency: int) -> Run:
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
                text, retries = await post(http, url, clip)
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
        run.references.append(work[index].text)
    return run


def as_one_file(parts: Run, long: Clip) -> Run:
    """Parts of one file as that file: its latency is until the last part returned, its text the parts joined."""
    complete = parts.failed == 0
    return Run(audio_s=[long.seconds] if complete else [], latency_s=[parts.wall_s] if complete else [],
               texts=[" ".join(parts.texts)] if complete else [], references=[long.text] if complete else [],
               wall_s=parts.wall_s, retries=parts.retries, failed=0 if complete else 1)


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
    }


def compare(rows: list[dict[str, Any]]) -> None:
    """Each row's throughput and WER against the direct library on the same audio (short set or long file)."""
    reference = {"short": next(r for r in rows if r["kind"] == "direct"),
                 "long": next(r for r in rows if r["kind"] == "long_direct")}
    for r in rows:
        base = reference["long" if r["kind"].startswith("long") else "short"]
        r["x_direct"] = round(r["audio_hours_per_hour"] / base["audio_hours_per_hour"], 3)
        both = r["wer"] is not None and base["wer"] is not None
        r["wer_delta_points"] = round(100 * (r["wer"] - base["wer"]), 2) if both else None


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets on a 2-core CPU, with what this run reached."""
    by = {(r["kind"], r["clients"]): r for r in rows}
    found = []
    one = by.get(("service", 1))
    if one:
        found.append({"target": "service, one client at a time >= 0.9x direct library", "reached": one["x_direct"],
                      "met": one["x_direct"] >= 0.9})
    eight = by.get(("service", 8))
    if eight:
        delta = eight["wer_delta_points"]
        found.append({"target": "service, 8 clients >= 1.5x direct sequential, WER within 1 point",
                      "reached": f"{eight['x_direct']}x, WER {'n/a' if delta is None else f'{delta:+}'} points",
                      "met": eight["x_direct"] >= 1.5 and delta is not None and abs(delta) <= 1})
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
             + ", ".join(f"{c['name']} ({c['seconds']} s)" for c in result["clips"])
             + f"; {result['repetitions']} repetition(s); load average {result['load_average_start']} at the start.",
             "",
             "| mode | clients | requests | audio h / wall h | × direct | RTF | p50 s | p95 s | WER % | Δ WER pts "
             "| model loads | 503 retries | peak RSS MiB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in result["rows"]:
        wer = "–" if r["wer"] is None else f"{100 * r['wer']:.1f}"
        delta = "–" if r["wer_delta_points"] is None else f"{r['wer_delta_points']:+.1f}"
        failed = f" ({r['failed']} failed)" if r["failed"] else ""
        lines.append(f"| {r['label']} | {r['clients']} | {r['requests']}{failed} | {r['audio_hours_per_hour']:.1f} | "
                     f"{r['x_direct']:.2f} | {r['rtf']} | {r['latency_p50_s']} | {r['latency_p95_s']} | {wer} | "
                     f"{delta} | {r['model_loads']} | {r['retries_503']} | {rss_summary(r['peak_rss_mib'])} |")
    lines += ["", "RTF: processing seconds per audio second as each request saw it (latency / audio), so under "
              "concurrency it rises while throughput grows. Δ WER: percentage points against the direct library on "
              "the same audio. Model loads: for the service, the Transcriber replica's loads since it started.", ""]
    lines += [f"- {t['target']}: {t['reached']} — {'met' if t['met'] else 'not met'}" for t in result["targets"]]
    command = " ".join(["python -m benchmarks.throughput", *shown_argv(result["argv"])])
    lines += ["", f"Reproduce: `make bench` for the full run; this one was `{command}`."]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """Audio hours per wall hour against concurrent clients, with the library's sequential lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    service = sorted((r["clients"], r["audio_hours_per_hour"]) for r in rows if r["kind"] == "service")
    figure, axes = plt.subplots(figsize=(8, 5))
    axes.plot([c for c, _ in service], [t for _, t in service], "o-", label="service (short clips)")
    lines = [("direct", "--", "library direct, sequential (short clips)"), ("naive", ":", "model per request")]
    for kind, style, label in lines:
        axes.axhline(next(r for r in rows if r["kind"] == kind)["audio_hours_per_hour"], linestyle=style,
                     color="grey" if kind == "direct" else "red", label=label)
    for kind, marker in [("long_direct", "s"), ("long_service", "^"), ("long_fanout_bound", "D")]:
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


# --- the run -----------------------------------------------------------------------------------------------


def direct_rows(settings: TranscriberSettings, clips: list[Clip], long: Clip, repetitions: int) -> list[dict]:
    """Mode 1 and the long file, on one model loaded here (and freed when this returns)."""
    options = decoding(settings)
    model = load_model(settings)
    transcribe(model, clips[0], options)  # warm-up, not counted
    rows = []
    for kind, label, work in [("direct", "library direct, sequential", workload(clips, repetitions, 1)),
                              ("long_direct", "long file, library direct", [long])]:
        with PeakRss(this_process) as peak:
            run = sequential(work, functools.partial(transcribe, model, options=options))
        rows.append(row(kind, label, 1, run, peak.peaks, 1))
    return rows


def naive_row(settings: TranscriberSettings, clips: list[Clip], repetitions: int) -> dict:
    """Mode 2: the same requests, a new model for each."""
    naive = Naive(settings, decoding(settings))
    with PeakRss(this_process) as peak:
        run = sequential(workload(clips, repetitions, 1), naive)
    return row("naive", "naive: new WhisperModel per request", 1, run, peak.peaks, naive.loads)


def service_rows(config: dict[str, Any], folder: Path, clips: list[Clip], long: Clip, parts: list[Clip],
                 repetitions: int, concurrency: list[int]) -> list[dict]:
    """Modes 3, 4 and 5 against one running app."""
    rows = []
    with local_app(config, folder) as app:
        asyncio.run(clients(app.url, clips[:1], 1))  # warm-up, not counted
        read = functools.partial(service_processes, app.head_pid)
        for count in [1, *concurrency]:
            with PeakRss(read) as peak:
                run = asyncio.run(clients(app.url, workload(clips, repetitions, count), count))
            label = "service, one client at a time" if count == 1 else f"service, {count} concurrent clients"
            rows.append(row("service", label, count, run, peak.peaks, model_loads(app.url)["model_loads"]))
        with PeakRss(read) as peak:
            run = asyncio.run(clients(app.url, [long], 1))
        rows.append(row("long_service", "long file, service: single request (no fan-out yet)", 1, run, peak.peaks,
                        model_loads(app.url)["model_loads"]))
        with PeakRss(read) as peak:
            run = as_one_file(asyncio.run(clients(app.url, parts, len(parts))), long)
        rows.append(row("long_fanout_bound", f"long file, service: {len(parts)} concurrent 1/{len(parts)} parts "
                        "(upper bound for fan-out)", len(parts), run, peak.peaks, model_loads(app.url)["model_loads"]))
    return rows


def fanout_parts(config: dict[str, Any]) -> int:
    """How many decodes the Transcriber runs at once: replicas × max_ongoing_requests."""
    deployment = next(d for d in config["applications"][0]["deployments"] if d["name"] == "Transcriber")
    return int(deployment.get("num_replicas", 1)) * int(deployment.get("max_ongoing_requests", 5))


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two short clips, one repetition, a 0.5-minute long file")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--long-minutes", type=float, default=None, help="length of the long file (10; quick 0.5)")
    parser.add_argument("--concurrency", default="2,4,8,16", help="concurrent clients, comma-separated")
    parser.add_argument("--repetitions", type=int, default=None, help="times each clip is sent (3; quick 1)")
    parser.add_argument("--fanout-parts", type=int, default=None,
                        help="parts of the long file for the fan-out bound (Transcriber replicas × max_ongoing)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "local.yaml"))
    args = parser.parse_args(argv)
    args.long_minutes = args.long_minutes or (0.5 if args.quick else 10.0)
    args.repetitions = args.repetitions or (1 if args.quick else 3)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so a TERM still stops the cluster it started
    config = load_config(Path(args.config))
    with tempfile.TemporaryDirectory() as scratch:
        config["applications"][0]["args"]["store"]["uri"] = str(Path(scratch) / "store")
        settings = transcriber_settings(config)
        voice = speak(SENTENCES, Path(scratch))
        order = sentence_order(len(SENTENCES))
        clips = [clip_of(name, voice, s, order) for name, s in (QUICK_CLIPS if args.quick else FULL_CLIPS).items()]
        long = clip_of(f"long-{args.long_minutes:g}min", voice, args.long_minutes * 60, order)
        parts = split(long, voice, args.fanout_parts or fanout_parts(config))
        started, load_start = time.perf_counter(), [round(x, 1) for x in os.getloadavg()]
        rows = direct_rows(settings, clips, long, args.repetitions)
        rows.append(naive_row(settings, clips, args.repetitions))
        rows += service_rows(config, Path(scratch) / "app", clips, long, parts, args.repetitions, args.concurrency)
    compare(rows)
    result = write(args, argv, settings, clips + [long], rows, started, load_start)
    print(table(result))
    return 0


def write(args: argparse.Namespace, argv: list[str] | None, settings: TranscriberSettings, clips: list[Clip],
          rows: list[dict], started: float, load_start: list[float]) -> dict[str, Any]:
    """The JSON, the markdown table and the PNG under ``--out``; returns the result."""
    import ctranslate2
    import faster_whisper
    import ray

    machine = f"{platform.node() or 'host'}-{os.cpu_count()}cpu"
    result = {
        "machine": machine, "date": date.today().isoformat(), "quick": args.quick, "argv": list(argv or sys.argv[1:]),
        "config": args.config, "model": settings.default_model,
        "decoding": {"compute_type": settings.compute_type, "cpu_threads": settings.cpu_threads,
                     "num_workers": settings.num_workers, "device": settings.device, **decoding(settings)},
        "versions": {"faster_whisper": faster_whisper.__version__, "ctranslate2": ctranslate2.__version__,
                     "ray": ray.__version__, "python": platform.python_version()},
        "clips": [{"name": c.name, "seconds": c.seconds, "words": len(c.text.split())} for c in clips],
        "repetitions": args.repetitions, "concurrency": args.concurrency,
        "load_average_start": load_start, "load_average_end": [round(x, 1) for x in os.getloadavg()],
        "total_wall_s": round(time.perf_counter() - started, 1), "rows": rows, "targets": targets(rows),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{machine}-{result['date']}{'-quick' if args.quick else ''}"
    Path(f"{stem}.json").write_text(json.dumps(result, indent=1))
    Path(f"{stem}.md").write_text(table(result))
    plot(result, Path(f"{stem}.png"))
    print(f"wrote {stem}.json, .md and .png")
    return result


if __name__ == "__main__":
    raise SystemExit(main())
