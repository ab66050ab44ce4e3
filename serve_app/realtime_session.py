"""One Realtime transcription session as plain Python: client events in, server events out, turns to a decoder.

The session holds the audio since the last commit at 16 kHz. With server VAD a turn starts where speech
starts (less ``prefix_padding_ms``) and is committed where it stops; without it the client commits. While a
turn is still being spoken it is decoded again every ``delta_interval_s`` of new audio, and the words two
decodings in a row agree on are sent as ``delta`` events (so a delta is never taken back). With server VAD
the turn is also decoded as soon as a pause has lasted ``TAIL_MS``, in the committed turns' lane: when the
pause goes on to end the turn, that decoding is the ``completed`` transcript, already under way for the
rest of ``silence_duration_ms``; otherwise it only feeds deltas. Any other committed turn is decoded once
more for ``completed``. A turn reaches ``max_turn_s`` (Whisper's 30-s window) only
by running on without a pause: it is committed there, at exactly ``max_turn_s`` (Whisper hears no more), and the
audio past it starts the next turn. ``transcribe`` is how a turn reaches a decoder (the
Transcriber through its handle, in the app); a failure of it is that turn's ``failed`` event, and the
session goes on.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deployments.audio import SAMPLE_RATE, LivePcm
from deployments.errors import ServiceError, as_service_error
from deployments.schemas import Segment, TranscribeOptions, Transcription
from deployments.store import transcript_key
from deployments.turns import TurnDetector
from serve_app.realtime_protocol import (
    Append,
    BetaSessionUpdate,
    Clear,
    Commit,
    ProtocolError,
    SessionConfig,
    SessionUpdate,
    error_event,
    event,
    new_id,
    parse_event,
)

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]
Transcribe = Callable[[np.ndarray, TranscribeOptions, bool], Awaitable[Transcription]]
"""Decodes a turn's samples; the flag says whether in the committed turns' lane (else: a partial, for deltas)."""
ITEM_EVENT = "conversation.item.input_audio_transcription"
TAIL_MS = 200
"""Audio kept after the detected end of speech, so a word's fading end is not cut."""
TAIL = TAIL_MS * SAMPLE_RATE // 1000


class Slots:
    """A count of things open at once against a limit, shared by one Ingress replica's sessions."""

    def __init__(self, limit: int) -> None:
        self.limit, self.open = limit, 0

    def take(self) -> bool:
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def give_back(self) -> None:
        self.open -= 1


@dataclass(frozen=True)
class SessionLimits:
    """What one session may send and how often its growing turn is decoded (from the ingress's settings)."""

    max_append_bytes: int = 1024 * 1024
    min_commit_ms: int = 100
    max_turn_s: float = 30.0
    delta_interval_s: float = 1.0


@dataclass
class Turn:
    """The audio since the last commit, its place in the stream, and what its deltas have said so far."""

    item_id: str
    start: int
    """Stream index (16 kHz) of the first sample held."""
    audio: list[np.ndarray] = field(default_factory=list)
    held: int = 0
    decoded_at: int = 0
    """``held`` when the last partial decoding started."""
    previous: list[str] = field(default_factory=list)
    sent: int = 0
    """Words of the agreed prefix already sent as deltas."""

    def samples(self) -> np.ndarray:
        return np.concatenate(self.audio) if self.audio else np.zeros(0, dtype=np.float32)

    def add(self, samples: np.ndarray) -> None:
        self.audio.append(samples)
        self.held += samples.size

    def keep_from(self, sample: int) -> None:
        """Drop what came before stream index ``sample`` (silence before a turn)."""
        whole = self.samples()[max(0, sample - self.start):]
        self.audio, self.held, self.start = [whole], whole.size, max(sample, self.start)


@dataclass
class Decoding:
    """One decoding of the growing turn: its audio up to stream index ``end``, the transcription under way, and
    the delta that follows it. A commit that ends the turn at ``end`` takes the transcription as ``completed``."""

    turn: Turn
    end: int
    result: asyncio.Future[Transcription]
    delta: asyncio.Task[None]

    def cancel(self) -> None:
        self.result.cancel()
        self.delta.cancel()


def _words(text: str) -> list[str]:
    return text.split()


