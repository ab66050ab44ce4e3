"""Clients that send clips to the running app, each its next request when the last returns, honouring 503s."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field

import httpx

from benchmarks.support.speech import Clip

MAX_RETRIES = 200
"""503 answers one request may get before it counts as failed."""


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
