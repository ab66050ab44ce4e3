"""The soak's request loop: sequential then concurrent uploads while every replica's memory is sampled.

``python -m benchmarks.soak`` runs it long; tests/test_soak.py runs it short in the suite.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

Sample = dict[str, Any]


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
