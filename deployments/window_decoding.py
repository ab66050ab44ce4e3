"""One batched Whisper decode of speech windows from any requests: one encoder pass, one ``generate`` call.

Windows are decoded without timestamp tokens, as faster-whisper's ``BatchedInferencePipeline`` does by
default. With timestamp tokens, tiny.en stopped before the end of half the windows of continuous speech
(a segment that it did not close), and each needed a second decode of its rest: fewer words and more
time. Times, when the answer needs them, come from Whisper's cross-attention alignment of the decoded
text (one forward pass, no search), and the words are grouped into sentence segments.

Each window has its own prompt, so windows of different requests (prompts, tasks, languages) share a
batch; a multilingual model detects the language of windows that name none from the batch's encoder
output, without another encoder pass.

Whisper's encoder takes 30 s, and CTranslate2 also takes less (faster-whisper's ``chunk_length``,
whisper.cpp's ``audio_ctx``), at a cost that shrinks with it. A caller may ask for a shorter context with
``min_context_s``: the batch's longest window plus ``CONTEXT_PADDING_S``, in steps of ``CONTEXT_STEP_S``,
at least ``min_context_s``. With no padding the decoder does not know where to stop and repeats itself;
under 15 s tiny.en repeated one-word turns ("Yes. Yes."). Measured on tiny.en (README, realtime): the
same WER at 15 s or more, and half the encoder time for a sentence.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from deployments.audio import SAMPLE_RATE
from deployments.schemas import Segment, Word
from deployments.stage_timing import Clock, Record

if TYPE_CHECKING:
    from faster_whisper import WhisperModel
    from faster_whisper.tokenizer import Tokenizer

FRAMES_PER_SECOND = 100
"""Whisper's feature frames per second: a segment's ``seek`` counts them."""
NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0
"""A window the model calls silent (no-speech probability above the first, mean log-probability below the
second) gives no segments: faster-whisper's sequential decoder applies the same rule."""
SENTENCE_ENDS = (".", "?", "!", "。", "？", "！")
MAX_SEGMENT_WORDS = 40
"""A sentence longer than this is cut into segments of at most this many words (subtitles stay readable)."""
WHISPER_CONTEXT_S = 30.0
CONTEXT_PADDING_S = 2.0
CONTEXT_STEP_S = 5.0


@dataclass(frozen=True)
class WindowRequest:
    """What one window asks of the decoder besides its samples; ``language`` None means detect it."""

    language: str | None
    task: str
    initial_prompt: str | None


@dataclass(frozen=True)
class Decoding:
    """Options that one ``generate`` call shares across its batch.

    ``timestamps`` False gives one segment per window, spanning it: for answers that show no times (``json``,
    ``text``), the alignment is skipped.
    """

    beam_size: int
    temperature: float
    timestamps: bool
    word_timestamps: bool


@dataclass(frozen=True)
class DecodedWindow:
    """One window's segments (times from the window's start) and the language it was decoded in."""

    language: str
    segments: list[Segment]


def decode_windows(model: WhisperModel, windows: list[np.ndarray], requests: list[WindowRequest],
                   decoding: Decoding, served: Sequence[str] = (), record: Record | None = None,
                   min_context_s: float | None = None) -> list[DecodedWindow]:
    """Every window decoded in one batch, in order; each window (at most 30 s) in a single pass.

    ``served``: the languages configured for the model (``transcriber.languages``); detection picks among
    them, and a model served for one language detects nothing. ``record(stage, seconds)`` hears how long
    the log-Mel features (``features``), the encoder (``encode``), the search (``generate``) and the
    alignment (``align``) took. ``min_context_s``: encode less than 30 s where the windows allow (the
    module's docstring); None: 30 s. A window past 30 s is refused (``check_window``).
    """
    if not windows:
        return []
    for window in windows:
        check_window(window)
    clock = Clock(record)
    frames = context_frames(max(len(window) for window in windows), min_context_s)
    features = np.stack([_features(model, window, frames) for window in windows])
    clock.lap("features")
    encoded = model.encode(features)
    languages = _languages(model, encoded, requests, served)
    clock.lap("encode")
    tokenizers = [_tokenizer(model, language, request.task)
                  for language, request in zip(languages, requests, strict=True)]
    prompts = [model.get_prompt(tokenizer, _prompt_tokens(tokenizer, request.initial_prompt), without_timestamps=True)
               for tokenizer, request in zip(tokenizers, requests, strict=True)]
    results = model.model.generate(
        encoded, prompts, beam_size=decoding.beam_size, max_length=model.max_length, return_scores=True,
        return_no_speech_prob=True, sampling_temperature=decoding.temperature, suppress_blank=True,
        suppress_tokens=_suppressed(tokenizers[0]),
    )
    clock.lap("generate")
    decoded = [_text_tokens(result, tokenizer) for result, tokenizer in zip(results, tokenizers, strict=True)]
    texts = [tokens for tokens, _ in decoded]
    durations = [len(window) / SAMPLE_RATE for window in windows]
    if decoding.timestamps or decoding.word_timestamps:
        aligned = _aligned_words(model, tokenizers[0], encoded, texts, durations)
        segments = [_sentences(words, result, decoding) for words, result in zip(aligned, results, strict=True)]
        clock.lap("align")
    else:
        segments = [_whole(tokens, text, result, duration, decoding.temperature)
                    for (tokens, text), result, duration in zip(decoded, results, durations, strict=True)]
    for found, language in zip(segments, languages, strict=True):
        for number, segment in enumerate(found):
            segment.id, segment.language = number, language
    return [DecodedWindow(language, found) for language, found in zip(languages, segments, strict=True)]


