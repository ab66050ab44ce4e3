"""Turning a source (YouTube video, media URL, or uploaded bytes) into captions or decoded audio.

YouTube captions come first (manual before auto-generated) because they cost no GPU time; yt-dlp
fetches the audio when there are none or when the request asks for ASR.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal
from urllib.parse import urlparse

from ray import serve

from deployments.audio import decode
from deployments.errors import InvalidRequest, ServiceError, SourceFailed
from deployments.media_download import BOT_CHECK_HINT, Limits, download_audio, expand_playlist, ytdlp_options
from deployments.metrics import ReplicaMetrics, memory_now
from deployments.network_guard import MARKER, guard, is_refusal
from deployments.schemas import Resolved
from deployments.youtube import CaptionsBlocked, NoCaptions, fetch_captions, video_id
from serve_app.settings import DownloaderSettings

SourceMode = Literal["auto", "captions", "asr"]


def content_key(kind: str, data: bytes) -> str:
    """A stable identity for content: the same bytes or URL always give the same key."""
    return f"{kind}:{hashlib.sha256(data).hexdigest()[:20]}"


def source_identity(url: str) -> str:
    """A source's key before anything is fetched: its YouTube video id, or a hash of its URL."""
    vid = video_id(url)
    return f"youtube:{vid}" if vid is not None else content_key("url", url.strip().encode())


class SourceResolver:
    """The downloader's logic without Ray: returns ``Resolved`` with samples as a numpy array."""

    def __init__(self, settings: DownloaderSettings) -> None:
        self.settings = settings
        self._ytdlp = ytdlp_options(settings.socket_timeout_s, settings.retries, settings.fragment_retries,
                                    settings.cookies_file)
        self._limits = Limits(settings.max_download_bytes, settings.max_audio_seconds, settings.download_timeout_s)

    def resolve(self, url: str, source: SourceMode = "auto", language: str | None = None) -> Resolved:
        """Captions or audio for a URL or bare YouTube id; every connection passes the network guard."""
        with self._guarded():
            vid = video_id(url)
            if vid is not None:
                return self._youtube(vid, source, language)
            return self._media_url(url.strip(), source)

    def _media_url(self, url: str, source: SourceMode) -> Resolved:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise InvalidRequest("url must be an http(s) URL or a YouTube video id", param="url")
        if source == "captions":
            raise InvalidRequest("source 'captions' needs a YouTube video", param="source")
        media = download_audio(url, self._ytdlp, self.settings.sample_rate, self._limits)
        return Resolved(key=source_identity(url), url=url, title=media.title,
                        duration=media.duration, kind="audio", audio=media.samples)

    @contextmanager
    def _guarded(self) -> Iterator[None]:
        """Refuse connections to forbidden addresses (after redirects too) with a 400 that says why."""
        settings = self.settings
        try:
            with guard(settings.allow_private_networks, settings.allowed_hosts):
                yield
        except ServiceError as error:
            if error.__cause__ is not None and is_refusal(error.__cause__):
                raise _refused(error.__cause__) from error
            raise
        except OSError as error:
            if is_refusal(error):
                raise _refused(error) from error
            raise

    def _youtube(self, vid: str, source: SourceMode, language: str | None) -> Resolved:
        canonical = f"https://www.youtube.com/watch?v={vid}"
        if source != "asr":
            languages = [language, *self.settings.caption_languages] if language else self.settings.caption_languages
            try:
                track_language, segments = fetch_captions(vid, languages, self.settings.youtube_base_url,
                                                          self.settings.socket_timeout_s)
                return Resolved(key=source_identity(vid), url=canonical, duration=segments[-1].end, kind="captions",
                                language=track_language, captions=segments)
            except NoCaptions as error:
                if source == "captions":
                    raise
                if not self.settings.allow_asr_fallback:
                    raise SourceFailed(f"{error.message}, and ASR fallback is disabled "
                                       "(downloader.allow_asr_fallback)", param="url", code=error.code) from error
            except CaptionsBlocked as blocked:
                if source == "captions":
                    raise
                return self._youtube_audio(vid, canonical, blocked)
        return self._youtube_audio(vid, canonical, None)

    def _youtube_audio(self, vid: str, canonical: str, blocked: CaptionsBlocked | None) -> Resolved:
        """ASR input for a video; when captions were refused for a bot check, a failure here says so."""
        watch_url = f"{self.settings.youtube_base_url.rstrip('/')}/watch?v={vid}"
        try:
            media = download_audio(watch_url, self._ytdlp, self.settings.sample_rate, self._limits)
        except ServiceError as error:
            if blocked is not None and blocked.code == "bot_check":
                raise SourceFailed(f"{BOT_CHECK_HINT} (audio download: {error.message})", param="url",
                                   code="bot_check") from error
            raise
        return Resolved(key=source_identity(vid), url=canonical, title=media.title, duration=media.duration,
                        kind="audio", audio=media.samples)

    def expand(self, url: str) -> list[str]:
        """The items of a playlist or channel URL (yt-dlp's flat extraction), or the URL itself."""
        with self._guarded():
            if video_id(url) is not None or not url.strip():
                return [url]
            return expand_playlist(url.strip(), self._ytdlp)

    def from_upload(self, data: bytes, filename: str | None = None) -> Resolved:
        """Decoded audio of uploaded bytes."""
        if not data:
            raise InvalidRequest("the uploaded file is empty", param="file")
        samples = decode(data, self.settings.sample_rate, max_seconds=self.settings.max_audio_seconds)
        return Resolved(key=content_key("upload", data), title=filename,
                        duration=len(samples) / self.settings.sample_rate, kind="audio", audio=samples)


def _refused(error: BaseException) -> InvalidRequest:
    """A 400 naming the refused host and address (from the guard's message, which libraries wrap)."""
    found = re.search(rf"{MARKER}: host '[^']*' resolves to \S+ \([^)]*\)", str(error))
    detail = found[0] if found else MARKER
    return InvalidRequest(f"the source is on a network this service may not reach ({detail}); internal media "
                          "servers go in downloader.allowed_hosts", param="url", code="forbidden_address")


@serve.deployment(name="Downloader")
class Downloader:
    """Serve wrapper: network and decoding work runs in threads so one slow source blocks no other."""

    def __init__(self, settings: DownloaderSettings) -> None:
        self.resolver = SourceResolver(settings)
        self.metrics = ReplicaMetrics("Downloader")
        self.metrics.start_sampler()

    async def resolve(self, url: str, source: SourceMode = "auto", language: str | None = None) -> Resolved:
        with self.metrics.track("resolve", "-") as tracked:
            resolved = await asyncio.to_thread(self.resolver.resolve, url, source, language)
            tracked.audio_seconds = resolved.duration if resolved.kind == "audio" else 0.0
        return resolved

    async def expand(self, url: str) -> list[str]:
        return await asyncio.to_thread(self.resolver.expand, url)

    def stats(self) -> dict:
        """This replica's memory now and its request figures."""
        return {**self.metrics.stats(), **memory_now()}

    async def from_upload(self, data: bytes, filename: str | None = None) -> Resolved:
        with self.metrics.track("upload", "-") as tracked:
            resolved = await asyncio.to_thread(self.resolver.from_upload, data, filename)
            tracked.audio_seconds = resolved.duration
        return resolved