def _normal(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


def agreed(previous: list[str], current: list[str]) -> int:
    """How many leading words two decodings of a growing turn agree on (case and punctuation aside)."""
    count = 0
    for old, new in zip(previous, current, strict=False):
        if _normal(old) != _normal(new):
            break
        count += 1
    return count


class TranscriptionSession:
    """A Realtime transcription session's state; ``receive`` takes each client message, ``send`` gets each reply."""

    def __init__(self, transcribe: Transcribe, send: Send, limits: SessionLimits, config: SessionConfig,
                 check_model: Callable[[str | None, str | None], str] | None = None,
                 partials: Slots | None = None, routed: str | None = None) -> None:
        self.transcribe, self.send, self.limits, self.config = transcribe, send, limits, config
        self.partials = partials
        """Partial decodings in flight across the replica's sessions: past the limit a delta waits its turn, so
        under load the decoders spend their time on committed turns (``completed``) rather than on deltas."""
        self.check_model = check_model
        """The model for a session's model and language, or a ServiceError when the service serves no such pair."""
        self.routed = routed
        """The routed name (``transcriber.routing.name``): a session naming no model has its first turn's language
        detected and keeps the model that language picks (``_choosing``); one naming it routes every turn."""
        self.model = self._checked(config)
        """The configured name of the session's model, checked once per configuration (as requested when nothing
        checks it)."""
        self.id = new_id("sess")
        self.beta = False
        self.pcm = LivePcm()
        self.heard = 0
        """16-kHz samples received so far."""
        self.turn = Turn(new_id("item"), 0)
        self.detector = self._detector()
        self.previous_item: str | None = None
        self.segments: list[Segment] = []
        """Each completed turn's transcript at its place in the session (for the store)."""
        self._partial: Decoding | None = None
        """The latest decoding of the growing turn (on a timer or at a pause)."""
        self._finals: set[asyncio.Task[None]] = set()
        self._last_final: asyncio.Task[None] | None = None
        self.languages: dict[str, float] = {}
        """Seconds of completed turns heard in each language."""

    def _detector(self) -> TurnDetector | None:
        detection = self.config.turn_detection
        return None if detection is None else TurnDetector(detection.threshold, detection.silence_duration_ms)

    def _checked(self, config: SessionConfig) -> str:
        """The configured name of ``config``'s model for its language; a ServiceError when it is not served."""
        if self.check_model is None:
            return config.model or "whisper-1"
        return self.check_model(config.model, config.language)

    @property
    def transcript_id(self) -> str | None:
        """Where the store keeps this session's transcript at close, when it does (``store: true``)."""
        return transcript_key(f"realtime:{self.id}", self.model) if self.config.store else None

    @property
    def language(self) -> str | None:
        """The session's language: the one it gives, else the one most of its completed turns were heard in."""
        heard = max(self.languages, key=self.languages.__getitem__, default=None)
        return self.config.language or heard

    def _described(self) -> dict[str, Any]:
        return {**self.config.describe(self.id, self.beta, self.model), "transcript_id": self.transcript_id}

    async def start(self) -> None:
        await self.send(event("session.created", session=self._described()))

    async def receive(self, message: str | bytes) -> None:
        """One client message; what is wrong with it is an ``error`` event, and the session goes on."""
        try:
            if isinstance(message, bytes):
                raise ProtocolError("send events as JSON text messages", "invalid_event")
            await self._dispatch(parse_event(message))
        except ProtocolError as error:
            await self.send(error_event(error.message, error.code, error.param, error.event_id))

    async def _dispatch(self, parsed: SessionUpdate | BetaSessionUpdate | Append | Commit | Clear) -> None:
        if isinstance(parsed, SessionUpdate | BetaSessionUpdate):
            await self._update(parsed)
        elif isinstance(parsed, Append):
            await self._append(parsed)
        elif isinstance(parsed, Commit):
            await self._commit(parsed.event_id)
        else:
            self._drop_partial()
            self.turn = Turn(self.turn.item_id, self.heard)
            if self.detector is not None:
                self.detector.reset()
            await self.send(event("input_audio_buffer.cleared"))

    async def _update(self, update: SessionUpdate | BetaSessionUpdate) -> None:
        self.beta = isinstance(update, BetaSessionUpdate)
        before, config = self.config.turn_detection, self.config.updated(update)
        same = (config.model, config.language) == (self.config.model, self.config.language)
        try:
            model = self.model if same else self._checked(config)  # a model a first turn chose stays chosen
        except ServiceError as error:
            field = "language" if error.param == "language" else "model"
            raise ProtocolError(error.message, error.code, f"session.audio.input.transcription.{field}",
                                update.event_id) from None
        self.config, self.model = config, model
        if self.config.turn_detection != before:
            self.detector = self._detector()
        await self._send_updated()

    async def _send_updated(self) -> None:
        """``session.updated`` (in the form the client spoke) with the session as it now is."""
        kind = "transcription_session.updated" if self.beta else "session.updated"
        await self.send(event(kind, session=self._described()))

    async def _append(self, append: Append) -> None:
        if len(append.audio) > self.limits.max_append_bytes * 4 // 3 + 4:
            raise ProtocolError(f"an append may carry at most {self.limits.max_append_bytes} bytes of audio; "
                                "send it in smaller pieces", "audio_too_large", "audio", append.event_id)
        try:
            pcm = base64.b64decode(append.audio, validate=True)
        except binascii.Error:
            raise ProtocolError("audio is not valid base64", "invalid_audio", "audio", append.event_id) from None
        if len(pcm) % 2:
            raise ProtocolError("audio must be whole 16-bit samples (an even number of bytes)", "invalid_audio",
                                "audio", append.event_id)
        samples = self.pcm(pcm)
        self.heard += samples.size
        self.turn.add(samples)
        if self.detector is not None:
            await self._detect(samples)
        while self.turn.held >= self._max_turn():
            await self._end_of_speech(self.turn.start + self._max_turn() - TAIL)
        self._maybe_decode_at_pause()
        self._maybe_decode_partial()

    async def _detect(self, samples: np.ndarray) -> None:
        """Speech started or stopped in these samples; outside speech only the prefix padding is kept."""
        assert self.detector is not None and self.config.turn_detection is not None
        padding = self.config.turn_detection.prefix_padding_ms * SAMPLE_RATE // 1000
        for boundary in self.detector.feed(samples):
            if boundary.kind == "started":
                self.turn.keep_from(boundary.sample - padding)
                await self.send(event("input_audio_buffer.speech_started", item_id=self.turn.item_id,
                                      audio_start_ms=_ms(max(0, boundary.sample - padding))))
            else:
                await self._end_of_speech(boundary.sample)
        if not self.detector.speaking:
            self.turn.keep_from(self.heard - padding)

    async def _end_of_speech(self, end: int) -> None:
        """Server VAD (or the turn limit) ends the turn at stream index ``end``: stopped, then committed."""
        if self.detector is not None:
            self.detector.reset()
        await self.send(event("input_audio_buffer.speech_stopped", item_id=self.turn.item_id,
                              audio_end_ms=_ms(end)))
        await self._commit(None, end + TAIL)

    async def _commit(self, event_id: str | None, end: int | None = None) -> None:
        """The turn up to stream index ``end`` (all of it when None), ``max_turn_s`` at most, goes to the decoder; the
        rest starts the next."""
        held = self.turn.samples()
        cut = min(held.size if end is None else max(0, end - self.turn.start), held.size, self._max_turn())
        if cut * 1000 < self.limits.min_commit_ms * SAMPLE_RATE:
            raise ProtocolError(f"the buffer holds {cut * 1000 // SAMPLE_RATE} ms of audio; a commit needs at least "
                                f"{self.limits.min_commit_ms} ms", "input_audio_buffer_commit_empty", None, event_id)
        committed, start = self.turn, self.turn.start
        decoded = self._decoded_to(start + cut)
        self._drop_partial()
        await self.send(event("input_audio_buffer.committed", previous_item_id=self.previous_item,
                              item_id=committed.item_id))
        self.previous_item = committed.item_id
        self.turn = Turn(new_id("item"), start + cut, [held[cut:]], held.size - cut)
        task = asyncio.create_task(self._complete(committed.item_id, held[:cut], start, self._last_final, decoded))
        self._last_final = task
        self._finals.add(task)
        task.add_done_callback(self._finals.discard)

    def _max_turn(self) -> int:
        """``max_turn_s`` in samples: the most audio one turn sends to the decoder (Whisper hears 30 s at a time)."""
        return int(self.limits.max_turn_s * SAMPLE_RATE)

    def _decoded_to(self, end: int) -> asyncio.Future[Transcription] | None:
        """The transcription under way of this turn's audio up to stream index ``end`` exactly, kept from the
        cancelling of the partial decodings at a commit; None when there is none."""
        partial = self._partial
        if partial is None or partial.turn is not self.turn or partial.end != end or partial.result.cancelled():
            return None
        self._partial = None
        partial.delta.cancel()
        return partial.result

    async def _complete(self, item_id: str, samples: np.ndarray, start: int, before: asyncio.Task[None] | None,
                        decoded: asyncio.Future[Transcription] | None) -> None:
        """The committed turn's transcript (``completed``), or why there is none (``failed``), sent after the turn
        ``before`` it, so captions arrive in the order they were spoken. ``decoded``: its decoding already under
        way, if any."""
        try:
            result = await (decoded if decoded is not None else self.transcribe(samples, self._options(), True))
        except Exception as error:  # the turn fails; the session goes on
            await _after(before)
            await self.send(event(f"{ITEM_EVENT}.failed", item_id=item_id, content_index=0, error=_failure(error)))
            return
        await _after(before)
        seconds = samples.size / SAMPLE_RATE
        text = result.text.strip()
        if self._choosing and result.model != self.routed:
            await self._chosen(result.model)
        if text:
            self.languages[result.language] = self.languages.get(result.language, 0.0) + seconds
            self.segments.append(Segment(start=round(start / SAMPLE_RATE, 3),
                                         end=round(start / SAMPLE_RATE + seconds, 3), text=text))
        await self.send(event(f"{ITEM_EVENT}.completed", item_id=item_id, content_index=0, transcript=text,
                              usage={"type": "duration", "seconds": round(seconds, 3)}))

    @property
    def _choosing(self) -> bool:
        """Whether the session named no model and its first turn has not picked one yet."""
        return self.config.model is None and self.model == self.routed

    async def _chosen(self, model: str) -> None:
        """The model routing chose from the first turn's language, kept for the session's other turns; a
        ``session.updated`` names it (and the ``transcript_id`` the store will keep the session under)."""
        self.model = model
        await self._send_updated()

    def _maybe_decode_partial(self) -> None:
        """Decode the growing turn again when ``delta_interval_s`` of audio came since the last decoding, unless
        it is in a pause, one of this session's turns is still being decoded, the replica's partials are all
        taken, or the session's model is not chosen yet (a delta would pay a language detection)."""
        if self._choosing:
            return
        detector = self.detector
        speaking = detector.speaking and detector.silent_since is None if detector is not None else self.turn.held > 0
        interval = self.limits.delta_interval_s * SAMPLE_RATE
        busy = self._decoding() or bool(self._finals)
        if not speaking or busy or self.turn.held - self.turn.decoded_at < interval:
            return
        partials = self.partials
        if partials is not None and not partials.take():
            return
        decoding = self._decode(self.turn.held, committed=False)
        if partials is not None:
            decoding.result.add_done_callback(lambda _: partials.give_back())

    def _maybe_decode_at_pause(self) -> None:
        """Decode the turn up to where it would be committed once a pause has lasted ``TAIL_MS``, as a committed
        turn (first in the Transcriber's lanes): if the pause ends the turn, the decoding is its ``completed``."""
        pause = self.detector.silent_since if self.detector is not None else None
        if pause is None or self.heard < pause + TAIL:
            return
        end, current = pause + TAIL, self._partial
        cut = end - self.turn.start
        if current is not None and current.end == end or cut * 1000 < self.limits.min_commit_ms * SAMPLE_RATE:
            return
        self._drop_partial()
        self._decode(cut, committed=True)

    def _decode(self, cut: int, committed: bool) -> Decoding:
        """Start decoding the turn's first ``cut`` samples, a delta to follow: the session's latest decoding."""
        turn = self.turn
        turn.decoded_at = turn.held
        result = asyncio.ensure_future(self.transcribe(turn.samples()[:cut], self._options(), committed))
        self._partial = Decoding(turn, turn.start + cut, result, asyncio.create_task(self._delta(turn, result)))
        return self._partial

    def _decoding(self) -> bool:
        """Whether a decoding of the growing turn is under way, or its delta still being sent."""
        return self._partial is not None and not self._partial.delta.done()

    async def _delta(self, turn: Turn, result: asyncio.Future[Transcription]) -> None:
        """The words this decoding and the one before agree on, past those already sent, as a ``delta``."""
        try:
            words = _words((await asyncio.shield(result)).text)
        except Exception as error:  # a partial that fails is skipped; the committed turn reports failures
            log.info("partial decoding of %s failed: %s", turn.item_id, error)
            return
        stable = agreed(turn.previous, words)
        turn.previous = words
        if stable > turn.sent and turn is self.turn:
            delta = " ".join(words[turn.sent:stable])
            await self.send(event(f"{ITEM_EVENT}.delta", item_id=turn.item_id, content_index=0,
                                  delta=delta if turn.sent == 0 else " " + delta))
            turn.sent = stable

    def _drop_partial(self) -> None:
        if self._partial is not None:
            self._partial.cancel()
            self._partial = None

    def _options(self) -> TranscribeOptions:
        config = self.config
        return TranscribeOptions(model=self.model, language=config.language, initial_prompt=config.prompt or None,
                                 timestamps=False)

    async def close(self) -> list[Segment]:
        """Stop decoding partials, wait for the committed turns' transcripts; all of them, in stream order."""
        self._drop_partial()
        if self._finals:
            await asyncio.gather(*self._finals, return_exceptions=True)
        return sorted(self.segments, key=lambda segment: segment.start)


async def _after(task: asyncio.Task[None] | None) -> None:
    """Once ``task`` has finished, however it finished."""
    if task is not None:
        await asyncio.wait([task])


def _ms(sample: int) -> int:
    return sample * 1000 // SAMPLE_RATE


def _failure(error: Exception) -> dict[str, Any]:
    """A failed turn's ``error`` object in OpenAI's shape; the ServiceError's message when there is one."""
    mapped = as_service_error(error)
    if mapped is None:
        log.exception("a realtime turn failed", exc_info=error)
        return {"type": "server_error", "code": "transcription_failed", "message": "internal error; see the logs",
                "param": None}
    return {"type": mapped.type, "code": mapped.code, "message": mapped.message, "param": mapped.param}
