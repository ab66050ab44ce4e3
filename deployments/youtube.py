"""YouTube: recognising video ids, and fetching captions with youtube-transcript-api."""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qs, urlparse

import requests

from deployments.errors import SourceFailed, SourceUnreachable
from deployments.schemas import Segment

if TYPE_CHECKING:
    from youtube_transcript_api import Transcript, TranscriptList

YOUTUBE_ORIGIN = "https://www.youtube.com"
_VIDEO_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
_YOUTUBE_HOSTS = {"youtube.com", "www.youtube.com", "m.youtube.com", "music.youtube.com", "youtube-nocookie.com",
                  "www.youtube-nocookie.com"}
_PATH_PREFIXES = ("/shorts/", "/embed/", "/live/", "/v/")


def video_id(source: str) -> str | None:
    """The 11-character video id of a YouTube URL or bare id; None for anything else."""
    source = source.strip()
    if _VIDEO_ID.match(source):
        return source
    parsed = urlparse(source)
    if parsed.scheme not in ("http", "https"):
        return None
    host = (parsed.hostname or "").lower()
    candidate = None
    if host == "youtu.be":
        candidate = parsed.path.lstrip("/").split("/")[0]
    elif host in _YOUTUBE_HOSTS:
        if parsed.path == "/watch":
            candidate = parse_qs(parsed.query).get("v", [""])[0]
        else:
            candidate = next(
                (parsed.path[len(p):].split("/")[0] for p in _PATH_PREFIXES if parsed.path.startswith(p)), None
            )
    return candidate if candidate and _VIDEO_ID.match(candidate) else None


class RebasedSession(requests.Session):
    """A requests session with a timeout on every call, that sends YouTube's URLs to ``base_url``.

    ``base_url`` is YouTube itself in production, or a mirror or a test double.
    """

    def __init__(self, base_url: str, timeout_s: float) -> None:
        super().__init__()
        self._base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        target = str(url)
        if target.startswith(YOUTUBE_ORIGIN):
            target = self._base_url + target[len(YOUTUBE_ORIGIN):]
        kwargs.setdefault("timeout", self._timeout_s)
        verb = method if isinstance(method, str) else method.decode()
        return super().request(verb, target, *args, **kwargs)


class NoCaptions(SourceFailed):
    """The video has no captions in an accepted language (the caller may fall back to ASR)."""

    code = "no_captions"


class CaptionsBlocked(SourceFailed):
    """YouTube asked for a sign-in or a token before giving captions (the caller may fall back to ASR)."""

    code = "captions_blocked"


_BLOCK_CODES = {"RequestBlocked": "bot_check", "IpBlocked": "bot_check", "AgeRestricted": "age_restricted",
                "PoTokenRequired": "po_token_required"}


class CaptionTrack(NamedTuple):
    """A video's captions: their language, their timed segments, and the language of the track YouTube
    machine-translated them from (None for a track in its own language)."""

    language: str
    segments: list[Segment]
    translated_from: str | None = None


def fetch_captions(
    vid: str, languages: list[str], base_url: str = YOUTUBE_ORIGIN, timeout_s: float = 20.0,
    translate_to: str | None = None,
) -> CaptionTrack:
    """The best caption track: manual before auto-generated, in the order of ``languages``; with ``translate_to``
    (the language a viewer asked for), YouTube's own translation into it ranks after that language's own tracks.

    Failures become typed errors.
    """
    from youtube_transcript_api import YouTubeTranscriptApi
    from youtube_transcript_api import _errors as yta

    try:
        listing = YouTubeTranscriptApi(http_client=RebasedSession(base_url, timeout_s)).list(vid)
        track, translated_from = _best_track(listing, languages, translate_to)
        if track is None:
            raise NoCaptions(f"video {vid} has no captions in {languages}", param="url")
        fetched = track.fetch()
    except yta.TranscriptsDisabled as error:
        raise NoCaptions(f"video {vid} has no captions in {languages}", param="url") from error
    except (yta.VideoUnavailable, yta.InvalidVideoId) as error:
        raise SourceFailed(f"video {vid} is unavailable (private, removed or never existed)",
                           param="url", code="video_unavailable") from error
    except (yta.RequestBlocked, yta.IpBlocked, yta.AgeRestricted, yta.PoTokenRequired) as error:
        raise CaptionsBlocked(f"YouTube refused captions for {vid}: {type(error).__name__}", param="url",
                              code=_BLOCK_CODES[type(error).__name__]) from error
    except yta.VideoUnplayable as error:
        raise SourceFailed(f"video {vid} is not playable: {error.reason}", param="url",
                           code="video_unavailable") from error
    except (yta.YouTubeRequestFailed, requests.RequestException) as error:
        raise SourceUnreachable(f"could not reach YouTube for {vid}: {type(error).__name__}", param="url") from error
    except yta.CouldNotRetrieveTranscript as error:
        raise SourceFailed(f"captions for {vid} could not be read: {type(error).__name__}", param="url") from error
    segments = [
        Segment(id=i, start=s.start, end=s.start + s.duration, text=s.text.replace("\n", " ").strip())
        for i, s in enumerate(fetched)
        if s.text.strip()
    ]
    if not segments:
        raise NoCaptions(f"the caption track of {vid} is empty", param="url")
    return CaptionTrack(fetched.language_code, segments, translated_from)


def _best_track(listing: TranscriptList, languages: list[str],
                translate_to: str | None) -> tuple[Transcript | None, str | None]:
    """With a language asked for (``translate_to``): its own tracks, then YouTube's translation into it, then tracks
    in the other ``languages``; without: tracks in ``languages``' order. Manual before generated; None: no track.

    The second value is the language a translated track was translated from (None for a track of its own)."""
    first = [translate_to] if translate_to else languages
    rest = [code for code in languages if code not in first]
    if own := _own_track(listing, first):
        return own, None
    if translate_to and (original := _translatable(listing, translate_to)):
        return original.translate(translate_to), original.language_code
    return (_own_track(listing, rest) if rest else None), None


def _own_track(listing: TranscriptList, languages: list[str]) -> Transcript | None:
    """The manual track in the first of ``languages`` that has one, else the generated one; None: neither."""
    from youtube_transcript_api import _errors as yta

    for find in (listing.find_manually_created_transcript, listing.find_generated_transcript):
        with contextlib.suppress(yta.NoTranscriptFound):
            return find(languages)
    return None


def _translatable(listing: TranscriptList, language: str) -> Transcript | None:
    """The first track (manual ones first) YouTube translates into ``language``; None: none."""
    return next((each for each in listing if language in {t.language_code for t in each.translation_languages}), None)