def check_window(window: np.ndarray) -> None:
    """Refuse a window past 30 s: Whisper would hear its first 30 s only, and CTranslate2's alignment reads past the
    encoder output for it (a batch holding a 36.5-s window aborted the process: ``free(): invalid next size``)."""
    if window.size > WHISPER_CONTEXT_S * SAMPLE_RATE:
        raise ValueError(f"a window of {window.size / SAMPLE_RATE:.1f} s: Whisper decodes at most "
                         f"{WHISPER_CONTEXT_S:g} s at once (deployments.windows.speech_windows cuts longer audio)")


def context_frames(longest: int, min_context_s: float | None) -> int:
    """Feature frames the encoder sees for a batch whose longest window has ``longest`` samples."""
    if min_context_s is None:
        return int(WHISPER_CONTEXT_S * FRAMES_PER_SECOND)
    steps = np.ceil((longest / SAMPLE_RATE + CONTEXT_PADDING_S) / CONTEXT_STEP_S)
    return int(min(WHISPER_CONTEXT_S, max(min_context_s, steps * CONTEXT_STEP_S)) * FRAMES_PER_SECOND)


def _features(model: WhisperModel, window: np.ndarray, frames: int) -> np.ndarray:
    """The window's log-Mel features padded (with zeros, as faster-whisper's batched pipeline) to ``frames``."""
    from faster_whisper.audio import pad_or_trim

    return pad_or_trim(model.feature_extractor(window)[..., :-1], frames)


def _languages(model: WhisperModel, encoded: Any, requests: list[WindowRequest], served: Sequence[str]) -> list[str]:
    """Each window's language: the requested one; else English for an English-only model, the one language
    the model is served for, or the likeliest (of those served) by detection from the batch's encoder output."""
    if (fixed := _fixed_language(model, served)) is not None:
        return [request.language or fixed for request in requests]
    detected: list[str] = []
    if any(request.language is None for request in requests):
        detected = [likeliest_language(ranked, served) for ranked in model.model.detect_language(encoded)]
    return [request.language or detected[index] for index, request in enumerate(requests)]


def _fixed_language(model: WhisperModel, served: Sequence[str]) -> str | None:
    """The one language ``model`` can be decoding when there is nothing to detect: English for an English-only model,
    the only one it is served for; None when detection chooses."""
    if not model.model.is_multilingual or len(served) == 1:
        return served[0] if served else "en"
    return None


def detect_language(model: WhisperModel, window: np.ndarray, served: Sequence[str] = (),
                    context_s: float = WHISPER_CONTEXT_S) -> str:
    """The likeliest language (of ``served``, any when empty) of one window's first ``context_s`` seconds, by one
    encoder pass of that length and one decoder step of a multilingual model: how a routed request's model is chosen
    before its windows are decoded. An English-only model, or one served for one language, hears that language
    without a pass (as faster-whisper does)."""
    if (fixed := _fixed_language(model, served)) is not None:
        return fixed
    frames = int(context_s * FRAMES_PER_SECOND)
    encoded = model.encode(_features(model, window[:int(context_s * SAMPLE_RATE)], frames)[None])
    return likeliest_language(model.model.detect_language(encoded)[0], served)


def likeliest_language(ranked: list[tuple[str, float]], served: Sequence[str]) -> str:
    """The most probable language token of ``ranked`` (``<|fr|>``, …) among ``served`` (any, when empty)."""
    codes = [token.strip("<|>") for token, _ in ranked]
    return next((code for code in codes if code in served), codes[0]) if served else codes[0]


