"""The SSRF guard: the address classifier on values, and requests/yt-dlp against loopback canaries.

Traffic goes only to 127.0.0.1 and ::1. Private, metadata and public addresses appear only as values or in
fake resolver answers, never as a connection target.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import pickle
import socket
import socketserver
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
import yt_dlp
from yt_dlp.utils import DownloadError

from deployments import network_guard
from deployments.network_guard import (
    MARKER,
    ForbiddenAddress,
    install,
    is_forbidden,
    is_refusal,
    refuse_forbidden_addresses,
)

SENTINEL = "/__sentinel__"


class Canary(ThreadingHTTPServer):
    """A loopback HTTP server that records every accepted connection and request; ``redirect`` answers 302."""

    def __init__(self, host: str, family: socket.AddressFamily, redirect: str | None = None) -> None:
        self.address_family = family
        self.redirect = redirect
        self.connections: list[Any] = []
        self.paths: list[str] = []
        super().__init__((host, 0), _Handler)
        self.host = host
        self.port: int = self.server_address[1]

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse lookup of the host, which would send a DNS query off the machine."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Record the connection in the accepting thread, in accept order, before any handler runs."""
        self.connections.append(client_address)
        return True

    def settle(self) -> list[Any]:
        """Connections accepted before a sentinel request; FIFO accept makes this exact without sleeping."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        try:
            conn.request("GET", SENTINEL, headers={"Connection": "close"})
            conn.getresponse().read()
        finally:
            conn.close()
        return self.connections[:-1]


class _Handler(BaseHTTPRequestHandler):
    server: Canary

    def do_GET(self) -> None:
        """Record the path before answering, so a client that got an answer always finds it recorded."""
        if self.path != SENTINEL:
            self.server.paths.append(self.path)
        if self.server.redirect and self.path != SENTINEL:
            self.send_response(302)
            self.send_header("Location", self.server.redirect)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"ID3canary"
        self.send_response(200)
        self.send_header("Content-Type", "audio/mpeg")  # yt-dlp's generic extractor takes it as a direct link
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        return


@contextlib.contextmanager
def _serve(server: Canary) -> Iterator[Canary]:
    """Run a canary in a daemon thread while the block runs."""
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proxies from the environment would carry loopback requests elsewhere and hide the target from the guard."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def canary() -> Iterator[Canary]:
    """The target that must not be reached, on 127.0.0.1."""
    with _serve(Canary("127.0.0.1", socket.AF_INET)) as server:
        yield server


@pytest.fixture
def canary6() -> Iterator[Canary | None]:
    """The same on ::1, or None where the machine has no IPv6 loopback."""
    try:
        server = Canary("::1", socket.AF_INET6)
    except OSError:
        yield None
        return
    with _serve(server):
        yield server


class _QuietLogger:
    """A yt-dlp logger that keeps errors for inspection and drops the rest."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def debug(self, message: str) -> None:
        return

    info = warning = debug

    def error(self, message: str) -> None:
        self.errors.append(message)


def _ytdlp(url: str) -> Any:
    """yt-dlp's metadata extraction of a URL, as the downloader does it, without output."""
    options = {"quiet": True, "no_warnings": True, "logger": _QuietLogger(), "socket_timeout": 5, "cachedir": False}
    with yt_dlp.YoutubeDL(options) as ydl:
        return ydl.extract_info(url, download=False)


# --- the classifier, on values only ---------------------------------------------------------------------------

