"""The orchestration behind the routes: downloader → transcriber → embedder, through DeploymentHandles."""

from __future__ import annotations

from typing import Any

from deployments.errors import UnknownModel
from deployments.schemas import Resolved, Segment, TranscribeOptions, Transcription
from serve_app.protocol import TimedText, TranscriptRequest, TranscriptResponse
from serve_app.settings import AppSettings


def _timed(items: list[Any]) -> list[TimedText]:
    return [TimedText(start=i.start, end=i.end, text=i.text) for i in items]


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

    async def transcribe_upload(self, data: bytes, filename: str | None, options: TranscribeOptions) -> Transcription:
        """ASR of uploaded bytes (decoded by the downloader, samples passed by reference)."""
        self.check_model(options.model)
        resolved: Resolved = await self.downloader.from_upload.remote(data, filename)
        return await self.transcriber.transcribe.remote(resolved.audio, options)

    async def transcript(self, request: TranscriptRequest) -> TranscriptResponse:
        """A source's transcript, from captions or ASR, with embedded passages when asked."""
        model = self.check_model(request.model)
        resolved: Resolved = await self.downloader.resolve.remote(request.url, request.source, request.language)
        segments: list[Segment]
        if resolved.kind == "captions":
            segments, language, used_model = resolved.captions or [], resolved.language, None
            text = " ".join(s.text for s in segments)
        else:
            options = TranscribeOptions(model=model, language=request.language)
            result: Transcription = await self.transcriber.transcribe.remote(resolved.audio, options)
            segments, language, used_model, text = result.segments, result.language, result.model, result.text
        embed = self.settings.ingress.default_embed if request.embed is None else request.embed
        chunks, dim = [], None
        if embed and segments:
            passages = await self.embedder.embed_transcript.remote(segments)
            chunks = _timed(passages)
            dim = len(passages[0].vector) if passages else None
        return TranscriptResponse(
            id=resolved.key,
            url=resolved.url,
            title=resolved.title,
            duration_s=round(resolved.duration, 3),
            source="captions" if resolved.kind == "captions" else "asr",
            language=language,
            model=used_model,
            text=text,
            segments=_timed(segments),
            chunks=chunks,
            embedding_dim=dim,
        )
