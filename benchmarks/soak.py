"""Soak: many requests against the real app while every replica's memory is sampled.

    python -m benchmarks.soak                 # configs/local.yaml on this machine (CPU)
    python -m benchmarks.soak --gpu           # four Whisper replicas and the embedder sharing one GPU

Writes ``benchmarks/results/soak-<machine>-<date>.json`` and a PNG of memory over requests, and prints
the figures the targets are stated in: every replica's RSS growth (Ingress, Downloader, Transcriber, Embedder,
JobRunner) between request 10 and the last sequential request (< 3% on CPU), model loads (one per replica),
and VRAM (flat, < 80% of the card).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness import ROOT, load_config, local_app

SPEECH = ("Today we talk about the water cycle. Water falls from the sky as rain and flows into the rivers. "
          "The sun warms the sea and the water rises into the air again.")
Sample = dict[str, Any]


def replica_memory(head_pid: int, app_name: str = "transcribe") -> dict[str, dict[str, int | None]]:
    """RSS and VRAM of every Serve replica process of the cluster under ``head_pid``, keyed ``Deployment/pid``.

    Replicas are found by the process title Ray gives them (``ray::ServeReplica:<app>:<deployment>``).
    """
    import psutil

    from deployments.nvml import read_gpu_memory

    found: dict[str, dict[str, int | None]] = {}
    marker = f"ServeReplica:{app_name}:"
    for proc in psutil.Process(head_pid).children(recursive=True):
        try:
            title = " ".join(proc.cmdline())
            if marker in title:
                deployment = title.split(marker, 1)[1].split()[0].split(".")[0]  # busy: "Transcriber.handle_…"
                found[f"{deployment}/{proc.pid}"] = {"rss": proc.memory_info().rss,
                                                     "vram": read_gpu_memory(proc.pid)[1]}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


class Sampler:
    """Samples replica memory in a thread while requests run, tagging each sample with the request count."""

    def __init__(self, read: Callable[[], dict[str, dict[str, int | None]]], interval_s: float = 0.5) -> None:
        self.read, self.interval_s = read, interval_s
        self.samples: list[Sample] = []
        self.requests_done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def take(self, phase: str) -> None:
        self.samples.append({"t": time.monotonic(), "phase": phase, "request": self.requests_done,
                             "replicas": self.read()})

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.take("concurrent")

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def sequential(url: str, audio: bytes, count: int, sampler: Sampler) -> list[float]:
    """``count`` requests one after another, sampling memory after each; returns latencies."""
    latencies = []
    with httpx.Client(timeout=600) as http:
        for _ in range(count):
            start = time.perf_counter()
            response = http.post(f"{url}/v1/audio/transcriptions", files={"file": ("s.wav", audio)})
            response.raise_for_status()
            latencies.append(time.perf_counter() - start)
            sampler.requests_done += 1
            sampler.take("sequential")
    return latencies


async def concurrent(url: str, audio: bytes, count: int, clients: int, sampler: Sampler) -> dict[int, int]:
    """``count`` requests from ``clients`` concurrent clients, honouring Retry-After; returns status counts."""
    statuses: dict[int, int] = {}
    queue = list(range(count))
    async with httpx.AsyncClient(timeout=600) as http:

        async def client() -> None:
            while queue:
                queue.pop()
                response = await http.post(f"{url}/v1/audio/transcriptions", files={"file": ("s.wav", audio)})
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                sampler.requests_done += 1
                if response.status_code == 503:
                    await asyncio.sleep(float(response.headers.get("retry-after", 1)))

        await asyncio.gather(*(client() for _ in range(clients)))
    return statuses


def growth(samples: list[Sample], first: int, last: int) -> dict[str, float]:
    """Per replica (``Deployment/pid``): RSS growth in % from the sample after request ``first`` to ``last``."""
    by_request = {s["request"]: s["replicas"] for s in samples if s["phase"] == "sequential"}
    if first not in by_request or last not in by_request:
        return {}
    start, end = by_request[first], by_request[last]
    return {key: round(100 * (end[key]["rss"] - start[key]["rss"]) / start[key]["rss"], 2)
            for key in sorted(start) if key in end}


def soak(url: str, audio: bytes, sequential_requests: int, concurrent_requests: int, clients: int,
         read: Callable[[], dict[str, dict[str, int | None]]]) -> dict[str, Any]:
    """Run the soak against ``url`` and return samples and the summary figures."""
    sampler = Sampler(read)
    sampler.take("start")
    latencies = sequential(url, audio, sequential_requests, sampler)
    with sampler:
        statuses = asyncio.run(concurrent(url, audio, concurrent_requests, clients, sampler))
    sampler.take("end")
    quantiles = statistics.quantiles(latencies, n=20) if len(latencies) >= 2 else [latencies[0]] * 19
    return {
        "sequential_requests": sequential_requests,
        "concurrent_requests": concurrent_requests,
        "clients": clients,
        "latency_p50_s": round(statistics.median(latencies), 3),
        "latency_p95_s": round(quantiles[18], 3),
        "concurrent_statuses": statuses,
        "rss_growth_pct": growth(sampler.samples, min(10, sequential_requests), sequential_requests),
        "samples": sampler.samples,
    }


def model_loads(url: str) -> dict[str, Any]:
    """The Transcriber's model figures from the app's ``/stats`` (one replica answers per call)."""
    stats = httpx.get(f"{url}/stats", timeout=60).raise_for_status().json()["Transcriber"]
    return {key: value for key, value in stats.items() if key.startswith("model")}


def plot(result: dict[str, Any], path: Path) -> None:
    """Memory of each replica over requests: RSS (and VRAM where present)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 5))
    keys = sorted({k for s in result["samples"] for k in s["replicas"]})
    for key in keys:
        points = [(s["request"], s["replicas"][key]) for s in result["samples"] if key in s["replicas"]]
        axes.plot([p[0] for p in points], [p[1]["rss"] / 2**20 for p in points], label=f"{key} RSS")
        if any(p[1]["vram"] for p in points):
            axes.plot([p[0] for p in points], [(p[1]["vram"] or 0) / 2**20 for p in points], "--",
                      label=f"{key} VRAM")
    sequential_end = result["sequential_requests"]
    axes.axvline(sequential_end, color="grey", linestyle=":", label="sequential | concurrent")
    axes.set_xlabel("requests completed")
    axes.set_ylabel("MiB")
    axes.set_title(f"transcribe-serve soak ({result['machine']})")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def gpu_config(config: dict[str, Any]) -> dict[str, Any]:
    """The GPU mode: four Whisper replicas at 0.2 GPU and the embedder at 0.1 on one card, tiny.en in fp16.

    Batching is prod's: 16 windows a batch, 32 in a replica, one request's windows over all replicas.
    """
    app = config["applications"][0]
    app["args"]["transcriber"].update(device="cuda", compute_type="float16", max_batch_size=16)
    app["args"]["embedder"]["device"] = "cuda"
    app["args"]["downloader"]["windows_in_flight"] = 16
    for deployment in app["deployments"]:
        options = deployment.setdefault("ray_actor_options", {})
        if deployment["name"] == "Transcriber":
            deployment.update(num_replicas=4, max_ongoing_requests=32, max_queued_requests=256)
            options.update(num_gpus=0.2, num_cpus=0.5)
        if deployment["name"] == "Embedder":
            options["num_gpus"] = 0.1
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "local.yaml"))
    parser.add_argument("--requests", type=int, default=200, help="sequential requests")
    parser.add_argument("--concurrent-requests", type=int, default=100)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1, help="say the script this many times (~9 s each)")
    parser.add_argument("--gpu", action="store_true", help="the GPU layout (needs one GPU)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so a TERM still stops the cluster it started
    config = load_config(Path(args.config))
    if args.gpu:
        config = gpu_config(config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.node() or 'host'}-{'gpu' if args.gpu else 'cpu'}"
    with tempfile.TemporaryDirectory() as scratch:
        speech = Path(scratch) / "speech.wav"
        subprocess.run(["espeak-ng", "-w", str(speech), " ".join([SPEECH] * args.repeat)], check=True)
        # the GPU layout asks for about 3 CPUs: give the cluster the machine's cores
        cpus = os.cpu_count() or 2 if args.gpu else 2
        with local_app(config, Path(scratch) / "app", num_cpus=cpus, num_gpus=1 if args.gpu else None) as app:
            result = soak(app.url, speech.read_bytes(), args.requests, args.concurrent_requests, args.clients,
                          read=lambda: replica_memory(app.head_pid))
            result["models"] = model_loads(app.url)
    result.update(machine=machine, date=date.today().isoformat(), config=args.config, repeat=args.repeat)
    stem = out / f"soak-{machine}-{result['date']}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    plot(result, stem.with_suffix(".png"))
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=1))
    print(f"wrote {stem}.json and {stem}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
