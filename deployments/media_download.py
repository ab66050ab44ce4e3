"""Fetching a source's audio with yt-dlp into a temporary directory that is removed when its user is done."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployments.errors import PayloadTooLarge, ServiceError, SourceFailed, SourceUnreachable

BOT_CHECK_HINT = (
    "YouTube asked to sign in to confirm this is not a bot; export a cookies file from a signed-in "
    "browser and set downloader.cookies_file in the config"
)

# Substrings of yt-dlp's error messages, most specific first: (needle, error class, code, message).
_KNOWN_FAILURES: list[tuple[str, type[ServiceError], str, str]] = [
    ("not a bot", SourceFailed, "bot_check", BOT_CHECK_HINT),
    ("sign in to confirm your age", SourceFailed, "age_restricted", "the video is age-restricted; "
     "set downloader.cookies_file to a signed-in account's cookies"),
    ("private video", SourceFailed, "video_unavailable", "the video is private"),
    ("video unavailable", SourceFailed, "video_unavailable", "the video is unavailable"),
    ("has been removed", SourceFailed, "video_unavailable", "the video has been removed"),
    ("requested format is not available", SourceFailed, "no_audio_stream", "the source has no audio stream"),
    ("unsupported url", SourceFailed, "unsupported_url", "no media was found at the URL"),
    ("http error 4", SourceFailed, "source_not_found", "the source answered with a client error"),
    ("http error 5", SourceUnreachable, "source_unreachable", "the source answered with a server error"),
    ("timed out", SourceUnreachable, "source_unreachable", "the source did not answer in time"),
    ("unable to download", SourceUnreachable, "source_unreachable", "the source could not be downloaded"),
    ("urlopen error", SourceUnreachable, "source_unreachable", "the source could not be reached"),
    ("connection", SourceUnreachable, "source_unreachable", "the connection to the source failed"),
]


@dataclass(frozen=True)
class Limits:
    """What one download may cost: bytes on the wire, seconds of audio, and wall time."""

    max_bytes: int
    max_seconds: float
    timeout_s: float


@dataclass(frozen=True)
class Download:
    """A downloaded media file and what yt-dlp knew about it (``duration`` 0 when it declared none)."""

    path: Path
    title: str | None
    duration: float


def classify(message: str) -> ServiceError:
    """A typed error for one of yt-dlp's error messages; the message is kept as detail."""
    lowered = message.lower()
    for needle, cls, code, text in _KNOWN_FAILURES:
        if needle in lowered:
            return cls(f"{text} ({_first_line(message)})", param="url", code=code)
    return SourceFailed(f"the source could not be fetched ({_first_line(message)})", param="url")


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0][:300] if message.strip() else "no detail"


NO_FFMPEG = os.path.join(os.devnull, "ffmpeg")
"""An ``ffmpeg_location`` that cannot exist (``/dev/null`` is no directory): yt-dlp finds no ffmpeg to run."""

NATIVE_DOWNLOADS: dict[str, Any] = {
    "external_downloader": {"default": "native"},  # HTTP, HLS and DASH: yt-dlp's own downloaders, no curl/aria2c
    "hls_prefer_native": True,
    "concurrent_fragment_downloads": 1,  # worker threads would run outside the guard's context
    "skip_unavailable_fragments": False,  # a fragment that fails (or is refused) fails the download, not a gap
    "ffmpeg_location": NO_FFMPEG,  # what yt-dlp still hands to ffmpeg (live streams, HLS with SAMPLE-AES) fails
}
"""Every byte yt-dlp fetches goes through Python's sockets in the calling thread, where the SSRF guard checks
it (``deployments.network_guard``); ffmpeg or another external downloader, a subprocess, would connect
unseen. Decoding is PyAV's, so yt-dlp never needs ffmpeg; its local fix-ups (e.g. MPEG-TS in MP4) are skipped."""


