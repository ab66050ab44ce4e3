"""Request and response bodies of the HTTP API, validated at the edge."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Request(BaseModel):
    """A request body: unknown fields are refused rather than ignored."""

    model_config = ConfigDict(extra="forbid")


class TranscriptRequest(Request):
    url: str = Field(..., min_length=1, max_length=4096, description="A YouTube URL or id, or a media URL.")
    source: Literal["auto", "captions", "asr"] = "auto"
    language: str | None = Field(None, min_length=2, max_length=8)
    model: str | None = None
    embed: bool | None = None


class YoutubeRequest(Request):
    """The original lecture backend's request shape."""

    youtube_url: str = Field(..., min_length=1, max_length=4096)


class TimedText(BaseModel):
    start: float
    end: float
    text: str


class TranscriptResponse(BaseModel):
    id: str
    url: str | None
    title: str | None
    duration_s: float
    source: Literal["captions", "asr"]
    language: str | None
    model: str | None
    text: str
    segments: list[TimedText]
    chunks: list[TimedText]
    embedding_dim: int | None


class TranscriptionText(BaseModel):
    """OpenAI's ``json`` response format."""

    text: str


class VerboseSegment(BaseModel):
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float | None = None
    compression_ratio: float | None = None
    no_speech_prob: float | None = None
    temperature: float | None = None


class VerboseTranscription(BaseModel):
    """OpenAI's ``verbose_json`` response format."""

    task: Literal["transcribe", "translate"]
    language: str
    duration: float
    text: str
    segments: list[VerboseSegment]
