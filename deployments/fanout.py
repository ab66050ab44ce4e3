"""Sending a source's windows to the transcribers as they are decoded, a bounded number at once, in order,
in the language detected once for the source."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

import numpy as np

from deployments.errors import guarded
from deployments.schemas import AudioWindow, TranscribedWindow, TranscribeOptions

InFlight = deque[tuple[float, Any, "asyncio.Task[Any]"]]


async def transcribe_windows(items: AsyncGenerator[Any, None], transcribe: Callable[[np.ndarray], Any],
                             limit: int) -> AsyncIterator[Any]:
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
            in_flight.append((item.start, call, asyncio.ensure_future(guarded(call))))
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


class SourceLanguage:
    """A source's decoding options, with its language filled in once, from its first window, when none was asked.

    Detection is an encoder pass: done per window it doubles a multilingual model's encoder work, and windows
    of one source could come out in different languages. ``detect(samples, options)`` is awaited once.
    """

    def __init__(self, options: TranscribeOptions, detect: Callable[[np.ndarray, TranscribeOptions], Awaitable[str]]):
        self.options = options
        self._detect = detect

    async def windows(self, items: AsyncGenerator[Any, None]) -> AsyncIterator[Any]:
        """``items`` as they come; before the first ``AudioWindow`` passes, the language is settled."""
        async with aclosing(items):
            async for item in items:
                if isinstance(item, AudioWindow) and self.options.language is None:
                    language = await self._detect(item.samples, self.options)
                    self.options = self.options.model_copy(update={"language": language})
                yield item
