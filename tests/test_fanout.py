"""The downloader's fan-out of one source's windows, without Ray: bounded in flight, in order, stopped on failure.

The transcriber here is a stand-in handle that answers with the window's own label, so what is checked
is the bookkeeping (order, offsets, the bound, cancellation), not speech recognition, which the engine
and end-to-end tests cover with the real model.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from typing import Any

import numpy as np
import pytest

from deployments.errors import InvalidRequest
from deployments.fanout import SourceRoute, transcribe_windows
from deployments.pipeline import Source, TranscriptPipeline
from deployments.schemas import (
    AudioEnd,
    AudioWindow,
    Resolved,
    Segment,
    SpeechEmbeddings,
    TranscribedWindow,
    TranscribeOptions,
    Transcription,
)
from deployments.settings import TranscriberSettings

HEADER = Resolved(key="upload:x", duration=0.0, kind="audio")


class Call:
    """A DeploymentResponse's shape: awaitable once, and cancellable (a call never started is dropped)."""

    def __init__(self, answer: Coroutine[Any, Any, Transcription]) -> None:
        self.answer = answer

    def __await__(self) -> Generator[Any, None, Transcription]:
        return self.answer.__await__()

    def cancel(self) -> None:
        self.answer.close()


class Transcriber:
    """Starts a call per window that answers with one segment naming the window (its first sample).

    Later windows take fewer turns of the event loop, so among those in flight the newest finishes first.
    """

    def __init__(self, fail_at: int | None = None) -> None:
        self.in_flight = self.peak = self.calls = 0
        self.fail_at = fail_at
        self.finished: list[int] = []

    def __call__(self, samples: np.ndarray) -> Call:
        self.calls += 1
        return Call(self._answer(int(samples[0]), len(samples) / 16000))

    async def _answer(self, label: int, seconds: float) -> Transcription:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            for _ in range(max(1, 20 - label)):
                await asyncio.sleep(0)  # a turn of the event loop, not a wait for time
            if label == self.fail_at:
                raise InvalidRequest(f"window {label} failed")
            self.finished.append(label)
            segment = Segment(start=0.5, end=seconds - 0.5, text=f"window {label}")
            return Transcription(model="tiny.en", language="en", duration=seconds, text=segment.text,
                                 segments=[segment])
        finally:
            self.in_flight -= 1


class Decoded:
    """The resolver's stream as the fan-out reads it: a header, windows 30 s apart, the end; counts reads."""

    def __init__(self, count: int, seconds: float = 10.0) -> None:
        windows = [AudioWindow(start=30.0 * i, samples=np.full(int(seconds * 16000), i, dtype=np.float32))
                   for i in range(count)]
        self.items = [HEADER, *windows, AudioEnd(duration=30.0 * count)]
        self.read = 0
        self.closed = False

    async def stream(self) -> AsyncIterator[Any]:
        try:
            for item in self.items:
                self.read += 1
                yield item
        finally:
            self.closed = True


async def fan_out(decoded: Decoded, transcriber: Transcriber, limit: int) -> list[Any]:
    return [item async for item in transcribe_windows(decoded.stream(), transcriber, limit)]


@pytest.mark.parametrize("limit", [1, 3, 8])
def test_windows_fan_out_within_the_bound_and_come_back_in_order(limit: int) -> None:
    transcriber, decoded = Transcriber(), Decoded(7)
    items = asyncio.run(fan_out(decoded, transcriber, limit))
    assert transcriber.calls == 7 and transcriber.peak == min(limit, 7)
    if limit > 1:
        assert transcriber.finished != sorted(transcriber.finished), "the stand-in should finish out of order"
    assert items[0] == HEADER and items[-1] == AudioEnd(duration=210.0)
    windows = items[1:-1]
    assert all(isinstance(w, TranscribedWindow) for w in windows)
    assert [(w.start, w.transcription.text) for w in windows] == [(30.0 * i, f"window {i}") for i in range(7)]
    assert decoded.closed