@pytest.mark.parametrize(("address", "reason"), [
    ("169.254.169.254", "cloud metadata"),
    ("fd00:ec2::254", "cloud metadata"),
    ("fd00:ec2::254%eth0", "cloud metadata"),
    ("::ffff:169.254.169.254", "cloud metadata"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("::1", "loopback"),
    ("::ffff:127.0.0.1", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "private"),
    ("fd00::1", "private"),
    ("fc00::1", "private"),
    ("::ffff:10.0.0.1", "private"),
    ("2002:a00:1::1", "private"),  # 6to4 around 10.0.0.1
    ("64:ff9b::a00:1", "private"),  # NAT64 around 10.0.0.1
    ("64:ff9b:1::1", "private"),  # local-use NAT64
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("::", "unspecified"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.2.1", "reserved"),  # documentation
    ("198.18.0.1", "reserved"),  # benchmarking
    ("2001:db8::1", "reserved"),  # documentation
    ("8.8.8.8", None),
    ("1.1.1.1", None),
    ("172.32.0.1", None),
    ("2606:4700:4700::1111", None),
    ("::ffff:8.8.8.8", None),
    ("2002:808:808::1", None),  # 6to4 around 8.8.8.8
    ("64:ff9b::808:808", None),  # NAT64 around 8.8.8.8
])
def test_classifier(address: str, reason: str | None) -> None:
    assert is_forbidden(address) == reason


@pytest.mark.parametrize("text", ["localhost", "127.1", "2130706433", "[::1]", ""])
def test_classifier_takes_only_ip_literals(text: str) -> None:
    with pytest.raises(ValueError):
        is_forbidden(text)


def test_refusal_message_pickle_and_recognition() -> None:
    error = ForbiddenAddress("evil.test", "10.0.0.1", "private")
    assert isinstance(error, OSError)
    assert str(error) == f"{MARKER}: host 'evil.test' resolves to 10.0.0.1 (private)"
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.host, copy.address, copy.reason, str(copy)) == (
        ForbiddenAddress, "evil.test", "10.0.0.1", "private", str(error))
    assert is_refusal(error)
    assert is_refusal(DownloadError(f"ERROR: Unable to download webpage: {error}"))
    assert not is_refusal(DownloadError("ERROR: Unable to download webpage: HTTP Error 404"))


def test_install_is_idempotent() -> None:
    install()
    wrapped = socket.getaddrinfo
    install()
    assert socket.getaddrinfo is wrapped is network_guard._guarded_getaddrinfo


# --- fake resolver answers: several addresses and rebinding, without traffic ----------------------------------

def _answer(*addresses: str) -> list[tuple[Any, ...]]:
    """A getaddrinfo answer holding the given addresses."""
    return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 80)) for a in addresses]


def test_an_answer_with_one_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    install()
    monkeypatch.setattr(network_guard, "_next_getaddrinfo", lambda *_: _answer("8.8.8.8", "10.0.0.1"))
    with refuse_forbidden_addresses(allow_private=False, allowed_hosts=[]), pytest.raises(ForbiddenAddress) as info:
        socket.getaddrinfo("mixed.test", 80)
    assert (info.value.host, info.value.address, info.value.reason) == ("mixed.test", "10.0.0.1", "private")


def test_rebinding_after_a_first_good_answer_is_refused_at_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    install()
    answers = iter([_answer("8.8.8.8"), _answer("169.254.169.254")])
    monkeypatch.setattr(network_guard, "_next_getaddrinfo", lambda *_: next(answers))
    with refuse_forbidden_addresses(allow_private=False, allowed_hosts=[]):
        socket.getaddrinfo("rebind.test", 443)
        with pytest.raises(ForbiddenAddress, match="cloud metadata"):
            socket.getaddrinfo("rebind.test", 443)


def test_allow_private_never_opens_the_cloud_metadata_address(monkeypatch: pytest.MonkeyPatch) -> None:
    install()
    monkeypatch.setattr(network_guard, "_next_getaddrinfo", lambda *_: _answer("169.254.169.254"))
    with refuse_forbidden_addresses(allow_private=True, allowed_hosts=[]), \
            pytest.raises(ForbiddenAddress, match="cloud metadata"):
        socket.getaddrinfo("metadata.test", 80)


