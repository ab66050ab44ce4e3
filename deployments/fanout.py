"""Sending a source's windows to the transcribers (and the diarizer) as they are decoded, a bounded number at
once, in order."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

import numpy as np

from deployments.schemas import AudioWindow, TranscribedWindow, TranscribeOptions

InFlight = deque[tuple[float, list[Any], "asyncio.Future[list[Any]]"]]
Start = Callable[[np.ndarray], Any]


async def transcribe_windows(items: AsyncGenerator[Any, None], transcribe: Start, limit: int,
                             embed: Start | None = None) -> AsyncGenerator[Any, None]:
    """``items`` with each ``AudioWindow`` replaced, in order, by its ``TranscribedWindow``; others pass through.

    ``transcribe(samples)`` starts a call (a DeploymentResponse: awaitable and cancellable). At most
    ``limit`` windows are out at once, spread over the transcriber replicas, and the next window is read,
    and so decoded, only when one has come back: a long source is paced by transcription and never piles
    up anywhere. If the caller stops reading or a window fails, the windows still out are cancelled and
    ``items`` is closed (the downloader removes its file). With ``embed`` (the diarizer's call), each window
    goes to it at the same time, and its ``TranscribedWindow`` carries the window's speaker embeddings too.
    """
    in_flight: InFlight = deque()
    try:
        async for item in items:
            if not isinstance(item, AudioWindow):
                while in_flight:
                    yield await _first(in_flight)
                yield item
                continue
            calls = [transcribe(item.samples), *([embed(item.samples)] if embed is not None else [])]
            in_flight.append((item.start, calls, asyncio.gather(*calls)))
            if len(in_flight) >= limit:
                yield await _first(in_flight)
        while in_flight:
            yield await _first(in_flight)
    finally:
        for _, calls, task in in_flight:
            task.cancel()
            for call in calls:
                call.cancel()
            if task.done() and not task.cancelled():
                task.exception()  # one call failed before the others: retrieved, so asyncio does not log it
        await items.aclose()


class SourceRoute:
    """A source's options, routed once, on its first window: every window goes out with the model that it picks."""

    def __init__(self, options: TranscribeOptions,
                 route: Callable[[np.ndarray, TranscribeOptions], Awaitable[TranscribeOptions]]) -> None:
        self.options = options
        self._route = route

    async def windows(self, items: AsyncGenerator[Any, None]) -> AsyncGenerator[Any, None]:
        """``items`` unchanged; before the first ``AudioWindow`` is passed on, ``options`` are routed on its samples."""
        routed = False
        async with aclosing(items):
            async for item in items:
                if isinstance(item, AudioWindow) and not routed:
                    self.options, routed = await self._route(item.samples, self.options), True
                yield item


async def _first(in_flight: InFlight) -> TranscribedWindow:
    """The oldest window's transcription (and embeddings), once back."""
    start, _, task = in_flight.popleft()
    transcription, *speech = await task
    return TranscribedWindow(start=start, transcription=transcription, speech=speech[0] if speech else None)