def test_a_window_is_read_only_when_one_in_flight_came_back() -> None:
    """Reading (and so decoding) is paced by transcription: never more than the bound ahead."""
    transcriber, decoded = Transcriber(), Decoded(12)

    async def check() -> None:
        async for item in transcribe_windows(decoded.stream(), transcriber, 3):
            if isinstance(item, TranscribedWindow):
                index = int(item.start // 30)
                assert decoded.read <= 1 + index + 3, (index, decoded.read)  # header + returned + in flight

    asyncio.run(check())


def test_a_failed_window_fails_the_stream_cancels_the_rest_and_closes_the_source() -> None:
    transcriber, decoded = Transcriber(fail_at=2), Decoded(12)
    with pytest.raises(InvalidRequest, match="window 2 failed"):
        asyncio.run(fan_out(decoded, transcriber, 3))
    assert decoded.read < len(decoded.items), "windows past the failure were still read"
    assert decoded.closed, "the source must be closed so the downloader removes its file"
    assert transcriber.in_flight == 0, "windows still in flight after the stream failed"


def test_a_source_is_routed_once_on_its_first_window_before_any_window_goes_out() -> None:
    """The routed options (the model the first window's language picks) travel with every window."""
    routes: list[int] = []
    sent: list[str | None] = []

    async def route(samples: np.ndarray, options: TranscribeOptions) -> TranscribeOptions:
        routes.append(int(samples[0]))
        return options.model_copy(update={"model": "base"})

    transcriber, decoded = Transcriber(), Decoded(4)
    routed = SourceRoute(TranscribeOptions(model="auto"), route)

    def transcribe(samples: np.ndarray) -> Call:
        sent.append(routed.options.model)
        return transcriber(samples)

    async def run() -> list[Any]:
        return [item async for item in transcribe_windows(routed.windows(decoded.stream()), transcribe, 2)]

    items = asyncio.run(run())
    assert routes == [0] and sent == ["base"] * 4 and len(items) == 6
    assert decoded.closed, "the source is closed through the routing step"


def embedding(embedder: Transcriber) -> Callable[[np.ndarray], Call]:
    """A diarizer stand-in: ``embedder``'s pacing and failures, answering with one span ending at the label."""
    def embed(samples: np.ndarray) -> Call:
        async def spans() -> SpeechEmbeddings:
            await embedder(samples)
            return SpeechEmbeddings(spans=[(0.0, float(samples[0]))], vectors=np.zeros((1, 2)))
        return Call(spans())
    return embed


def test_with_a_diarizer_each_window_is_embedded_beside_its_transcription() -> None:
    transcriber, embedder, decoded = Transcriber(), Transcriber(), Decoded(5)
    items = asyncio.run(_collect(transcribe_windows(decoded.stream(), transcriber, 3, embedding(embedder))))
    windows = [w for w in items if isinstance(w, TranscribedWindow)]
    assert [(w.transcription.text, w.speech.spans) for w in windows] == [(f"window {i}", [(0.0, i)]) for i in range(5)]
    assert embedder.calls == 5 and embedder.peak == 3, "windows are embedded as they are transcribed, as many at once"


def test_the_diarizer_failing_fails_the_stream_and_stops_the_transcriptions() -> None:
    transcriber, embedder, decoded = Transcriber(), Transcriber(fail_at=1), Decoded(12)
    with pytest.raises(InvalidRequest, match="window 1 failed"):
        asyncio.run(_collect(transcribe_windows(decoded.stream(), transcriber, 3, embedding(embedder))))
    assert decoded.closed and transcriber.in_flight == 0


class Stream:
    """The downloader's stream as the ingress reads it after the header; remembers a cancel."""

    def __init__(self, items: list[Any]) -> None:
        self.items, self.cancelled = items, False

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        for item in self.items:
            yield item

    def cancel(self) -> None:
        self.cancelled = True


def transcribed(count: int) -> list[Any]:
    """What the downloader streams after the header for ``count`` windows 30 s apart."""
    return [TranscribedWindow(start=30.0 * i, transcription=Transcription(
        model="tiny.en", language="en", duration=10.0, text=f"window {i}",
        segments=[Segment(start=0.5, end=9.5, text=f"window {i}")])) for i in range(count)] + \
        [AudioEnd(duration=30.0 * count)]


def test_the_ingress_stitches_the_windows_at_their_offsets() -> None:
    stream = Stream(transcribed(5))
    source = Source(HEADER, TranscribeOptions(), stream)
    result = asyncio.run(TranscriptPipeline(None, None, TranscriberSettings()).transcription(source))
    assert [s.text for s in result.segments] == [f"window {i}" for i in range(5)]
    assert [s.id for s in result.segments] == list(range(5))
    assert [(s.start, s.end) for s in result.segments] == [(30.0 * i + 0.5, 30.0 * i + 9.5) for i in range(5)]
    assert result.duration == 150.0 and result.model == "tiny.en"
    assert not stream.cancelled


def test_a_reader_that_stops_early_stops_the_downloader() -> None:
    async def first_segment() -> Segment:
        stream = Stream(transcribed(5))
        segments = TranscriptPipeline(None, None, TranscriberSettings()).segments(Source(HEADER, TranscribeOptions(),
                                                                                       stream))
        first = await segments.__anext__()
        await segments.aclose()
        assert stream.cancelled
        return first

    assert asyncio.run(first_segment()).text == "window 0"


def test_audio_with_no_speech_gives_an_empty_transcript_of_its_length() -> None:
    source = Source(HEADER, TranscribeOptions(), Stream([AudioEnd(duration=42.0)]))
    result = asyncio.run(TranscriptPipeline(None, None, TranscriberSettings()).transcription(source))
    assert result.text == "" and result.segments == [] and result.duration == 42.0


async def _collect(items: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in items]


async def _items(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item
