"""A local stand-in for the YouTube endpoints the network makes unreachable here.

It serves, on 127.0.0.1, the same formats YouTube does for the calls youtube-transcript-api makes (the
watch page with its INNERTUBE_API_KEY, the innertube player JSON with caption tracks, the timedtext
XML), and a watch page whose ``<audio>`` element the real yt-dlp downloads through its generic
extractor. The downloader reaches it through ``downloader.youtube_base_url``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

BOT_CHECK = "Sign in to confirm you\u2019re not a bot"


@dataclass
class FakeVideo:
    """One video: its title, audio file, manual and generated caption tracks (None: absent), and the lines YouTube's
    caption translation gives in each language it offers (``translations``; none: its tracks are not translatable)."""

    title: str
    audio: Path | None = None
    captions: list[tuple[float, float, str]] | None = None
    auto_captions: list[tuple[float, float, str]] | None = None
    language: str = "en"
    translations: dict[str, list[tuple[float, float, str]]] = field(default_factory=dict)
    playability: dict = field(default_factory=lambda: {"status": "OK"})


class FakeYouTube:
    """A threaded HTTP server on a free loopback port, holding a registry of fake videos."""

    def __init__(self) -> None:
        self.videos: dict[str, FakeVideo] = {}
        self.requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeYouTube:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                return

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                fake.requests.append(f"GET {self.path}")
                url = urlparse(self.path)
                query = parse_qs(url.query)
                vid = query.get("v", [""])[0]
                video = fake.videos.get(vid)
                if url.path == "/watch":
                    page = fake.watch_page(vid, video or FakeVideo(title="YouTube"))
                    self._send(200, page.encode(), "text/html; charset=utf-8")
                elif url.path == "/api/timedtext" and video is not None:
                    if "tlang" in query:
                        track = video.translations.get(query["tlang"][0])
                    else:
                        track = video.auto_captions if query.get("kind") == ["asr"] else video.captions
                    self._send(200, fake.timedtext(track or []).encode(), "text/xml; charset=utf-8")
                elif url.path.startswith("/media/"):
                    video = fake.videos.get(Path(url.path).stem)
                    if video is None or video.audio is None:
                        self._send(404, b"not found", "text/plain")
                    else:
                        self._send(200, video.audio.read_bytes(), "audio/wav")
                else:
                    self._send(404, b"not found", "text/plain")

            def do_POST(self) -> None:  # noqa: N802
                fake.requests.append(f"POST {self.path}")
                length = int(self.headers.get("Content-Length", "0"))
                payload = json.loads(self.rfile.read(length) or b"{}")
                video = fake.videos.get(payload.get("videoId", ""))
                if urlparse(self.path).path != "/youtubei/v1/player" or video is None:
                    body = {"playabilityStatus": {"status": "ERROR", "reason": "This video is unavailable"}}
                else:
                    body = fake.player(payload["videoId"], video)
                self._send(200, json.dumps(body).encode(), "application/json")

        return Handler

    @staticmethod
    def watch_page(vid: str, video: FakeVideo) -> str:
        """The watch page: the innertube key youtube-transcript-api reads, and an audio element."""
        audio = f'<audio controls src="/media/{vid}.wav"></audio>' if video.audio else ""
        return (
            f"<!DOCTYPE html><html><head><title>{escape(video.title)}</title>"
            f'<meta property="og:title" content="{escape(video.title)}"></head><body>'
            f'<script>ytcfg.set({{"INNERTUBE_API_KEY": "fake-innertube-key"}});</script>{audio}</body></html>'
        )

    @staticmethod
    def player(vid: str, video: FakeVideo) -> dict:
        """The innertube player response, with a caption track for each track the video has."""
        body: dict = {"playabilityStatus": video.playability, "videoDetails": {"videoId": vid, "title": video.title}}
        tracks = []
        for kind, lines in (("", video.captions), ("asr", video.auto_captions)):
            if lines is not None:
                base = f"https://www.youtube.com/api/timedtext?v={vid}&lang={video.language}"
                track = {"baseUrl": base + (f"&kind={kind}" if kind else ""),
                         "name": {"runs": [{"text": "English"}]}, "languageCode": video.language,
                         "isTranslatable": bool(video.translations)}
                if kind:
                    track["kind"] = kind
                tracks.append(track)
        if tracks:
            languages = [{"languageCode": code, "languageName": {"runs": [{"text": code}]}}
                         for code in video.translations]
            body["captions"] = {"playerCaptionsTracklistRenderer": {"captionTracks": tracks,
                                                                    "translationLanguages": languages}}
        return body

    @staticmethod
    def timedtext(track: list[tuple[float, float, str]]) -> str:
        """A caption track in YouTube's timedtext XML format."""
        lines = "".join(f'<text start="{start}" dur="{dur}">{escape(text)}</text>' for start, dur, text in track)
        return f'<?xml version="1.0" encoding="utf-8" ?><transcript>{lines}</transcript>'