# --- name resolution under the guard ----------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "2130706433", "0x7f000001", "0177.0.0.1", "::1",
                                  "::ffff:127.0.0.1", "127.1", "LOCALHOST", "10.1.2.3", "fd00::1", "169.254.169.254"])
def test_resolving_a_refused_address_raises(host: str) -> None:
    with refuse_forbidden_addresses(allow_private=False, allowed_hosts=[]), \
            pytest.raises(ForbiddenAddress, match=MARKER):
        socket.getaddrinfo(host, 80, 0, socket.SOCK_STREAM)


def test_resolving_an_allowed_address_answers() -> None:
    resolutions = [("8.8.8.8", False, []),  # a literal: resolved without traffic
                   ("127.0.0.1", True, []), ("LocalHost", False, ["localhost"]), ("::1", False, ["[0:0::1]"])]
    for host, allow_private, allowed_hosts in resolutions:
        with refuse_forbidden_addresses(allow_private=allow_private, allowed_hosts=allowed_hosts):
            assert socket.getaddrinfo(host, 80, 0, socket.SOCK_STREAM)


# --- end to end against loopback canaries --------------------------------------------------------------------

SPELLINGS_V4 = ["127.0.0.1", "localhost", "LOCALHOST", "127.1", "2130706433", "0x7f000001", "0177.0.0.1",
                "[::ffff:127.0.0.1]"]
SPELLINGS_V6 = ["[::1]", "[0:0:0:0:0:0:0:1]"]


def _refused_by_requests(url: str) -> None:
    """requests wraps the refusal in ConnectionError; the ForbiddenAddress text survives."""
    with pytest.raises(requests.ConnectionError) as info:
        requests.get(url, timeout=5)
    assert MARKER in str(info.value) and is_refusal(info.value)


def _refused_by_ytdlp(url: str) -> None:
    """yt-dlp reports a DownloadError whose text carries the refusal."""
    with pytest.raises(DownloadError) as info:
        _ytdlp(url)
    assert MARKER in str(info.value) and is_refusal(info.value)


def test_every_spelling_of_loopback_is_refused_before_connect(canary: Canary, canary6: Canary | None) -> None:
    spellings = SPELLINGS_V4 + SPELLINGS_V6
    with refuse_forbidden_addresses(allow_private=False, allowed_hosts=[]):
        for host in spellings:
            port = canary6.port if host in SPELLINGS_V6 and canary6 else canary.port
            url = f"http://{host}:{port}/{host.strip('[]')}"
            _refused_by_requests(url)
            _refused_by_ytdlp(url)
    assert canary.settle() == [] and canary.paths == []
    if canary6 is not None:
        assert canary6.settle() == [] and canary6.paths == []


def test_redirect_from_an_allowed_host_to_a_forbidden_one_is_refused(canary: Canary) -> None:
    target = f"http://127.0.0.1:{canary.port}/secret"
    with _serve(Canary("127.0.0.1", socket.AF_INET, redirect=target)) as redirector:
        start = f"http://localhost:{redirector.port}/start"
        with refuse_forbidden_addresses(allow_private=False, allowed_hosts=["localhost"]):
            _refused_by_requests(start)
            _refused_by_ytdlp(start)
        assert redirector.paths == ["/start", "/start"]  # the allowed host was reached both times
    assert canary.settle() == [] and canary.paths == []


def test_allowed_host_and_allow_private_let_the_request_through(canary: Canary) -> None:
    with refuse_forbidden_addresses(allow_private=True, allowed_hosts=[]):
        assert requests.get(f"http://127.0.0.1:{canary.port}/private", timeout=5).content == b"ID3canary"
    with refuse_forbidden_addresses(allow_private=False, allowed_hosts=["127.0.0.1"]):
        assert requests.get(f"http://127.0.0.1:{canary.port}/ip", timeout=5).ok
    with refuse_forbidden_addresses(allow_private=False, allowed_hosts=["LocalHost"]):
        assert _ytdlp(f"http://localhost:{canary.port}/name")["webpage_url"].endswith("/name")
    assert canary.paths == ["/private", "/ip", "/name"]