def _tokenizer(model: WhisperModel, language: str, task: str) -> Tokenizer:
    from faster_whisper.tokenizer import Tokenizer

    multilingual = model.model.is_multilingual
    return Tokenizer(model.hf_tokenizer, multilingual, task=task if multilingual else "transcribe",
                     language=language if multilingual else "en")


def _prompt_tokens(tokenizer: Tokenizer, initial_prompt: str | None) -> list[int]:
    return tokenizer.encode(" " + initial_prompt.strip()) if initial_prompt else []


def _suppressed(tokenizer: Tokenizer) -> list[int]:
    """faster-whisper's default suppression: symbols that are not speech, and the task tokens."""
    from faster_whisper.transcribe import get_suppressed_tokens

    return get_suppressed_tokens(tokenizer, [-1])


def _avg_logprob(result: Any) -> float:
    """The best hypothesis's mean log-probability per token (its end-of-text counted), as faster-whisper's."""
    length = len(result.sequences_ids[0])
    return float(result.scores[0] * length / (length + 1))


def _text_tokens(result: Any, tokenizer: Tokenizer) -> tuple[list[int], str]:
    """The best hypothesis's text tokens and their text (decoded once); none for a window the model calls
    silent or that holds no word."""
    tokens = [token for token in result.sequences_ids[0] if token < tokenizer.eot]
    silent = result.no_speech_prob > NO_SPEECH_THRESHOLD and _avg_logprob(result) < LOG_PROB_THRESHOLD
    text = "" if silent else tokenizer.decode(tokens)
    if not any(character.isalnum() for character in text):
        return [], ""
    return tokens, text


def _whole(tokens: list[int], text: str, result: Any, duration: float, temperature: float) -> list[Segment]:
    """The window's text as one segment spanning the window."""
    if not tokens:
        return []
    return [_segment(text, 0.0, duration, tokens, result, temperature)]


def _aligned_words(model: WhisperModel, tokenizer: Tokenizer, encoded: Any, texts: list[list[int]],
                   durations: list[float]) -> list[list[dict[str, Any]]]:
    """Each window's words with their times, from the cross-attention alignment, punctuation attached.

    The batch's alignment runs with the first window's tokenizer: windows that named different
    languages never share a batch (``WhisperEngine`` groups them), detected ones rarely do.
    """
    from faster_whisper import WhisperModel as Model
    from faster_whisper.transcribe import merge_punctuations

    frames = [int(np.ceil(duration * FRAMES_PER_SECOND)) for duration in durations]
    aligned = model.find_alignment(tokenizer, [tokens or [tokenizer.eot] for tokens in texts], encoded, frames)
    defaults = inspect.signature(Model.transcribe).parameters  # faster-whisper's own punctuation rules
    words_by_window = []
    for tokens, words, duration in zip(texts, aligned, durations, strict=True):
        words = [word for word in words if word["word"]] if tokens else []
        merge_punctuations(words, defaults["prepend_punctuations"].default, defaults["append_punctuations"].default)
        for word in words:
            word["start"], word["end"] = (round(min(float(word[key]), duration), 3) for key in ("start", "end"))
        words_by_window.append([word for word in words if word["word"]])
    return words_by_window


def _sentences(words: list[dict[str, Any]], result: Any, decoding: Decoding) -> list[Segment]:
    """The window's words grouped into segments that end at a sentence's end (or after ``MAX_SEGMENT_WORDS``)."""
    segments, current = [], []
    for index, word in enumerate(words):
        current.append(word)
        ends = word["word"].rstrip().endswith(SENTENCE_ENDS) or len(current) == MAX_SEGMENT_WORDS
        if ends or index == len(words) - 1:
            tokens = [token for w in current for token in w["tokens"]]
            segment = _segment("".join(w["word"] for w in current), current[0]["start"], current[-1]["end"], tokens,
                               result, decoding.temperature)
            if decoding.word_timestamps:
                segment.words = [Word(word=w["word"].strip(), start=w["start"], end=w["end"],
                                      probability=float(w["probability"])) for w in current]
            segments.append(segment)
            current = []
    return segments


def _segment(text: str, start: float, end: float, tokens: list[int], result: Any, temperature: float) -> Segment:
    from faster_whisper.transcribe import get_compression_ratio

    text = text.strip()
    return Segment(seek=round(start * FRAMES_PER_SECOND), start=round(start, 3), end=round(max(end, start), 3),
                   text=text, tokens=list(tokens), avg_logprob=_avg_logprob(result),
                   compression_ratio=get_compression_ratio(text), no_speech_prob=float(result.no_speech_prob),
                   temperature=temperature)
