"""Rendering a transcription in OpenAI's response formats, and as server-sent events."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from deployments.schemas import Segment, Transcription

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json", "diarized_json"]
"""OpenAI's response formats; the renderers below produce each (``diarized_json`` implies diarization)."""
TIMED_FORMATS: frozenset[str] = frozenset({"srt", "vtt", "verbose_json", "diarized_json"})
"""The formats that show segment times: their requests, and streamed ones (a delta per sentence), pay for
aligning them; ``json`` and ``text`` answers do not."""


def _clock(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_srt(segments: Sequence[Segment]) -> str:
    """SubRip: numbered cues with ``HH:MM:SS,mmm`` times; a diarized cue starts with ``A: ``."""
    cues = [
        f"{n}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{'' if s.speaker is None else s.speaker + ': '}"
        f"{s.text.strip()}\n"
        for n, s in enumerate((s for s in segments if s.text.strip()), start=1)
    ]
    return "\n".join(cues)


def _voice(segment: Segment) -> str:
    """A WebVTT cue's text, in a voice span ``<v A>`` when diarized."""
    text = segment.text.strip()
    return text if segment.speaker is None else f"<v {segment.speaker.replace('>', '&gt;')}>{text}"


def to_vtt(segments: Sequence[Segment]) -> str:
    """WebVTT: a header, then cues with ``HH:MM:SS.mmm`` times; diarized cues name their speaker ``<v A>``."""
    cues = [
        f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{_voice(s)}\n"
        for s in segments if s.text.strip()
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


def to_verbose_json(result: Transcription, task: str, segments: bool, words: bool) -> dict[str, Any]:
    """OpenAI's ``verbose_json``: language, duration, text, and segments and/or words as asked; and the model that
    decoded it (this service's extension: a request naming none is routed by its language)."""
    body: dict[str, Any] = {
        "task": task,
        "language": result.language,
        "model": result.model,
        "duration": result.duration,
        "text": result.text,
        "usage": {"type": "duration", "seconds": result.duration},
    }
    if segments:
        body["segments"] = [s.model_dump(exclude={"words"} if s.speaker else {"words", "speaker"})
                            for s in result.segments]
    if words:
        body["words"] = [w.model_dump(exclude={"probability"}, exclude_none=True)
                         for s in result.segments for w in s.words or []]
    return body


def diarized_segment(segment: Segment) -> dict[str, Any]:
    """A segment in OpenAI's diarized shape (also the ``transcript.text.segment`` stream event)."""
    shape = {"type": "transcript.text.segment", "id": f"seg_{segment.id}", "start": segment.start,
             "end": segment.end, "text": segment.text.strip(), "speaker": segment.speaker or ""}
    return {**shape, "language": segment.language} if segment.language else shape


def to_diarized_json(result: Transcription, task: str) -> dict[str, Any]:
    """OpenAI's ``diarized_json``: text, duration, task (``translate`` for a translation) and speaker-labelled
    segments."""
    return {"task": task, "duration": result.duration, "text": result.text,
            "segments": [diarized_segment(s) for s in result.segments if s.text.strip()],
            "usage": {"type": "duration", "seconds": result.duration}}


def sse(event: dict[str, Any]) -> str:
    """One server-sent event carrying ``event`` as JSON."""
    return f"data: {json.dumps(event)}\n\n"