def ytdlp_options(socket_timeout_s: float, retries: int, fragment_retries: int,
                  cookies_file: str | None) -> dict[str, Any]:
    """yt-dlp's options for downloading a single item's best audio with its native downloaders only."""
    options: dict[str, Any] = {
        **NATIVE_DOWNLOADS,
        "format": "bestaudio/best",
        "noplaylist": True,
        "socket_timeout": socket_timeout_s,
        "retries": retries,
        "fragment_retries": fragment_retries,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "cachedir": False,
        "overwrites": True,
        "logger": logging.getLogger("yt_dlp"),
    }
    if cookies_file:
        options["cookiefile"] = cookies_file
    return options


def _check_metadata(info: dict[str, Any] | None, limits: Limits) -> dict[str, Any]:
    """Refuse before downloading: playlists, live streams, and declared durations or sizes past the limits."""
    if info is None or info.get("_type") in ("playlist", "multi_video"):
        raise SourceFailed("the URL is a playlist; submit its videos one by one (or use the jobs API)",
                           param="url", code="playlist_not_allowed")
    if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming"):
        raise SourceFailed("the source is a live stream, which never ends; submit its recording when it has "
                           "ended", param="url", code="live_stream")
    duration = info.get("duration")
    if duration and duration > limits.max_seconds:
        raise PayloadTooLarge(f"the audio is {duration:.0f} s long; the limit is {limits.max_seconds:.0f} s",
                              param="url", code="audio_too_long")
    size = info.get("filesize") or info.get("filesize_approx")
    if size and size > limits.max_bytes:
        raise PayloadTooLarge(f"the media is {size} bytes; the limit is {limits.max_bytes} bytes", param="url",
                              code="download_too_large")
    return info


def _limits_hook(limits: Limits) -> Callable[[dict[str, Any]], None]:
    """A yt-dlp progress hook that stops a download past the byte or time limit (it raises through yt-dlp)."""
    started = time.monotonic()

    def hook(progress: dict[str, Any]) -> None:
        if progress.get("downloaded_bytes", 0) > limits.max_bytes:
            raise PayloadTooLarge(f"the download passed the limit of {limits.max_bytes} bytes", param="url",
                                  code="download_too_large")
        if time.monotonic() - started > limits.timeout_s:
            raise SourceFailed(f"the download took longer than {limits.timeout_s:.0f} s", param="url",
                               code="download_timeout")

    return hook


@contextmanager
def downloaded(url: str, options: dict[str, Any], limits: Limits) -> Iterator[Download]:
    """Download ``url``'s best audio with yt-dlp within ``limits``; the file is removed when the block ends.

    Metadata comes first, so playlists and declared oversize media are refused before any download.
    """
    import yt_dlp

    with tempfile.TemporaryDirectory(prefix="transcribe-serve-") as scratch:
        opts = {**options, "outtmpl": str(Path(scratch) / "media.%(ext)s"), "progress_hooks": [_limits_hook(limits)]}
        try:
            with yt_dlp.YoutubeDL(opts) as ydl:
                info = _check_metadata(ydl.extract_info(url, download=False), limits)
                ydl.process_ie_result(info, download=True)
        except yt_dlp.utils.DownloadError as error:
            raise classify(str(error)) from error
        files = [p for p in Path(scratch).iterdir() if p.is_file() and not p.name.endswith(".part")]
        if not files:
            raise SourceFailed("the download produced no media file", param="url", code="no_audio_stream")
        yield Download(path=files[0], title=info.get("title"), duration=float(info.get("duration") or 0.0))


def expand_playlist(url: str, options: dict[str, Any]) -> list[str]:
    """Entry URLs of a playlist, channel or multi-media page without downloading them; [url] for one item."""
    import yt_dlp

    try:
        with yt_dlp.YoutubeDL({**options, "extract_flat": "in_playlist", "noplaylist": False}) as ydl:
            info = ydl.extract_info(url, download=False)
    except yt_dlp.utils.DownloadError as error:
        raise classify(str(error)) from error
    if not info or info.get("_type") not in ("playlist", "multi_video"):
        return [url]
    urls = [e.get("url") or e.get("webpage_url") for e in info.get("entries") or [] if e]
    return list(dict.fromkeys(u for u in urls if u))
