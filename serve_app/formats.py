"""Rendering a transcription in OpenAI's response formats, and as server-sent events."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from deployments.schemas import Segment, Transcription

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
"""OpenAI's response formats; the renderers below produce each."""
TIMED_FORMATS: frozenset[str] = frozenset({"srt", "vtt", "verbose_json"})
"""The formats that show segment times: their requests, and streamed ones (a delta per sentence), pay for
aligning them; ``json`` and ``text`` answers do not."""


def _clock(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_srt(segments: Sequence[Segment]) -> str:
    """SubRip: numbered cues with ``HH:MM:SS,mmm`` times."""
    cues = [
        f"{n}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n"
        for n, s in enumerate((s for s in segments if s.text.strip()), start=1)
    ]
    return "\n".join(cues)


def to_vtt(segments: Sequence[Segment]) -> str:
    """WebVTT: a header, then cues with ``HH:MM:SS.mmm`` times."""
    cues = [
        f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n"
        for s in segments if s.text.strip()
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


def to_verbose_json(result: Transcription, task: str, segments: bool, words: bool) -> dict[str, Any]:
    """OpenAI's ``verbose_json``: language, duration, text, and segments and/or words as asked."""
    body: dict[str, Any] = {
        "task": task,
        "language": result.language,
        "duration": result.duration,
        "text": result.text,
        "usage": {"type": "duration", "seconds": result.duration},
    }
    if segments:
        body["segments"] = [s.model_dump(exclude={"words"}) for s in result.segments]
    if words:
        body["words"] = [w.model_dump(exclude={"probability"}) for s in result.segments for w in s.words or []]
    return body


def sse(event: dict[str, Any]) -> str:
    """One server-sent event carrying ``event`` as JSON."""
    return f"data: {json.dumps(event)}\n\n"
