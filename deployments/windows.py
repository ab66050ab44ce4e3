"""Cutting long audio into windows at silences, and stitching the windows' transcripts back together.

A window is a stretch of speech of at most ``window_s`` seconds (Whisper decodes 30 s at a time), cut
where Silero VAD hears silence; speech that runs on longer than a window is cut at its quietest moment
in the window's last third (a pause between sentences, more likely than not), so that Whisper sees
whole sentences. Windows are found block by block as the audio is decoded, so memory
holds one block and the speech carried over from the last one, never the whole input. Each window is
transcribed on its own (on any replica, batched with other requests' windows) and its segments are
shifted by the window's start.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterable, Iterator

import numpy as np

from deployments.audio import SAMPLE_RATE
from deployments.schemas import AudioWindow, Segment, Transcription, Word
from deployments.stage_timing import Record

MERGE_GAP_S = 3.0
"""Speech separated by a shorter silence stays in one window (when it fits); a longer silence is skipped."""
SEARCH_FROM = 2 / 3
"""Where in a window the cut of continuous speech is searched from (a fraction of ``window_s``)."""
QUIET_S = 0.1
"""The stretch whose mean energy is compared when looking for the quietest moment."""
CARRY_S = 1.0
"""Audio kept from a block's end when no speech reaches it, so a word starting there is not cut."""

Span = tuple[int, int]


def load_vad() -> None:
    """Load Silero VAD now (faster-whisper keeps one per process), so that no request waits for it.

    onnxruntime's telemetry is turned off first: a media service has no business reporting to anyone.
    """
    import onnxruntime
    from faster_whisper.vad import get_vad_model

    onnxruntime.disable_telemetry_events()
    get_vad_model()


def speech_spans(audio: np.ndarray, window: int, vad: bool, sample_rate: int) -> list[Span]:
    """Where speech is, as sample ranges no longer than ``window``; without VAD, fixed consecutive windows."""
    if not vad:
        return [(start, min(start + window, audio.size)) for start in range(0, audio.size, window)]
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=160)
    found = get_speech_timestamps(audio, options, sampling_rate=sample_rate)
    return [piece for s in found for piece in split_long(audio, (s["start"], s["end"]), window, sample_rate)]


def split_long(audio: np.ndarray, span: Span, window: int, sample_rate: int) -> list[Span]:
    """``span`` cut into pieces of at most ``window`` samples, each cut at the quietest moment of its last third.

    Silero's own cut of overlong speech takes the last short pause, often a comma or a breath inside a
    sentence; Whisper then drops or garbles the words on both sides of it.
    """
    start, end = span
    pieces = []
    while end - start > window:
        cut = quietest(audio, start + int(window * SEARCH_FROM), start + window, int(QUIET_S * sample_rate))
        pieces.append((start, cut))
        start = cut
    return [*pieces, (start, end)]


def quietest(audio: np.ndarray, low: int, high: int, stretch: int) -> int:
    """The middle of the ``stretch`` samples between ``low`` and ``high`` with the least mean energy."""
    hop = max(stretch // 10, 1)
    frames = audio[low:high][: (high - low) // hop * hop].reshape(-1, hop)
    energy = np.convolve(np.square(frames).mean(axis=1), np.ones(10), mode="valid")  # sums over ``stretch``
    return low + (int(np.argmin(energy)) + 5) * hop


def group(spans: list[Span], window: int, merge_gap: int) -> Iterator[Span]:
    """Consecutive spans joined while the joined span fits in ``window`` and no gap passes ``merge_gap``."""
    current: Span | None = None
    for start, end in spans:
        if current is not None and end - current[0] <= window and start - current[1] <= merge_gap:
            current = (current[0], end)
            continue
        if current is not None:
            yield current
        current = (start, end)
    if current is not None:
        yield current


def speech_windows(blocks: Iterable[np.ndarray], window_s: float, vad: bool = True, sample_rate: int = SAMPLE_RATE,
                   record: Record | None = None) -> Generator[AudioWindow, None, int]:
    """Windows of speech from consecutive blocks of audio, in order, each with its start in the whole input.

    The last speech span of a block may go on in the next one, so it is carried over and searched again
    with the next block; silence between windows is dropped (with ``vad``), never decoded. Returns the
    number of samples read. ``record("vad", seconds)`` hears how long each search for speech took.
    """
    window = int(window_s * sample_rate)
    buffer, origin = np.empty(0, dtype=np.float32), 0
    for block, last in _flag_last(blocks):
        buffer = np.concatenate([buffer, block])
        started = time.perf_counter()
        spans = speech_spans(buffer, window, vad, sample_rate)
        if record is not None:
            record("vad", time.perf_counter() - started)
        keep = buffer.size if last else _carry_from(spans, buffer.size, int(CARRY_S * sample_rate))
        for start, end in group([s for s in spans if s[1] <= keep], window, int(MERGE_GAP_S * sample_rate)):
            yield AudioWindow(start=(origin + start) / sample_rate, samples=buffer[start:end].copy())
        buffer, origin = buffer[keep:].copy(), origin + keep
    return origin


def _carry_from(spans: list[Span], size: int, carry: int) -> int:
    """Where the audio kept for the next block starts: at the last speech span, at any span still going in
    the block's last ``carry`` samples, or at those last samples, whichever is earliest."""
    tail = max(size - carry, 0)
    unfinished = [start for start, end in spans if end > tail]
    return min([tail, *unfinished, *(spans[-1][:1] if spans else [])])


def _flag_last(blocks: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, bool]]:
    """Each block with whether it is the last one."""
    iterator = iter(blocks)
    previous = next(iterator, None)
    if previous is None:
        return
    for block in iterator:
        yield previous, False
        previous = block
    yield previous, True


def shifted(segments: list[Segment], offset: float, first_id: int) -> list[Segment]:
    """A window's segments (and words) moved ``offset`` seconds later and numbered from ``first_id``."""
    return [
        segment.model_copy(update={
            "id": first_id + index,
            "seek": round((segment.start + offset) * 100),
            "start": round(segment.start + offset, 3),
            "end": round(segment.end + offset, 3),
            "words": None if segment.words is None else [_word(w, offset) for w in segment.words],
        })
        for index, segment in enumerate(segments)
    ]


def _word(word: Word, offset: float) -> Word:
    return word.model_copy(update={"start": round(word.start + offset, 3), "end": round(word.end + offset, 3)})


def stitch(parts: list[tuple[float, Transcription]], duration: float, model: str, language: str) -> Transcription:
    """One transcription from the windows' (start, transcription) pairs, in the order given.

    The language is the one the most audio was heard in, and the model the one that decoded the most (a routed
    request's windows name theirs); ``language`` and ``model`` when there was no window.
    """
    segments: list[Segment] = []
    heard: dict[str, float] = {}
    decoded: dict[str, float] = {}
    for offset, part in parts:
        segments += shifted(part.segments, offset, len(segments))
        heard[part.language] = heard.get(part.language, 0.0) + part.duration
        decoded[part.model] = decoded.get(part.model, 0.0) + part.duration
    return Transcription(
        model=max(decoded, key=decoded.__getitem__) if decoded else model,
        language=max(heard, key=heard.__getitem__) if heard else language,
        duration=duration,
        text=" ".join(s.text for s in segments if s.text).strip(),
        segments=segments,
    )
