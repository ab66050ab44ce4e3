"""Past the graph's bound: sources beyond what the Downloader admits get 503 with Retry-After, not a queue."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMITTED, KEYED_HEADERS, Service

pytestmark = [pytest.mark.serve, pytest.mark.slow]


class HeldMedia:
    """A loopback media server whose downloads trickle a byte a second until ``released`` is set, then finish.

    Sources fetched from it hold their Downloader slots for as long as the test likes, at no cost in CPU, so that
    the bound alone decides what the graph admits, however fast this machine decodes.
    """

    def __init__(self, body: bytes) -> None:
        self.released = threading.Event()
        held = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                return

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                self.send_response(200)
                self.send_header("Content-Type", "audio/wav")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                sent = 0
                with contextlib.suppress(OSError):  # a probe that reads the headers alone hangs up
                    while not held.released.wait(1) and sent < len(body) - 1:
                        self.wfile.write(body[sent:sent + 1])
                        self.wfile.flush()
                        sent += 1
                    self.wfile.write(body[sent:])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/held.wav"

    def __enter__(self) -> HeldMedia:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def test_overload_is_503_with_retry_after(keyed_service: Service, speech: dict[str, Path]) -> None:
    """More sources at once than the Downloader admits: while the admitted ones are held, those past the bound get
    503 with Retry-After at once, rather than a queue without end, and every admitted source is transcribed once it
    is released. Half the excess must be refused while the rest are held (Serve's count is loose: see
    ``keyed_service``)."""
    service, admitted = keyed_service, sum(ADMITTED.values())
    excess = 6 * admitted

    async def burst(media: HeldMedia) -> tuple[list[httpx.Response], list[httpx.Response]]:
        async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=admitted + excess),
                                     headers=KEYED_HEADERS) as http:
            requests = [asyncio.ensure_future(http.post(f"{service.url}/v1/audio/transcriptions",
                                                        data={"url": media.url, "model": "whisper-1"}))
                        for _ in range(admitted + excess)]
            deadline = time.monotonic() + 120
            while sum(r.done() for r in requests) < excess // 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            answered_while_held = [r.result() for r in requests if r.done()]
            media.released.set()
            return answered_while_held, list(await asyncio.gather(*requests))

    with HeldMedia(speech["cooking"].read_bytes()) as media:
        early, responses = asyncio.run(burst(media))
    assert len(early) >= excess // 2 and {r.status_code for r in early} == {503}, [(r.status_code, r.text[:200])
                                                                                    for r in early]
    for rejected in early:
        assert rejected.headers["retry-after"] and rejected.json()["error"]["code"] == "overloaded", rejected.text
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 503} and statuses.count(200) <= admitted + excess // 2, statuses
    for answer in (r for r in responses if r.status_code == 200):
        assert "onions" in answer.json()["text"].lower(), answer.text
