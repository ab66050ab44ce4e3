"""OpenAI's Realtime transcription protocol: the client events a session accepts and the server events it sends.

Client events are pydantic models that mirror OpenAI's field by field, in the current form
(``session.update`` with ``session.type = "transcription"`` and ``audio.input``) and the beta form that
deployed clients still send (``transcription_session.update`` with ``input_audio_format: "pcm16"``). Both
are read into one ``SessionConfig``. Fields this service does not act on (noise reduction, ``include``)
are accepted and ignored, as OpenAI's clients send them; a wrong type or value in a field it reads is an
``invalid_request_error`` naming the field.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

INPUT_RATE = 24000
"""The only input format: PCM16, little-endian, mono at 24 kHz (OpenAI's ``audio/pcm``)."""


class Lenient(BaseModel):
    """A part of an event: unknown fields are OpenAI's and ignored, known ones are checked."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class ServerVad(Lenient):
    """Server-side voice activity detection: a turn ends after ``silence_duration_ms`` of silence."""

    type: Literal["server_vad"]
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(300, ge=0, le=5000)
    silence_duration_ms: int = Field(500, ge=100, le=10000)


class Transcription(Lenient):
    """Which model transcribes, in which language, with which prompt."""

    model: str | None = None
    language: str | None = Field(None, min_length=2, max_length=8)
    prompt: str | None = Field(None, max_length=2000)


class PcmFormat(Lenient):
    type: Literal["audio/pcm"]
    rate: Literal[24000] = 24000


class AudioInput(Lenient):
    format: PcmFormat | None = None
    transcription: Transcription | None = None
    turn_detection: ServerVad | None = None


class AudioConfig(Lenient):
    input: AudioInput | None = None


class Session(Lenient):
    """``session`` of a current ``session.update``; ``store`` is this service's extension."""

    type: Literal["transcription"]
    audio: AudioConfig | None = None
    store: bool | None = None


class BetaSession(Lenient):
    """``session`` of a beta ``transcription_session.update``."""

    input_audio_format: Literal["pcm16"] | None = None
    input_audio_transcription: Transcription | None = None
    turn_detection: ServerVad | None = None
    store: bool | None = None


class Event(Lenient):
    """A client event; ``event_id`` (optional) is echoed in the ``error`` it may cause."""

    event_id: str | None = None


class SessionUpdate(Event):
    type: Literal["session.update"]
    session: Session


class BetaSessionUpdate(Event):
    type: Literal["transcription_session.update"]
    session: BetaSession


class Append(Event):
    type: Literal["input_audio_buffer.append"]
    audio: str


class Commit(Event):
    type: Literal["input_audio_buffer.commit"]


class Clear(Event):
    type: Literal["input_audio_buffer.clear"]


ClientEvent = Annotated[SessionUpdate | BetaSessionUpdate | Append | Commit | Clear, Field(discriminator="type")]
_CLIENT_EVENT: TypeAdapter[ClientEvent] = TypeAdapter(ClientEvent)


class ProtocolError(Exception):
    """A client event this session cannot act on; it becomes an ``error`` event and the session goes on."""

    def __init__(self, message: str, code: str, param: str | None = None, event_id: str | None = None) -> None:
        super().__init__(message)
        self.message, self.code, self.param, self.event_id = message, code, param, event_id


def parse_event(text: str) -> SessionUpdate | BetaSessionUpdate | Append | Commit | Clear:
    """One client event from a WebSocket text message, or a ProtocolError that says what is wrong with it."""
    try:
        return _CLIENT_EVENT.validate_json(text)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        kind = "invalid_json" if first["type"] == "json_invalid" else "invalid_event"
        raise ProtocolError(f"{where or 'event'}: {first['msg']}" if where else first["msg"], kind,
                            param=where or None, event_id=_event_id(text)) from None


def _event_id(text: str) -> str | None:
    """The ``event_id`` of a message that failed validation, when it has one, for the error to point at."""
    try:
        value = TypeAdapter(dict[str, Any]).validate_json(text).get("event_id")
    except ValidationError:
        return None
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class SessionConfig:
    """What a session acts on: the transcription options, turn detection (None: the client commits), storing."""

    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    turn_detection: ServerVad | None = ServerVad(type="server_vad")
    store: bool = False

    def updated(self, event: SessionUpdate | BetaSessionUpdate) -> SessionConfig:
        """This config with what the update sets; a field the update leaves out keeps its value."""
        detection: AudioInput | BetaSession | None
        if isinstance(event, SessionUpdate):
            audio_input = event.session.audio.input if event.session.audio else None
            transcription = audio_input.transcription if audio_input else None
            detection = audio_input
        else:
            transcription = event.session.input_audio_transcription
            detection = event.session
        config = self
        if transcription is not None:
            fields = transcription.model_fields_set
            config = replace(config, **{name: getattr(transcription, name) for name in fields})
        if detection is not None and "turn_detection" in detection.model_fields_set:
            config = replace(config, turn_detection=detection.turn_detection)
        store = event.session.store
        return config if store is None else replace(config, store=store)

    def describe(self, session_id: str, beta: bool, chosen: str | None = None) -> dict[str, Any]:
        """The session object of ``session.created``/``updated``, in the form (current or beta) the client spoke;
        ``chosen``: the model the service decodes with when the client names none."""
        model = self.model or chosen or "whisper-1"
        transcription = {"model": model, "language": self.language, "prompt": self.prompt or ""}
        detection = None if self.turn_detection is None else self.turn_detection.model_dump()
        if beta:
            return {"id": session_id, "object": "realtime.transcription_session", "input_audio_format": "pcm16",
                    "input_audio_transcription": transcription, "turn_detection": detection, "store": self.store}
        return {"id": session_id, "object": "realtime.transcription_session", "type": "transcription",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": INPUT_RATE},
                                    "transcription": transcription, "turn_detection": detection}},
                "store": self.store}


_counter = itertools.count()


def new_id(prefix: str) -> str:
    """An id in OpenAI's style (``item_…``, ``event_…``, ``sess_…``), unique in this process."""
    return f"{prefix}_{uuid.uuid4().hex[:16]}{next(_counter):04x}"


def event(kind: str, **fields: Any) -> dict[str, Any]:
    """A server event of type ``kind`` with its own ``event_id``."""
    return {"type": kind, "event_id": new_id("event"), **fields}


def error_event(message: str, code: str, param: str | None = None, event_id: str | None = None,
                kind: str = "invalid_request_error") -> dict[str, Any]:
    """OpenAI's ``error`` event; ``event_id`` in the error is the client event that caused it."""
    return event("error", error={"type": kind, "code": code, "message": message, "param": param,
                                 "event_id": event_id})
