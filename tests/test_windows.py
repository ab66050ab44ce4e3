"""Cutting audio into windows of speech at silences, block by block, and stitching the windows' transcripts.

Pure Python, no Ray: ``deployments.windows`` on speech made with espeak-ng, on silence, and on spans made up
by hand; the windows' transcripts come from the real tiny.en model.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import deployments.windows as windows_module
from benchmarks.support.speech import SCRIPTS, word_error_rate
from deployments.audio import decode
from deployments.schemas import AudioWindow, Segment, TranscribeOptions, Transcription, Word
from deployments.settings import TranscriberSettings
from deployments.transcriber import WhisperEngine
from deployments.windows import MERGE_GAP_S, group, shifted, speech_spans, speech_windows, split_long, stitch
from tests.conftest import speak

RATE = 16000
LOUD = 0.02
"""A sample louder than this is part of a word: espeak-ng's pauses are digital silence."""
LONG_TEXT = " ".join(SCRIPTS[name] for name in ("lecture", "history", "cooking", "lecture"))
"""Spoken without a pause longer than a sentence's: more than 30 s that VAD must split on its own."""


@dataclass
class Talk:
    """Clips of speech laid out with silences between them, and where each clip is (in samples)."""

    audio: np.ndarray
    script: str
    clips: list[tuple[int, int]]

    @property
    def seconds(self) -> float:
        return self.audio.size / RATE

    def gaps(self) -> list[tuple[int, int]]:
        """The silences before, between and after the clips."""
        edges = [0] + [edge for clip in self.clips for edge in clip] + [self.audio.size]
        return [(edges[i], edges[i + 1]) for i in range(0, len(edges), 2)]


