"""Request and response bodies of the HTTP API, validated at the edge."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from deployments.diarization import REFERENCES
from deployments.errors import InvalidRequest
from deployments.schemas import JobSpec, Reference, SourceMode, Transcript, TranscriptSpec

MAX_KNOWN_SPEAKERS = 4
"""OpenAI's limit on ``known_speaker_names[]``."""
MAX_SPEAKERS = 32
"""The most speakers ``min_speakers`` / ``max_speakers`` may ask for."""
DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*);base64,(?P<data>.*)", re.S)


def known_speakers(names: list[str], references: list[str]) -> list[Reference]:
    """OpenAI's ``known_speaker_names[]`` with their ``known_speaker_references[]`` (base64 data URLs of audio)."""
    if len(names) != len(references):
        raise InvalidRequest(f"known_speaker_names[] has {len(names)} entries and known_speaker_references[] "
                             f"{len(references)}: give one reference clip per name", param=REFERENCES)
    if len(names) > MAX_KNOWN_SPEAKERS:
        raise InvalidRequest(f"at most {MAX_KNOWN_SPEAKERS} known speakers", param="known_speaker_names[]")
    if len(set(names)) != len(names) or not all(n.strip() for n in names):
        raise InvalidRequest("known speaker names must be distinct and not empty", param="known_speaker_names[]")
    pairs = enumerate(zip(names, references, strict=True))
    return [Reference(name=name.strip(), audio=_data_url(url, n)) for n, (name, url) in pairs]


def speaker_range(low: int | None, high: int | None, known: int) -> tuple[int | None, int | None]:
    """``min_speakers`` and ``max_speakers`` (this service's extension; OpenAI has none) checked against each other
    and against the ``known`` speakers named, who are at least that many speakers."""
    if low is not None and high is not None and low > high:
        raise InvalidRequest(f"min_speakers ({low}) is more than max_speakers ({high})", param="min_speakers")
    if high is not None and known > high:
        raise InvalidRequest(f"{known} known speakers are named but max_speakers is {high}", param="max_speakers")
    return (max(low or 1, known) if known else low), high


def _data_url(url: str, n: int) -> bytes:
    """The bytes of a base64 data URL of audio; anything else is a 400 that says what was wrong."""
    found = DATA_URL.fullmatch(url.strip())
    if found is None:
        raise InvalidRequest(f"reference {n} is not a base64 data URL (data:audio/wav;base64,...)",
                             param=REFERENCES)
    if found["type"] and not found["type"].startswith(("audio/", "video/", "application/octet-stream")):
        raise InvalidRequest(f"reference {n} is {found['type']}, not audio", param=REFERENCES)
    try:
        data = base64.b64decode(found["data"], validate=True)
    except binascii.Error as error:
        raise InvalidRequest(f"reference {n} is not valid base64 ({error})",
                             param=REFERENCES) from error
    if not data:
        raise InvalidRequest(f"reference {n} is empty", param=REFERENCES)
    return data


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
    diarize: bool = Field(False, description="Label segments and passages with their speakers (needs ASR).")
    translate: bool = Field(False, description="Also keep an English version, with its own passages, of speech in "
                                               "another language.")

    def spec(self, default_embed: bool) -> TranscriptSpec:
        """What the graph needs of this request; ``embed`` unset means the ingress's default."""
        return TranscriptSpec(url=self.url, source=self.source, language=self.language, model=self.model,
                              embed=default_embed if self.embed is None else self.embed, diarize=self.diarize,
                              translate=self.translate)


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
    diarize: bool = Field(False, description="Label every item's segments and passages with their speakers.")
    translate: bool = Field(False, description="Also keep an English version of every item in another language.")

    def spec(self) -> JobSpec:
        """What every item of the job shares, as the JobRunner persists it."""
        return JobSpec(source=self.source, model=self.model, language=self.language, diarize=self.diarize,
                       translate=self.translate)


class TranscriptResponse(Transcript):
    """The graph's transcript, and what the store did with it."""

    transcript_id: str | None = Field(None, description="Its key in the store; None when not stored.")
    warning: str | None = Field(None, description="What the caller may not expect, e.g. stored without passages.")
    translation: TranscriptResponse | None = Field(
        None, description="With translate: the English version of speech in another language, stored beside it.")


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
    """OpenAI's model object; a speech model's also lists the languages it transcribes (this service's extension)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "transcribe-serve"
    languages: list[str] | None = Field(None, description="ISO 639-1 codes; absent for the embedding model.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
