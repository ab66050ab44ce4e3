"""``/v1/realtime?intent=transcription``: OpenAI's Realtime transcription session over a WebSocket.

The route is thin: it checks the caller's key (``Authorization: Bearer`` or, from browsers, the
``openai-insecure-api-key.<key>`` subprotocol), admits at most ``realtime.max_sessions`` sessions per
Ingress replica (one more is refused with close code 1013, never queued), and relays messages between
the socket and a ``TranscriptionSession`` until the client leaves, goes quiet for ``idle_timeout_s`` or
stays past ``max_session_s``. Turns go to the Transcriber through its handle as ``live`` windows, which
take the batcher's first lanes. With ``store`` (a query parameter or session field) the session's
transcript is kept at close like any other, searchable with its turns' times.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from deployments.audio import SAMPLE_RATE
from deployments.errors import RateLimited, Unauthorized
from deployments.schemas import Segment, TimedText, TranscribeOptions, Transcript, Transcription
from serve_app.access import AccessControl
from serve_app.realtime_protocol import SessionConfig, error_event
from serve_app.realtime_session import SessionLimits, Slots, Transcribe, TranscriptionSession
from serve_app.settings import RealtimeSettings

if TYPE_CHECKING:
    from serve_app.app import Graph

KEY_SUBPROTOCOL = "openai-insecure-api-key."
CLOSE_POLICY = 1008
"""Close code for a caller that may not open a session (no or a wrong key, the wrong intent)."""
CLOSE_TRY_AGAIN = 1013
"""Close code for a session refused because this replica has ``max_sessions`` open: try again later."""
CLOSE_NORMAL = 1000

router = APIRouter()


def presented_key(websocket: WebSocket) -> str | None:
    """The ``Authorization`` header, or the key a browser sends as a subprotocol, as an Authorization value."""
    header = websocket.headers.get("authorization")
    if header:
        return header
    for protocol in websocket.scope.get("subprotocols", []):
        if protocol.startswith(KEY_SUBPROTOCOL):
            return "Bearer " + protocol[len(KEY_SUBPROTOCOL):]
    return None


def refusal(websocket: WebSocket, intent: str | None) -> tuple[dict[str, Any], int] | None:
    """Why this connection may not open a session (its error event and close code), or None."""
    access: AccessControl = websocket.app.state.access
    client = websocket.client.host if websocket.client else "unknown"
    try:
        access.check(websocket.url.path, presented_key(websocket), client)
    except (Unauthorized, RateLimited) as error:
        return error_event(error.message, error.code, kind=error.type), CLOSE_POLICY
    if intent not in (None, "transcription"):
        return error_event(f"intent={intent!r} is not served here; connect with intent=transcription",
                           "unsupported_intent", "intent"), CLOSE_POLICY
    slots: Slots = websocket.app.state.realtime_slots
    if not slots.take():
        return error_event(f"this server has {slots.limit} realtime sessions open, its limit; try again later",
                           "session_limit_reached", kind="server_error"), CLOSE_TRY_AGAIN
    return None


class Socket:
    """Sends events on the WebSocket one at a time; after the client has gone, they are dropped."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket, self.gone, self._lock = websocket, False, asyncio.Lock()

    async def send(self, event: dict[str, Any]) -> None:
        async with self._lock:
            if self.gone:
                return
            try:
                await self.websocket.send_text(json.dumps(event))
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.gone = True

    async def close(self, code: int, reason: str) -> None:
        async with self._lock:
            if not self.gone:
                self.gone = True
                with contextlib.suppress(RuntimeError, OSError):
                    await self.websocket.close(code, reason)


def live_decoder(graph: Graph) -> Transcribe:
    """Turns to the Transcriber in its live lanes: committed turns first, then partial decodings."""
    async def transcribe(samples: np.ndarray, options: TranscribeOptions, committed: bool) -> Transcription:
        return await graph.transcriber.transcribe.remote(samples, options, live="turn" if committed else "partial")
    return transcribe


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket, intent: str | None = None, store: bool = False) -> None:
    """A Realtime transcription session: OpenAI's client events in, its server events out."""
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol="realtime" if "realtime" in offered else None)
    socket, refused = Socket(websocket), refusal(websocket, intent)
    if refused is not None:
        await socket.send(refused[0])
        await socket.close(refused[1], refused[0]["error"]["message"][:120])
        return
    graph: Graph = websocket.app.state.graph
    settings = graph.settings.realtime
    try:
        session = TranscriptionSession(live_decoder(graph), socket.send, limits(settings), SessionConfig(store=store),
                                       check_model=graph.pipeline.check_model,
                                       partials=websocket.app.state.realtime_partials, routed=routed_name(graph))
        await session.start()
        reason = await relay(websocket, session, settings)
        if reason is not None:
            await socket.send(error_event(reason[1], reason[0], kind="invalid_request_error"))
            await socket.close(CLOSE_NORMAL, reason[1][:120])
        segments = await session.close()
        if session.transcript_id is not None and segments:
            await keep(graph, session, segments)
    finally:
        websocket.app.state.realtime_slots.give_back()
        await socket.close(CLOSE_NORMAL, "session over")


def routed_name(graph: Graph) -> str | None:
    """The transcriber's routed name, when it routes: what a session naming no model decodes with."""
    routing = graph.settings.transcriber.routing
    return None if routing is None else routing.name


def limits(settings: RealtimeSettings) -> SessionLimits:
    return SessionLimits(max_append_bytes=settings.max_append_bytes, delta_interval_s=settings.delta_interval_s)


async def relay(websocket: WebSocket, session: TranscriptionSession,
                settings: RealtimeSettings) -> tuple[str, str] | None:
    """Client messages to the session until the client leaves (None) or a limit ends it: (code, message)."""
    ends = time.monotonic() + settings.max_session_s
    while True:
        left = ends - time.monotonic()
        try:
            message = await asyncio.wait_for(websocket.receive(), min(settings.idle_timeout_s, max(left, 0)))
        except asyncio.TimeoutError:
            if time.monotonic() >= ends:
                return "session_expired", f"the session reached its limit of {settings.max_session_s:g} s"
            return "idle_timeout", f"nothing was received for {settings.idle_timeout_s:g} s"
        if message["type"] == "websocket.disconnect":
            return None
        await session.receive(message["text"] if message.get("text") is not None else message.get("bytes", b""))


async def keep(graph: Graph, session: TranscriptionSession, segments: list[Segment]) -> None:
    """The session's turns as a stored transcript, with passages for search."""
    passages = await graph.embedder.embed_transcript.remote(segments)
    timed = [TimedText(start=s.start, end=s.end, text=s.text) for s in segments]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    transcript = Transcript(
        id=f"realtime:{session.id}", url=None, title=f"Realtime session {started}",
        duration_s=round(session.heard / SAMPLE_RATE, 3), source="asr", language=session.language,
        model=session.model, text=" ".join(s.text for s in segments), segments=timed,
        chunks=[TimedText(start=p.start, end=p.end, text=p.text) for p in passages],
        embedding_dim=len(passages[0].vector or []) if passages else None)
    await graph.jobs.keep.remote(transcript, passages)
