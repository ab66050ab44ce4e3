"""The HTTP ingress (FastAPI through ``@serve.ingress``) and the application builder.

``serve run configs/local.yaml`` imports ``serve_app.app:build_app``; Serve validates the YAML's
``args`` against ``AppSettings`` before anything starts, so a bad key fails with its name.
"""

import asyncio
from typing import Annotated, Literal

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from deployments.downloader import Downloader
from deployments.embedder import Embedder
from deployments.errors import PayloadTooLarge
from deployments.schemas import TranscribeOptions, Transcription
from deployments.transcriber import Transcriber
from serve_app.errors import install_error_handlers
from serve_app.pipeline import TranscriptPipeline
from serve_app.protocol import (
    TranscriptionText,
    TranscriptRequest,
    TranscriptResponse,
    VerboseSegment,
    VerboseTranscription,
    YoutubeRequest,
)
from serve_app.settings import AppSettings

api = FastAPI(title="transcribe-serve", version="0.1.0")
install_error_handlers(api)

UPLOAD_CHUNK = 1024 * 1024


async def read_limited(upload: UploadFile, limit: int) -> bytes:
    """The upload's bytes, refused with 413 as soon as they pass ``limit`` (not after buffering it all)."""
    parts, size = [], 0
    while chunk := await upload.read(UPLOAD_CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the upload is larger than the limit of {limit} bytes", param="file")
        parts.append(chunk)
    return b"".join(parts)


def render(result: Transcription, response_format: str, task: str) -> Response:
    """A transcription in one of OpenAI's response formats."""
    if response_format == "text":
        return PlainTextResponse(result.text)
    if response_format == "verbose_json":
        body = VerboseTranscription(
            task=task, language=result.language, duration=result.duration, text=result.text,
            segments=[VerboseSegment(**s.model_dump(exclude={"words"})) for s in result.segments],
        )
        return JSONResponse(body.model_dump())
    return JSONResponse(TranscriptionText(text=result.text).model_dump())


@serve.deployment(name="Ingress")
@serve.ingress(api)
class Ingress:
    """Routes HTTP requests into the graph; holds no model itself."""

    def __init__(self, downloader: DeploymentHandle, transcriber: DeploymentHandle, embedder: DeploymentHandle,
                 settings: AppSettings) -> None:
        self.settings = settings
        self.pipeline = TranscriptPipeline(downloader, transcriber, embedder, settings)

    @api.get("/healthz")
    async def healthz(self) -> dict:
        """Each deployment's state as the Serve controller sees it."""
        app_name = serve.get_replica_context().app_name
        status = await asyncio.to_thread(serve.status)
        app = status.applications[app_name]
        return {
            "status": app.status.value if hasattr(app.status, "value") else str(app.status),
            "deployments": {name: d.status.value if hasattr(d.status, "value") else str(d.status)
                            for name, d in app.deployments.items()},
        }

    @api.post("/v1/audio/transcriptions")
    async def transcriptions(
        self,
        file: Annotated[UploadFile, File()],
        model: Annotated[str, Form()] = "whisper-1",
        language: Annotated[str | None, Form(min_length=2, max_length=8)] = None,
        prompt: Annotated[str | None, Form(max_length=2000)] = None,
        response_format: Annotated[Literal["json", "text", "verbose_json"], Form()] = "json",
        temperature: Annotated[float, Form(ge=0.0, le=1.0)] = 0.0,
    ) -> Response:
        """OpenAI's transcription endpoint (multipart upload)."""
        data = await read_limited(file, self.settings.ingress.max_upload_bytes)
        options = TranscribeOptions(model=model, language=language, initial_prompt=prompt, temperature=temperature)
        result = await self.pipeline.transcribe_upload(data, file.filename, options)
        return render(result, response_format, "transcribe")

    @api.post("/v1/transcripts")
    async def transcripts(self, request: TranscriptRequest) -> TranscriptResponse:
        """A source URL's transcript: captions first, ASR otherwise, with embedded passages."""
        return await self.pipeline.transcript(request)

    @api.post("/api/transcribe/youtube")
    async def transcribe_youtube(self, request: YoutubeRequest) -> TranscriptResponse:
        """The route the original lecture backend's clients call; same as ``/v1/transcripts``."""
        return await self.pipeline.transcript(TranscriptRequest(url=request.youtube_url, source="auto"))


def build_app(args: dict | AppSettings) -> Application:
    """The application graph from the YAML's ``args``, validated here so errors name the bad key."""
    settings = args if isinstance(args, AppSettings) else AppSettings.model_validate(args)
    return Ingress.bind(
        Downloader.bind(settings.downloader),
        Transcriber.bind(settings.transcriber),
        Embedder.bind(settings.embedder),
        settings,
    )
