"""Turning a source (YouTube video, media URL, or uploaded bytes) into captions or windows of decoded audio.

YouTube captions come first (manual before auto-generated) because they cost no GPU time; yt-dlp
fetches the audio when there are none or when the request asks for ASR. Audio leaves as windows of
speech cut at silences (``deployments.windows``), decoded a block at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from contextlib import ExitStack, aclosing, contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.audio import SAMPLE_RATE, decode_blocks
from deployments.errors import InvalidRequest, ServiceError, SourceFailed
from deployments.fanout import SourceRoute, transcribe_windows
from deployments.handles import ServiceHandle
from deployments.media_download import BOT_CHECK_HINT, Limits, downloaded, expand_playlist, ytdlp_options
from deployments.metrics import ReplicaMetrics
from deployments.model_cache import trim_heap
from deployments.network_guard import MARKER, is_refusal, refuse_forbidden_addresses
from deployments.schemas import AudioEnd, AudioWindow, Resolved, SourceMode, TranscribedWindow, TranscribeOptions
from deployments.settings import DownloaderSettings, RoutingSettings
from deployments.stage_timing import Record
from deployments.windows import load_vad, speech_windows
from deployments.youtube import CaptionsBlocked, NoCaptions, fetch_captions, video_id

Found = tuple[Resolved, Path | None]
"""A source's header, and for audio the downloaded file its windows come from."""
T = TypeVar("T")
Transcribed = Resolved | TranscribedWindow | AudioEnd
"""What the deployment streams: the header, each window's transcription, the decoded duration."""


def content_key(kind: str, data: bytes) -> str:
    """A stable identity for content: the same bytes or URL always give the same key."""
    return f"{kind}:{hashlib.sha256(data).hexdigest()[:20]}"


def source_identity(url: str) -> str:
    """A source's key before anything is fetched: its YouTube video id, or a hash of its URL."""
    vid = video_id(url)
    return f"youtube:{vid}" if vid is not None else content_key("url", url.strip().encode())


