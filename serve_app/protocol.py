"""Request and response bodies of the HTTP API, validated at the edge."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from deployments.schemas import JobSpec, SourceMode, Transcript, TranscriptSpec


class Request(BaseModel):
    """A request body: unknown fields are refused rather than ignored."""

    model_config = ConfigDict(extra="forbid")


class TranscriptRequest(Request):
    url: str = Field(..., min_length=1, max_length=4096, description="A YouTube URL or id, or a media URL.")
    source: SourceMode = "auto"
    language: str | None = Field(None, min_length=2, max_length=8)
    model: str | None = None
    embed: bool | None = None
    store: bool = Field(True, description="Keep the transcript in the store (false: answer only).")

    def spec(self, default_embed: bool) -> TranscriptSpec:
        """What the graph needs of this request; ``embed`` unset means the ingress's default."""
        return TranscriptSpec(url=self.url, source=self.source, language=self.language, model=self.model,
                              embed=default_embed if self.embed is None else self.embed)


class YoutubeRequest(Request):
    """The original lecture backend's request shape (plus ``store``)."""

    youtube_url: str = Field(..., min_length=1, max_length=4096)
    store: bool = True


class JobRequest(Request):
    """Many sources in one job: a list of URLs and/or a playlist or channel URL to expand."""

    urls: list[str] = Field(default_factory=list, description="YouTube URLs or ids, or media URLs.")
    playlist: str | None = Field(None, max_length=4096, description="Expanded with yt-dlp's flat extraction.")
    source: SourceMode = "auto"
    model: str | None = None
    language: str | None = Field(None, min_length=2, max_length=8)

    def spec(self) -> JobSpec:
        """What every item of the job shares, as the JobRunner persists it."""
        return JobSpec(source=self.source, model=self.model, language=self.language)


class TranscriptResponse(Transcript):
    """The graph's transcript, and what the store did with it."""

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
