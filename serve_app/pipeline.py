"""The orchestration behind the routes: downloader → transcriber → embedder, through DeploymentHandles.

Audio never comes here: the downloader decodes it into windows and sends them to the transcribers itself,
streaming back each window's transcription in order; here they are stitched with their offsets.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import numpy as np

from deployments.errors import InvalidRequest, PayloadTooLarge, UnknownModel, guarded
from deployments.schemas import (
    AudioEnd,
    Passage,
    Resolved,
    Segment,
    TranscribedWindow,
    TranscribeOptions,
    Transcription,
)
from deployments.windows import shifted, stitch
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


@dataclass
class Source:
    """A resolved source: its header, and for audio the rest of the downloader's stream."""

    header: Resolved
    options: TranscribeOptions
    rest: Any = None
    """``TranscribedWindow`` items in order, then ``AudioEnd``; None for captions."""


async def _rest(source: Source) -> AsyncIterator[TranscribedWindow | AudioEnd]:
    """The stream after the header; a reader that stops before its end stops the downloader too."""
    ended = False
    try:
        async for item in source.rest:
            ended = isinstance(item, AudioEnd)
            yield item
    finally:
        if not ended:
            source.rest.cancel()


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
                      language: str | None, options: TranscribeOptions) -> Source:
        """Captions, or audio whose windows the downloader is transcribing, from uploaded bytes or a URL (one).

        ``options.vad_filter`` (the transcriber's ``vad_filter`` when None) decides whether windows are cut
        at silences; the downloader sends each window to the transcribers with ``options``.
        """
        if (data is None) == (url is None):
            raise InvalidRequest("send exactly one of 'file' and 'url'", param="file")
        if options.vad_filter is None:
            options = options.model_copy(update={"vad_filter": self.settings.transcriber.vad_filter})
        downloader = self.downloader.options(stream=True)
        if data is not None:
            stream = downloader.from_upload.remote(data, filename, options)
        else:
            stream = downloader.resolve.remote(url, source, language, options)
        header = await guarded(stream.__anext__())
        return Source(header, options, None if header.kind == "captions" else stream)

    async def transcription(self, source: Source) -> Transcription:
        """The whole transcription: the captions as they are, or the audio's windows stitched in order."""
        if source.rest is None:
            return from_captions(source.header)
        parts: list[tuple[float, Transcription]] = []
        duration = 0.0
        async with aclosing(_rest(source)) as items:
            async for item in items:
                if isinstance(item, AudioEnd):
                    duration = item.duration
                else:
                    parts.append((item.start, item.transcription))
        options = source.options
        return stitch(parts, duration, self.check_model(options.model), options.language or "en")

    async def segments(self, source: Source) -> AsyncIterator[Segment]:
        """Segments as each window's transcription arrives, in order (or the captions, at once)."""
        if source.rest is None:
            for segment in source.header.captions or []:
                yield segment
            return
        count = 0
        async with aclosing(_rest(source)) as items:
            async for item in items:
                if isinstance(item, TranscribedWindow):
                    for segment in shifted(item.transcription.segments, item.start, count):
                        yield segment
                    count += len(item.transcription.segments)

    async def transcript_and_passages(self, request: TranscriptRequest) -> tuple[TranscriptResponse, list[Passage]]:
        """The transcript and its passages with their vectors (what the store keeps)."""
        model = self.check_model(request.model)
        options = TranscribeOptions(model=model, language=request.language)
        source = await self.resolve(None, None, request.url, request.source, request.language, options)
        resolved = source.header
        result = await self.transcription(source)
        embed = self.settings.ingress.default_embed if request.embed is None else request.embed
        passages: list[Passage] = []
        if embed and result.segments:
            passages = await guarded(self.embedder.embed_transcript.remote(result.segments))
        response = TranscriptResponse(
            id=resolved.key,
            url=resolved.url,
            title=resolved.title,
            duration_s=round(result.duration, 3),
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