class SourceResolver:
    """The downloader's logic without Ray: returns ``Resolved`` with samples as a numpy array."""

    def __init__(self, settings: DownloaderSettings, record: Record | None = None) -> None:
        self.settings = settings
        self.record = record
        """Hears (stage, seconds): ``audio_decode`` for each block ffmpeg decodes, ``vad`` for each search."""
        self._ytdlp = ytdlp_options(settings.socket_timeout_s, settings.retries, settings.fragment_retries,
                                    settings.cookies_file)
        self._limits = Limits(settings.max_download_bytes, settings.max_audio_seconds, settings.download_timeout_s)

    def resolve(self, url: str, source: SourceMode = "auto", language: str | None = None,
                vad: bool = True) -> Generator[Resolved | AudioWindow | AudioEnd, None, None]:
        """Captions for a URL or bare YouTube id (one item), or an audio header, its windows and their end.

        Every connection (captions, download) passes the network guard; the download is kept on disk
        only while its windows are decoded, one block at a time.
        """
        with ExitStack() as files:
            with self._network_policy():
                vid = video_id(url)
                if vid is not None:
                    header, media = self._youtube(vid, source, language, files)
                else:
                    header, media = self._media_url(url.strip(), source, files)
            yield header
            if media is not None:
                yield from self._windows(media, "url", vad)

    def from_upload(self, data: bytes, filename: str | None = None,
                    vad: bool = True) -> Generator[Resolved | AudioWindow | AudioEnd, None, None]:
        """An audio header for uploaded bytes, then their windows and their end."""
        if not data:
            raise InvalidRequest("the uploaded file is empty", param="file")
        yield Resolved(key=content_key("upload", data), title=filename, duration=0.0, kind="audio")
        yield from self._windows(data, "file", vad)

    def _windows(self, media: bytes | Path, param: str, vad: bool) -> Iterator[AudioWindow | AudioEnd]:
        """The media's speech windows as it is decoded, then the decoded duration."""
        settings = self.settings
        blocks = decode_blocks(media, SAMPLE_RATE, param, settings.max_audio_seconds, settings.decode_block_s)
        try:
            samples = yield from speech_windows(timed(blocks, "audio_decode", self.record), settings.window_s, vad,
                                                SAMPLE_RATE, self.record)
        finally:
            trim_heap()  # the blocks' pages go back to the system, not to a heap that only grows
        yield AudioEnd(duration=samples / SAMPLE_RATE)

    def _media_url(self, url: str, source: SourceMode, files: ExitStack) -> Found:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise InvalidRequest("url must be an http(s) URL or a YouTube video id", param="url")
        if source == "captions":
            raise InvalidRequest("source 'captions' needs a YouTube video", param="source")
        media = files.enter_context(downloaded(url, self._ytdlp, self._limits))
        return Resolved(key=source_identity(url), url=url, title=media.title, duration=media.duration,
                        kind="audio"), media.path

    @contextmanager
    def _network_policy(self) -> Iterator[None]:
        """Refuse connections to forbidden addresses (after redirects too) with a 400 that says why."""
        settings = self.settings
        try:
            with refuse_forbidden_addresses(settings.allow_private_networks, settings.allowed_hosts):
                yield
        except ServiceError as error:
            if error.__cause__ is not None and is_refusal(error.__cause__):
                raise _refused(error.__cause__) from error
            raise
        except OSError as error:
            if is_refusal(error):
                raise _refused(error) from error
            raise

    def _youtube(self, vid: str, source: SourceMode, language: str | None, files: ExitStack) -> Found:
        canonical = f"https://www.youtube.com/watch?v={vid}"
        if source != "asr":
            languages = [language, *self.settings.caption_languages] if language else self.settings.caption_languages
            try:
                track = fetch_captions(vid, languages, self.settings.youtube_base_url, self.settings.socket_timeout_s,
                                       translate_to=language)
                return Resolved(key=source_identity(vid), url=canonical, duration=track.segments[-1].end,
                                kind="captions", language=track.language, captions=track.segments,
                                translated_from=track.translated_from), None
            except NoCaptions as error:
                if source == "captions":
                    raise
                if not self.settings.allow_asr_fallback:
                    raise SourceFailed(f"{error.message}, and ASR fallback is disabled "
                                       "(downloader.allow_asr_fallback)", param="url", code=error.code) from error
            except CaptionsBlocked as blocked:
                if source == "captions":
                    raise
                return self._youtube_audio(vid, canonical, blocked, files)
        return self._youtube_audio(vid, canonical, None, files)

    def _youtube_audio(self, vid: str, canonical: str, blocked: CaptionsBlocked | None, files: ExitStack) -> Found:
        """ASR input for a video; when captions were refused for a bot check, a failure here says so."""
        watch_url = f"{self.settings.youtube_base_url.rstrip('/')}/watch?v={vid}"
        try:
            media = files.enter_context(downloaded(watch_url, self._ytdlp, self._limits))
        except ServiceError as error:
            if blocked is not None and blocked.code == "bot_check":
                raise SourceFailed(f"{BOT_CHECK_HINT} (audio download: {error.message})", param="url",
                                   code="bot_check") from error
            raise
        return Resolved(key=source_identity(vid), url=canonical, title=media.title, duration=media.duration,
                        kind="audio"), media.path

    def expand(self, url: str) -> list[str]:
        """The items of a playlist or channel URL (yt-dlp's flat extraction), or the URL itself."""
        with self._network_policy():
            if video_id(url) is not None or not url.strip():
                return [url]
            return expand_playlist(url.strip(), self._ytdlp)


def timed(items: Iterator[T], stage: str, record: Record | None) -> Iterator[T]:
    """``items``, with the seconds spent producing each one reported as ``stage``."""
    while True:
        started = time.perf_counter()
        item = next(items, None)
        if item is None:
            return
        if record is not None:
            record(stage, time.perf_counter() - started)
        yield item


def _refused(error: BaseException) -> InvalidRequest:
    """A 400 naming the refused host and address (from the guard's message, which libraries wrap)."""
    found = re.search(rf"{MARKER}: host '[^']*' resolves to \S+ \([^)]*\)", str(error))
    detail = found[0] if found else MARKER
    return InvalidRequest(f"the source is on a network this service may not reach ({detail}); internal media "
                          "servers go in downloader.allowed_hosts", param="url", code="forbidden_address")


