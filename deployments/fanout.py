"""Sending a source's windows to the transcribers as they are decoded, a bounded number at once, in order."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Callable
from typing import Any

import numpy as np

from deployments.schemas import AudioWindow, TranscribedWindow

InFlight = deque[tuple[float, Any, "asyncio.Task[Any]"]]


async def transcribe_windows(items: AsyncGenerator[Any, None], transcribe: Callable[[np.ndarray], Any],
                             limit: int) -> AsyncGenerator[Any, None]:
    """``items`` with each ``AudioWindow`` replaced, in order, by its ``TranscribedWindow``; others pass through.

    ``transcribe(samples)`` starts a call (a DeploymentResponse: awaitable and cancellable). At most
    ``limit`` windows are out at once, spread over the transcriber replicas, and the next window is read,
    and so decoded, only when one has come back: a long source is paced by transcription and never piles
    up anywhere. If the caller stops reading or a window fails, the windows still out are cancelled and
    ``items`` is closed (the downloader removes its file).
    """
    in_flight: InFlight = deque()
    try:
        async for item in items:
            if not isinstance(item, AudioWindow):
                while in_flight:
                    yield await _first(in_flight)
                yield item
                continue
            call = transcribe(item.samples)
            in_flight.append((item.start, call, asyncio.ensure_future(call)))
            if len(in_flight) >= limit:
                yield await _first(in_flight)
        while in_flight:
            yield await _first(in_flight)
    finally:
        for _, call, task in in_flight:
            task.cancel()
            call.cancel()
        await items.aclose()


async def _first(in_flight: InFlight) -> TranscribedWindow:
    """The oldest window's transcription, once it is back."""
    start, _, task = in_flight.popleft()
    return TranscribedWindow(start=start, transcription=await task)