@pytest.fixture(scope="module")
def talk(speech: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Talk:
    """About 70 s: 1.5 s of silence, lecture, 2 s, history, 5 s, a 32 s monologue, 1 s, cooking, 6 s."""
    monologue = speak(LONG_TEXT, tmp_path_factory.mktemp("long") / "monologue.wav")
    layout = [(1.5, decode(speech["lecture"]), SCRIPTS["lecture"]),
              (2.0, decode(speech["history"]), SCRIPTS["history"]),
              (5.0, decode(monologue), LONG_TEXT),
              (1.0, decode(speech["cooking"]), SCRIPTS["cooking"])]
    parts, clips, at = [], [], 0
    for silence, clip, _ in layout:
        parts += [np.zeros(int(silence * RATE), dtype=np.float32), clip]
        at += int(silence * RATE)
        clips.append((at, at + clip.size))
        at += clip.size
    parts.append(np.zeros(6 * RATE, dtype=np.float32))
    audio = np.concatenate(parts)
    assert audio.size / RATE > 60 and (clips[2][1] - clips[2][0]) / RATE > 30
    return Talk(audio, " ".join(text for *_, text in layout), clips)


@pytest.fixture(scope="module")
def engine() -> WhisperEngine:
    return WhisperEngine(TranscriberSettings())


def in_blocks(audio: np.ndarray, block_s: float | None) -> Iterator[np.ndarray]:
    """The audio as a decoder hands it over: blocks of ``block_s`` seconds (the last shorter), or whole."""
    if block_s is None:
        yield audio
        return
    size = int(block_s * RATE)
    for start in range(0, audio.size, size):
        yield audio[start:start + size]


def drained(windows: Generator[AudioWindow, None, int]) -> tuple[list[AudioWindow], int]:
    """Every window, and the generator's return value (the samples it read)."""
    found = []
    while True:
        try:
            found.append(next(windows))
        except StopIteration as stop:
            return found, stop.value


def cut(audio: np.ndarray, block_s: float | None, window_s: float = 30.0, vad: bool = True) -> list[AudioWindow]:
    """The windows of ``audio`` fed in blocks, checked: bounded, in order, exact slices, every sample counted."""
    found, read = drained(speech_windows(in_blocks(audio, block_s), window_s, vad, RATE))
    assert read == audio.size, f"the generator returned {read} samples read, not {audio.size}"
    end = 0
    for window in found:
        assert isinstance(window.samples, np.ndarray) and window.samples.dtype == np.float32
        assert window.samples.ndim == 1 and 0 < window.samples.size <= int(window_s * RATE)
        start = round(window.start * RATE)
        assert abs(start - window.start * RATE) < 1e-6, f"window start {window.start} s is not on a sample"
        assert start >= end, f"the window at {window.start} s overlaps the one ending at {end / RATE} s"
        end = start + window.samples.size
        assert end <= audio.size
        assert np.array_equal(window.samples, audio[start:end]), f"the window at {window.start} s is not the source"
    return found


def coverage(found: list[AudioWindow], size: int) -> np.ndarray:
    covered = np.zeros(size, dtype=bool)
    for window in found:
        start = round(window.start * RATE)
        covered[start:start + window.samples.size] = True
    return covered


def missed_seconds(talk: Talk, found: list[AudioWindow]) -> list[tuple[float, float]]:
    """Stretches (first and last loud sample, in seconds) of speech that no window holds."""
    missed = np.flatnonzero((np.abs(talk.audio) > LOUD) & ~coverage(found, talk.audio.size))
    if missed.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(missed) > RATE // 10)
    starts, ends = np.r_[missed[0], missed[breaks + 1]], np.r_[missed[breaks], missed[-1]]
    return [(round(a / RATE, 2), round(b / RATE, 2)) for a, b in zip(starts, ends, strict=True)]


# group: which neighbouring spans become one window


def test_group_merges_spans_separated_by_short_gaps_while_they_fit() -> None:
    assert list(group([(0, 10), (15, 20), (22, 40)], window=100, merge_gap=5)) == [(0, 40)]


def test_group_keeps_spans_apart_across_a_gap_longer_than_merge_gap() -> None:
    assert list(group([(0, 10), (16, 20)], window=100, merge_gap=5)) == [(0, 10), (16, 20)]
    assert list(group([(0, 10), (15, 20)], window=100, merge_gap=5)) == [(0, 20)], "a gap of exactly merge_gap merges"


def test_group_never_makes_a_window_longer_than_window() -> None:
    assert list(group([(0, 60), (61, 100)], window=100, merge_gap=5)) == [(0, 100)], "exactly window fits"
    assert list(group([(0, 60), (61, 101)], window=100, merge_gap=5)) == [(0, 60), (61, 101)]
    spans = [(i * 30, i * 30 + 25) for i in range(10)]
    merged = list(group(spans, window=100, merge_gap=5))
    assert merged == [(0, 85), (90, 175), (180, 265), (270, 295)]
    assert all(end - start <= 100 for start, end in merged)


def test_group_starts_afresh_after_a_span_that_could_not_join() -> None:
    spans = [(0, 10), (12, 20), (50, 60), (62, 70), (200, 290), (291, 301)]
    assert list(group(spans, window=100, merge_gap=5)) == [(0, 20), (50, 70), (200, 290), (291, 301)]
    assert list(group([], window=100, merge_gap=5)) == []
    assert list(group([(3, 7)], window=100, merge_gap=5)) == [(3, 7)]


# speech_windows on speech


BLOCKS = [5.0, 7.0, 10.25, 12.0, 30.0, None]
"""Decoding block sizes: short and odd ones, ``window_s`` itself (the smallest the settings allow), whole."""


@pytest.mark.parametrize("block_s", BLOCKS, ids=lambda b: "whole" if b is None else f"{b}s-blocks")
def test_windows_are_bounded_ordered_and_cut_from_the_source(talk: Talk, block_s: float | None) -> None:
    found = cut(talk.audio, block_s)
    assert len(found) >= 3, "more than 60 s of speech needs three windows of 30 s at least"
    if block_s is None:  # in one block only the long silences (and 30 s) cut windows
        assert len(found) <= 5, [(w.start, w.samples.size / RATE) for w in found]
    assert found[0].start >= 0.5, "the leading silence was kept"


@pytest.mark.parametrize("window_s", [30.0, 10.0, 4.0])
@pytest.mark.parametrize("block_s", BLOCKS, ids=lambda b: "whole" if b is None else f"{b}s-blocks")
def test_no_speech_is_lost_at_block_or_window_boundaries(talk: Talk, block_s: float | None, window_s: float) -> None:
    found = cut(talk.audio, block_s, window_s)
    assert missed_seconds(talk, found) == [], [(w.start, w.samples.size / RATE) for w in found]


@pytest.mark.parametrize("block_s", BLOCKS, ids=lambda b: "whole" if b is None else f"{b}s-blocks")
def test_long_silences_are_dropped(talk: Talk, block_s: float | None) -> None:
    covered = coverage(cut(talk.audio, block_s), talk.audio.size)
    margin = RATE  # VAD pads speech by 0.4 s each side; a window may also carry a little silence at its edges
    for start, end in talk.gaps():
        if end - start > MERGE_GAP_S * RATE:
            assert not covered[start + margin:end - margin].any(), (start / RATE, end / RATE)
    assert covered.sum() < talk.audio.size - 9 * RATE


def test_a_short_silence_between_clips_stays_inside_one_window(talk: Talk) -> None:
    """The 2 s between the first two clips is shorter than MERGE_GAP_S, and both clips fit in 30 s."""
    covered = coverage(cut(talk.audio, None), talk.audio.size)
    (_, lecture_end), (history_start, _) = talk.clips[:2]
    assert covered[lecture_end:history_start].all()


@pytest.fixture(scope="module")
def transcripts(talk: Talk, engine: WhisperEngine) -> dict[str, Transcription]:
    """The talk cut with each block size (and with 10 s windows), transcribed window by window and stitched."""
    options = TranscribeOptions()
    stitched = {}
    for label, block_s, window_s in [("whole", None, 30.0), ("7s-blocks", 7.0, 30.0), ("10s-windows", None, 10.0)]:
        found = cut(talk.audio, block_s, window_s)
        parts = engine.transcribe_batch([w.samples for w in found], [options] * len(found))
        assert len(parts) == len(found)
        for window, part in zip(found, parts, strict=True):
            assert part.duration == pytest.approx(window.samples.size / RATE)
        stitched[label] = stitch([(w.start, p) for w, p in zip(found, parts, strict=True)], talk.seconds,
                                 "tiny.en", "en")
        for segment in stitched[label].segments:  # every stitched segment lies in the window it came from
            assert any(w.start - 0.01 <= segment.start <= segment.end <= w.start + w.samples.size / RATE + 0.01
                       for w in found), (label, segment)
    return stitched


@pytest.mark.parametrize("label", ["whole", "7s-blocks", "10s-windows"])
def test_stitched_windows_read_like_the_script(talk: Talk, transcripts: dict[str, Transcription], label: str) -> None:
    result = transcripts[label]
    assert word_error_rate(talk.script, result.text) <= 0.2, result.text
    assert result.duration == pytest.approx(talk.seconds) and result.language == "en"
    assert [s.id for s in result.segments] == list(range(len(result.segments)))
    starts = [s.start for s in result.segments]
    assert starts == sorted(starts)


def test_the_block_size_does_not_change_the_text(transcripts: dict[str, Transcription]) -> None:
    """Every word survives 7 s blocks; only the model's guesses at some words differ, as windows are cut elsewhere.

    (Blocks end windows early, and a window's first words are decoded with less context, e.g. "So may we
    talk" for "Today we talk"; a lost stretch of speech shows as missing words.)
    """
    whole, blocks = transcripts["whole"].text, transcripts["7s-blocks"].text
    assert len(blocks.split()) == pytest.approx(len(whole.split()), rel=0.05), (whole, blocks)
    assert word_error_rate(whole, blocks) <= 0.12, (whole, blocks)


# silence, no input, and no VAD


@pytest.mark.parametrize("block_s", [7.0, None], ids=["7s-blocks", "whole"])
def test_silence_only_gives_no_windows(block_s: float | None) -> None:
    silence = np.zeros(40 * RATE, dtype=np.float32)
    assert cut(silence, block_s) == []
    hiss = (np.random.default_rng(3).standard_normal(40 * RATE) * 1e-3).astype(np.float32)
    assert cut(hiss, block_s) == []


def test_no_blocks_give_no_windows_and_no_samples() -> None:
    assert drained(speech_windows(iter([]), 30.0)) == ([], 0)


@pytest.mark.parametrize("window_s", [30.0, 10.0])
@pytest.mark.parametrize("block_s", [7.0, 7.75, 10.25, 30.0, 61.0, None],
                         ids=lambda b: "whole" if b is None else f"{b}s-blocks")
def test_without_vad_windows_are_fixed_consecutive_and_cover_everything(talk: Talk, block_s: float | None,
                                                                        window_s: float) -> None:
    found = cut(talk.audio, block_s, window_s, vad=False)
    window = int(window_s * RATE)
    assert [w.start for w in found] == [i * window_s for i in range(-(-talk.audio.size // window))]
    assert all(w.samples.size == window for w in found[:-1])
    assert np.array_equal(np.concatenate([w.samples for w in found]), talk.audio)


def test_speech_spans_without_vad_tile_the_audio() -> None:
    assert speech_spans(np.zeros(25, dtype=np.float32), 10, False, RATE) == [(0, 10), (10, 20), (20, 25)]


@pytest.mark.parametrize("window_s", [30.0, 10.0])
def test_vad_spans_never_pass_the_window(talk: Talk, window_s: float) -> None:
    spans = speech_spans(talk.audio, int(window_s * RATE), True, RATE)
    assert spans and all(0 <= start < end <= talk.audio.size for start, end in spans)
    assert all(end - start <= window_s * RATE for start, end in spans)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_speech_that_straddles_the_carry_point_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """A block whose last span starts in its final second, after a span that runs past ``size - CARRY_S``.

    Made-up VAD (runs of non-zero samples) makes the layout exact: in the first 7 s block speech runs
    from 5.0 s to 6.3 s, stops for 0.2 s, and starts again at 6.5 s; the tail kept for the next block
    begins at 6.0 s. The span ending at 6.3 s is not complete before 6.0 s, so it must be carried whole.
    """
    def runs_of_sound(audio: np.ndarray, window: int, vad: bool, sample_rate: int) -> list[tuple[int, int]]:
        edges = np.flatnonzero(np.diff(np.r_[0, (audio != 0).astype(np.int8), 0]))
        return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]

    monkeypatch.setattr(windows_module, "speech_spans", runs_of_sound)
    audio = np.zeros(14 * RATE, dtype=np.float32)
    audio[int(5.0 * RATE):int(6.3 * RATE)] = 0.5
    audio[int(6.5 * RATE):int(8.0 * RATE)] = 0.5
    found = cut(audio, 7.0)
    covered = coverage(found, audio.size)
    assert covered[audio != 0].all(), [(w.start, w.samples.size / RATE) for w in found]


# shifted and stitch


def segment(start: float, end: float, text: str, words: list[tuple[str, float, float]] | None = None,
            number: int = 0) -> Segment:
    return Segment(id=number, start=start, end=end, text=text, tokens=[1, 2],
                   words=None if words is None else [Word(word=w, start=s, end=e) for w, s, e in words])


def test_shifted_moves_segments_and_words_and_renumbers_them() -> None:
    original = [segment(0.0, 1.5, "hello there", [("hello", 0.1, 0.6), ("there", 0.7, 1.4)]),
                segment(2.0, 3.25, "again", number=7)]
    moved = shifted(original, 12.5, first_id=3)
    assert [s.id for s in moved] == [3, 4]
    assert [(s.start, s.end) for s in moved] == [(12.5, 14.0), (14.5, 15.75)]
    assert [s.seek for s in moved] == [1250, 1450]
    assert [(w.word, w.start, w.end) for w in moved[0].words] == [("hello", 12.6, 13.1), ("there", 13.2, 13.9)]
    assert moved[1].words is None
    assert [s.text for s in moved] == ["hello there", "again"] and moved[0].tokens == [1, 2]
    assert (original[0].start, original[0].words[0].start, original[1].id) == (0.0, 0.1, 7), "the input changed"
    assert shifted([], 5.0, 9) == []


def test_shifted_rounds_to_milliseconds() -> None:
    (moved,) = shifted([segment(0.1, 0.2, "x", [("x", 0.1, 0.2)])], 0.2, 0)
    assert (moved.start, moved.end, moved.words[0].start) == (0.3, 0.4, 0.3)


def transcription(language: str, duration: float, segments: list[Segment]) -> Transcription:
    return Transcription(model="tiny.en", language=language, duration=duration,
                         text=" ".join(s.text for s in segments), segments=segments)


def test_stitch_puts_each_window_at_its_start_and_numbers_segments_across_windows() -> None:
    parts = [
        (1.0, transcription("en", 5.0, [segment(0.0, 2.0, "one", [("one", 0.2, 0.9)]), segment(2.5, 4.0, "two")])),
        (30.0, transcription("en", 3.0, [])),
        (42.0, transcription("de", 20.0, [segment(0.5, 19.0, "drei", [("drei", 0.5, 1.0)])])),
    ]
    result = stitch(parts, 70.0, "tiny.en", "en")
    assert [s.id for s in result.segments] == [0, 1, 2]
    assert [(s.start, s.end) for s in result.segments] == [(1.0, 3.0), (3.5, 5.0), (42.5, 61.0)]
    assert [(w.start, w.end) for s in result.segments for w in s.words or []] == [(1.2, 1.9), (42.5, 43.0)]
    assert result.text == "one two drei"
    assert result.duration == 70.0 and result.model == "tiny.en"
    assert result.language == "de", "the language heard in the most audio (20 s against 8 s) wins"


def test_stitch_of_nothing_is_empty_in_the_given_language() -> None:
    result = stitch([], 12.0, "tiny.en", "fr")
    assert (result.text, result.segments, result.language, result.duration) == ("", [], "fr", 12.0)
    silent = stitch([(0.0, transcription("en", 12.0, []))], 12.0, "tiny.en", "fr")
    assert (silent.text, silent.language) == ("", "en")


def test_continuous_speech_is_cut_at_its_quietest_moment_in_the_window_s_last_third() -> None:
    """No silence long enough for the VAD: the cut goes where the signal dips (a pause between sentences), not at
    the window's edge and not in the first two thirds."""
    rate, window = 16000, 30 * 16000
    rng = np.random.default_rng(3)
    audio = rng.normal(0, 0.3, 70 * rate).astype(np.float32)
    for dip_s in (12.0, 26.5, 50.0):  # the first is too early to be used; the others are where cuts belong
        audio[int(dip_s * rate): int((dip_s + 0.12) * rate)] *= 0.01
    pieces = split_long(audio, (0, audio.size), window, rate)
    assert all(end - start <= window for start, end in pieces), pieces
    assert pieces[0][0] == 0 and pieces[-1][1] == audio.size
    ends, starts = [end for _, end in pieces[:-1]], [start for start, _ in pieces[1:]]
    assert ends == starts, "each piece starts where the last ended: no audio lost"
    cuts = [end / rate for _, end in pieces[:-1]]
    assert cuts[0] == pytest.approx(26.56, abs=0.08), cuts
    assert cuts[1] == pytest.approx(50.06, abs=0.08), cuts