@serve.deployment(name="Downloader")
class Downloader:
    """Serve wrapper: fetches and decodes in threads, and sends each window to the transcribers itself.

    ``resolve`` and ``from_upload`` stream (call them through a handle with ``stream=True``): the header,
    then each window's transcription in order, then the decoded duration. Fanning out from here, where
    the audio is decoded, means decoding waits for transcription: at most ``windows_in_flight`` windows
    of a source exist at once, whatever its length.
    """

    def __init__(self, settings: DownloaderSettings, transcriber: DeploymentHandle,
                 diarizer: DeploymentHandle | None = None, routing: RoutingSettings | None = None) -> None:
        self.settings = settings
        self.routing = routing
        self.metrics = ReplicaMetrics("Downloader")
        self.resolver = SourceResolver(settings, record=self.metrics.stage)
        self.transcriber = ServiceHandle(transcriber)
        self.diarizer = None if diarizer is None else ServiceHandle(diarizer)
        load_vad()

    async def resolve(self, url: str, source: SourceMode = "auto", language: str | None = None,
                      options: TranscribeOptions | None = None) -> AsyncIterator[Transcribed]:
        options = options or TranscribeOptions()
        items = self.resolver.resolve(url, source, language, options.vad_filter is not False)
        async with aclosing(self._transcribed("resolve", items, options)) as transcribed:
            async for item in transcribed:
                yield item

    async def from_upload(self, data: bytes, filename: str | None = None,
                          options: TranscribeOptions | None = None) -> AsyncIterator[Transcribed]:
        options = options or TranscribeOptions()
        items = self.resolver.from_upload(data, filename, options.vad_filter is not False)
        async with aclosing(self._transcribed("upload", items, options)) as transcribed:
            async for item in transcribed:
                yield item

    async def _transcribed(self, kind: str, items: Generator[Any, None, None],
                           options: TranscribeOptions) -> AsyncGenerator[Any, None]:
        """The stream with its windows transcribed (and embedded by the diarizer when ``options.diarize``); counts
        the request and its audio under ``model`` "asr" (decoded) or "captions" (never downloaded). A request for the
        routed name without a language is routed once, on its first window (``transcriber.routing.detect: source``).
        """
        route = SourceRoute(options, self.transcriber.route.remote)

        def transcribe(samples: np.ndarray) -> Any:
            return self.transcriber.transcribe.remote(samples, route.options)

        diarizer = self.diarizer if options.diarize else None
        embed = None if diarizer is None else diarizer.embed.remote
        decoded = in_threads(items)
        source = route.windows(decoded) if self._routes_once(options) else decoded
        windows = transcribe_windows(source, transcribe, self.settings.windows_in_flight, embed)
        with self.metrics.track(kind, "asr") as tracked:
            async with aclosing(windows):
                async for item in windows:
                    if isinstance(item, Resolved) and item.kind == "captions":
                        tracked.model, tracked.audio_seconds = "captions", item.duration
                    elif isinstance(item, AudioEnd):
                        tracked.audio_seconds = item.duration
                    yield item

    def _routes_once(self, options: TranscribeOptions) -> bool:
        """Whether ``options`` name the routed name (resolved by the Ingress) and leave the language to detection."""
        routing = self.routing
        return (routing is not None and routing.detect == "source" and options.model == routing.name
                and options.language is None)

    async def expand(self, url: str) -> list[str]:
        return await asyncio.to_thread(self.resolver.expand, url)

    def stats(self) -> dict:
        """This replica's audio and stage figures, sources in flight and memory now."""
        return self.metrics.stats()


async def in_threads(items: Generator[T, None, None]) -> AsyncGenerator[T, None]:
    """A blocking generator's items, each computed in a worker thread; it is closed however iteration ends."""
    end = object()
    try:
        while (item := await asyncio.to_thread(next, items, end)) is not end:
            yield item  # type: ignore[misc]
    finally:
        await asyncio.to_thread(items.close)
