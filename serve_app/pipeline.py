"""The orchestration behind the routes: downloader → transcriber → embedder, through DeploymentHandles."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from deployments.errors import InvalidRequest, PayloadTooLarge, UnknownModel
from deployments.schemas import Passage, Resolved, Segment, TranscribeOptions, Transcription
from serve_app.errors import guarded
from serve_app.protocol import (
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    TimedText,
    TranscriptRequest,
    TranscriptResponse,
)
from serve_app.settings import AppSettings


def _timed(items: list[Any]) -> list[TimedText]:
    return [TimedText(start=i.start, end=i.end, text=i.text) for i in items]


def from_captions(resolved: Resolved) -> Transcription:
    """A caption track in the shape of an ASR result (the ``model`` says where it came from)."""
    segments = resolved.captions or []
    return Transcription(model="captions", language=resolved.language or "und", duration=resolved.duration,
                         text=" ".join(s.text for s in segments), segments=segments)


async def _replay(segments: list[Segment]) -> AsyncIterator[Segment]:
    for segment in segments:
        yield segment


class TranscriptPipeline:
    """Holds the graph's handles and composes them for one request."""

    def __init__(self, downloader: Any, transcriber: Any, embedder: Any, settings: AppSettings) -> None:
        self.downloader = downloader
        self.transcriber = transcriber
        self.embedder = embedder
        self.settings = settings

    def check_model(self, requested: str | None) -> str:
        """The configured model name for a request, refused before any download when unknown."""
        name = self.settings.transcriber.resolve(requested)
        if name is None:
            allowed = sorted({*self.settings.transcriber.models, *self.settings.transcriber.aliases})
            raise UnknownModel(f"model {requested!r} is not served here; choose one of {allowed}", param="model")
        return name

    async def resolve(self, data: bytes | None, filename: str | None, url: str | None, source: str,
                      language: str | None) -> Resolved:
        """Captions or decoded audio from uploaded bytes or a URL (exactly one of them)."""
        if (data is None) == (url is None):
            raise InvalidRequest("send exactly one of 'file' and 'url'", param="file")
        if data is not None:
            return await guarded(self.downloader.from_upload.remote(data, filename))
        return await guarded(self.downloader.resolve.remote(url, source, language))

    async def transcription(self, resolved: Resolved, options: TranscribeOptions) -> Transcription:
        """The whole transcription: the captions as they are, or ASR of the audio."""
        if resolved.kind == "captions":
            return from_captions(resolved)
        return await guarded(self.transcriber.transcribe.remote(resolved.audio, options))

    def segments(self, resolved: Resolved, options: TranscribeOptions) -> AsyncIterator[Segment]:
        """Segments as the transcriber decodes them (or the captions, at once)."""
        if resolved.kind == "captions":
            return _replay(resolved.captions or [])
        return self.transcriber.options(stream=True).stream.remote(resolved.audio, options)

    async def transcript(self, request: TranscriptRequest) -> TranscriptResponse:
        """A source's transcript, from captions or ASR, with embedded passages when asked."""
        response, _ = await self.transcript_and_passages(request)
        return response

    async def transcript_and_passages(self, request: TranscriptRequest) -> tuple[TranscriptResponse, list[Passage]]:
        """The transcript and its passages with their vectors (what the store keeps)."""
        model = self.check_model(request.model)
        resolved = await self.resolve(None, None, request.url, request.source, request.language)
        result = await self.transcription(resolved, TranscribeOptions(model=model, language=request.language))
        embed = self.settings.ingress.default_embed if request.embed is None else request.embed
        passages: list[Passage] = []
        if embed and result.segments:
            passages = await guarded(self.embedder.embed_transcript.remote(result.segments))
        response = TranscriptResponse(
            id=resolved.key,
            url=resolved.url,
            title=resolved.title,
            duration_s=round(resolved.duration, 3),
            source="captions" if resolved.kind == "captions" else "asr",
            language=result.language,
            model=None if resolved.kind == "captions" else result.model,
            text=result.text,
            segments=_timed(result.segments),
            chunks=_timed(passages),
            embedding_dim=len(passages[0].vector) if passages else None,
        )
        return response, passages

    async def embeddings(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """OpenAI's embeddings: vectors from the embedder deployment, usage from its tokenizer."""
        settings = self.settings
        if request.model != settings.embedder.model:
            raise UnknownModel(f"embedding model {request.model!r} is not served here; use "
                               f"{settings.embedder.model!r}", param="model")
        texts = [request.input] if isinstance(request.input, str) else request.input
        if not texts or any(not t for t in texts):
            raise InvalidRequest("input must be a non-empty string or a list of non-empty strings", param="input")
        if len(texts) > settings.ingress.max_embedding_inputs:
            raise PayloadTooLarge(f"at most {settings.ingress.max_embedding_inputs} inputs per request",
                                  param="input")
        if max(len(t) for t in texts) > settings.ingress.max_embedding_chars:
            raise PayloadTooLarge(f"an input is longer than {settings.ingress.max_embedding_chars} characters",
                                  param="input")
        dimension = await guarded(self.embedder.dimension.remote())
        if request.dimensions is not None and request.dimensions != dimension:
            raise InvalidRequest(f"{request.model} makes {dimension}-dimensional vectors and cannot shorten them "
                                 f"to {request.dimensions}", param="dimensions")
        vectors = await guarded(self.embedder.embed.remote(texts))
        tokens = await guarded(self.embedder.count_tokens.remote(texts))
        data = [EmbeddingData(index=i, embedding=_encode(v, request.encoding_format)) for i, v in enumerate(vectors)]
        return EmbeddingResponse(data=data, model=request.model,
                                 usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens))


def _encode(vector: list[float], encoding_format: str) -> list[float] | str:
    """A vector as floats, or as OpenAI's base64 of little-endian float32."""
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return vector
