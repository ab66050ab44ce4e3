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
    store: bool = Field(True, description="Keep the transcript in the store (false: answer only).")


class YoutubeRequest(Request):
    """The original lecture backend's request shape (plus ``store``)."""

    youtube_url: str = Field(..., min_length=1, max_length=4096)
    store: bool = True


class JobRequest(Request):
    """Many sources in one job: a list of URLs and/or a playlist or channel URL to expand."""

    urls: list[str] = Field(default_factory=list, description="YouTube URLs or ids, or media URLs.")
    playlist: str | None = Field(None, max_length=4096, description="Expanded with yt-dlp's flat extraction.")
    source: Literal["auto", "captions", "asr"] = "auto"
    model: str | None = None
    language: str | None = Field(None, min_length=2, max_length=8)


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
    transcript_id: str | None = Field(None, description="Its key in the store; None when not stored.")
    warning: str | None = Field(None, description="What the caller may not expect, e.g. stored without passages.")


class TranscriptionText(BaseModel):
    """OpenAI's ``json`` response format."""

    text: str


class EmbeddingRequest(Request):
    """OpenAI's embeddings request; token-array inputs are not supported."""

    model_config = ConfigDict(extra="ignore")

    input: str | list[str] = Field(..., description="A string or a list of strings to embed.")
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "transcribe-serve"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