def test_the_guard_is_scoped_to_its_context(canary: Canary) -> None:
    url = f"http://127.0.0.1:{canary.port}/"
    assert requests.get(url, timeout=5).ok
    with refuse_forbidden_addresses(allow_private=False, allowed_hosts=[]):
        _refused_by_requests(url)
    assert requests.get(url, timeout=5).ok
    assert canary.paths == ["/", "/"]


def test_the_guard_follows_asyncio_to_thread(canary: Canary) -> None:
    url = f"http://127.0.0.1:{canary.port}/"

    async def fetch_inside_and_outside() -> None:
        with refuse_forbidden_addresses(allow_private=False, allowed_hosts=[]):
            with pytest.raises(requests.ConnectionError, match=MARKER):
                await asyncio.to_thread(requests.get, url, timeout=5)
            with pytest.raises(DownloadError, match=MARKER):
                await asyncio.to_thread(_ytdlp, url)
        assert (await asyncio.to_thread(requests.get, url, timeout=5)).ok

    asyncio.run(fetch_inside_and_outside())
    assert canary.paths == ["/"]


# --- HLS: segments must not reach a refused address through ffmpeg --------------------------------------------

def _playlist(canary: Canary, kind: str) -> str:
    """A media playlist whose key and segments are on the refused canary; ``kind`` "vod", "sample-aes" or "live".

    yt-dlp hands live playlists, and playlists with features its native downloader lacks (SAMPLE-AES), to
    ffmpeg, a subprocess whose connections the guard in this process cannot see.
    """
    target = f"http://127.0.0.1:{canary.port}"
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:4", "#EXT-X-MEDIA-SEQUENCE:0"]
    if kind == "sample-aes":
        lines.append(f'#EXT-X-KEY:METHOD=SAMPLE-AES,URI="{target}/key",IV=0x00000000000000000000000000000001')
    if kind != "live":
        lines.append("#EXT-X-PLAYLIST-TYPE:VOD")
    for index in range(3):
        lines += ["#EXTINF:4.0,", f"{target}/segment{index}.ts"]
    if kind != "live":
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


class _PlaylistHandler(BaseHTTPRequestHandler):
    server: Any

    def do_GET(self) -> None:
        body = self.server.playlists.get(self.path.split("?")[0], "").encode()
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "application/vnd.apple.mpegurl")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *_: object) -> None:
        return


@pytest.mark.parametrize(("kind", "code"), [("vod", "forbidden_address"), ("sample-aes", "source_failed"),
                                           ("live", "live_stream")])
def test_hls_from_an_allowed_host_never_reaches_a_refused_segment_host(canary: Canary, kind: str, code: str) -> None:
    """The downloader's own path: yt-dlp fetches segments natively (refused by the guard) or not at all."""
    from deployments.downloader import SourceResolver
    from deployments.errors import ServiceError
    from deployments.settings import DownloaderSettings

    resolver = SourceResolver(DownloaderSettings(allowed_hosts=["localhost"], socket_timeout_s=5, retries=0,
                                                 fragment_retries=0, download_timeout_s=30))
    playlists = ThreadingHTTPServer(("127.0.0.1", 0), _PlaylistHandler)
    playlists.playlists = {f"/{kind}.m3u8": _playlist(canary, kind)}
    threading.Thread(target=playlists.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with pytest.raises(ServiceError) as info:
            list(resolver.resolve(f"http://localhost:{playlists.server_address[1]}/{kind}.m3u8", "asr"))
    finally:
        playlists.shutdown()
        playlists.server_close()
    assert canary.settle() == [] and canary.paths == [], f"{kind}: the canary was reached ({info.value.message})"
    assert info.value.code == code, info.value.message
