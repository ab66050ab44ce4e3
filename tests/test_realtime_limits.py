"""``/v1/realtime``'s gate and limits, on the app built in-process (no Ray, no model): API keys by header and
by the browsers' subprotocol, sessions per replica refused with close code 1013, the idle and length limits.

None of these reaches the graph: a refused or idle session never sends a turn.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from serve_app.access import key_hash
from serve_app.app import Graph, create_app
from serve_app.realtime import CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TRY_AGAIN
from serve_app.settings import AppSettings

KEY = "realtime-test-key"
URL = "/v1/realtime?intent=transcription"


def app_client(**realtime: Any) -> TestClient:
    settings = AppSettings.model_validate({"ingress": {"api_key_hashes": [key_hash(KEY)]}, "realtime": realtime})
    return TestClient(create_app(Graph(settings, *([None] * 4))))  # no handles: nothing here reaches the graph


def refused_with(connection: Any) -> tuple[dict[str, Any], int]:
    """The error event a refused connection gets, and the code it is closed with."""
    error = connection.receive_json()
    with pytest.raises(WebSocketDisconnect) as closed:
        connection.receive_json()
    return error["error"], closed.value.code


def test_a_key_opens_a_session_by_header_or_by_subprotocol_and_nothing_else_does() -> None:
    client = app_client()
    with client.websocket_connect(URL, headers={"Authorization": f"Bearer {KEY}"}) as by_header:
        assert by_header.receive_json()["type"] == "session.created"
    with client.websocket_connect(URL, subprotocols=["realtime", f"openai-insecure-api-key.{KEY}"]) as by_protocol:
        assert by_protocol.accepted_subprotocol == "realtime"
        assert by_protocol.receive_json()["type"] == "session.created"
    for headers in ({}, {"Authorization": "Bearer wrong-key"}):
        with client.websocket_connect(URL, headers=headers) as refused:
            error, code = refused_with(refused)
            assert code == CLOSE_POLICY and error["code"] == "invalid_api_key", error
    with client.websocket_connect("/v1/realtime?intent=conversation", headers={"Authorization": f"Bearer {KEY}"}) as c:
        error, code = refused_with(c)
        assert code == CLOSE_POLICY and error["code"] == "unsupported_intent"


def test_past_the_session_limit_a_new_session_is_refused_and_a_closed_one_frees_its_place() -> None:
    client, auth = app_client(max_sessions=2), {"Authorization": f"Bearer {KEY}"}
    with client.websocket_connect(URL, headers=auth) as first, client.websocket_connect(URL, headers=auth) as second:
        for connection in (first, second):
            assert connection.receive_json()["type"] == "session.created"
        with client.websocket_connect(URL, headers=auth) as third:
            error, code = refused_with(third)
            assert code == CLOSE_TRY_AGAIN and error["code"] == "session_limit_reached", error
    with client.websocket_connect(URL, headers=auth) as later:
        assert later.receive_json()["type"] == "session.created"


@pytest.mark.parametrize(("limits", "code"), [({"idle_timeout_s": 0.3}, "idle_timeout"),
                                              ({"max_session_s": 0.3, "idle_timeout_s": 30}, "session_expired")])
def test_an_idle_or_overlong_session_is_told_why_and_closed(limits: dict[str, float], code: str) -> None:
    with app_client(**limits).websocket_connect(URL, headers={"Authorization": f"Bearer {KEY}"}) as connection:
        assert connection.receive_json()["type"] == "session.created"
        events = []
        with pytest.raises(WebSocketDisconnect) as closed:
            while True:
                events.append(connection.receive_json())
    assert closed.value.code == CLOSE_NORMAL
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == code, events
