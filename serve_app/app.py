"""The HTTP ingress (FastAPI through ``@serve.ingress``) and the application builder.

``serve run configs/local.yaml`` imports ``serve_app.app:build_app``, which validates the YAML's ``args``
against ``AppSettings`` before anything starts, so a bad key fails with its name.
"""

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, File, Form, Query, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from deployments.downloader import Downloader
from deployments.embedder import Embedder
from deployments.errors import InvalidRequest, NotFound, PayloadTooLarge, ServiceError, UnknownModel, guarded
from deployments.jobs import JobRunner
from deployments.schemas import Segment, TranscribeOptions, Transcription
from deployments.store import TranscriptStore
from deployments.transcriber import Transcriber
from serve_app.access import AccessControl, access_middleware
from serve_app.access import install as install_access
from serve_app.errors import install_error_handlers, unwrap
from serve_app.formats import TIMED_FORMATS, ResponseFormat, sse, to_srt, to_verbose_json, to_vtt
from serve_app.pipeline import TranscriptPipeline
from serve_app.protocol import (
    EmbeddingRequest,
    EmbeddingResponse,
    JobRequest,
    ModelCard,
    ModelList,
    TranscriptionText,
    TranscriptRequest,
    TranscriptResponse,
    YoutubeRequest,
)
from serve_app.settings import AppSettings

api = FastAPI(title="transcribe-serve", version="0.1.0")
install_error_handlers(api)
api.middleware("http")(access_middleware)

UPLOAD_CHUNK = 1024 * 1024
UNSEARCHABLE = ("stored without passages (embedding was off or there was no text): /v1/search will not find it; "
                "post it again with \"embed\": true to make it searchable")
Granularity = Literal["segment", "word"]


class AudioForm(BaseModel):
    """OpenAI's multipart audio request, plus ``url`` and ``source`` (this service's extension)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    file: UploadFile | None
    url: str | None
    source: Literal["auto", "captions", "asr"]
    model: str
    language: str | None
    prompt: str | None
    response_format: ResponseFormat
    temperature: float
    timestamp_granularities: list[Granularity]
    stream: bool

    def options(self, task: str) -> TranscribeOptions:
        return TranscribeOptions(model=self.model, language=self.language, task=task, initial_prompt=self.prompt,
                                 temperature=self.temperature, word_timestamps="word" in self.timestamp_granularities,
                                 timestamps=self.stream or self.response_format in TIMED_FORMATS)


def audio_form(
    file: Annotated[UploadFile | None, File()] = None,
    url: Annotated[str | None, Form(min_length=1, max_length=4096)] = None,
    source: Annotated[Literal["auto", "captions", "asr"], Form()] = "auto",
    model: Annotated[str, Form()] = "whisper-1",
    language: Annotated[str | None, Form(min_length=2, max_length=8)] = None,
    prompt: Annotated[str | None, Form(max_length=2000)] = None,
    response_format: Annotated[ResponseFormat, Form()] = "json",
    temperature: Annotated[float, Form(ge=0.0, le=1.0)] = 0.0,
    timestamp_granularities: Annotated[list[Granularity] | None, Form(alias="timestamp_granularities[]")] = None,
    stream: Annotated[bool, Form()] = False,
) -> AudioForm:
    """The form fields FastAPI validated, gathered (shared by transcriptions and translations)."""
    return AudioForm(file=file, url=url, source=source, model=model, language=language, prompt=prompt,
                     response_format=response_format, temperature=temperature,
                     timestamp_granularities=timestamp_granularities or [], stream=stream)


async def read_limited(upload: UploadFile, limit: int) -> bytes:
    """The upload's bytes, refused with 413 as soon as they pass ``limit`` (not after buffering it all)."""
    parts, size = [], 0
    while chunk := await upload.read(UPLOAD_CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the upload is larger than the limit of {limit} bytes", param="file")
        parts.append(chunk)
    return b"".join(parts)


def render(result: Transcription, form: AudioForm, task: str) -> Response:
    """A transcription in the response format the request asked for."""
    if form.response_format == "text":
        return PlainTextResponse(result.text)
    if form.response_format == "srt":
        return PlainTextResponse(to_srt(result))
    if form.response_format == "vtt":
        return PlainTextResponse(to_vtt(result), media_type="text/vtt")
    if form.response_format == "verbose_json":
        granularities = form.timestamp_granularities
        return JSONResponse(to_verbose_json(result, task, segments="segment" in granularities or not granularities,
                                            words="word" in granularities))
    return JSONResponse(TranscriptionText(text=result.text).model_dump())


async def text_events(first: Segment, rest: AsyncIterator[Segment]) -> AsyncIterator[str]:
    """OpenAI's transcription stream: a ``transcript.text.delta`` per segment, then ``transcript.text.done``.

    A failure after the first event can no longer change the status code, so it ends the stream with an
    ``error`` event in OpenAI's error shape, which the official client raises.
    """
    texts = [first.text]
    yield sse({"type": "transcript.text.delta", "delta": first.text})
    try:
        async for segment in rest:
            texts.append(segment.text)
            yield sse({"type": "transcript.text.delta", "delta": " " + segment.text})
    except Exception as exc:  # the stream is already open: report the failure, do not crash
        error = unwrap(exc)
        message = error.message if isinstance(error, ServiceError) else "internal error; see the server logs"
        yield sse({"error": {"message": message, "type": "server_error", "param": None, "code": "stream_failed"}})
        return
    yield sse({"type": "transcript.text.done", "text": " ".join(texts).strip()})


def passage_hit(store: TranscriptStore, hit: dict) -> dict:
    """A search hit with its transcript's url and title, and for YouTube a link that starts at the passage."""
    transcript = store.get_transcript(hit["key"]) or {}
    url = transcript.get("url")
    link = f"{url}&t={int(hit['start'])}s" if url and transcript.get("source_key", "").startswith("youtube:") else url
    return {"transcript_id": hit["key"], "url": url, "title": transcript.get("title"), "start": hit["start"],
            "end": hit["end"], "text": hit["text"], "score": hit["score"], "link": link}


# Helpers the routes call are defined above this class: @serve.ingress pickles the app when it decorates.
@serve.deployment(name="Ingress")
@serve.ingress(api)
class Ingress:
    """Routes HTTP requests into the graph; holds no model itself."""

    def __init__(self, downloader: DeploymentHandle, transcriber: DeploymentHandle, embedder: DeploymentHandle,
                 jobs: DeploymentHandle, settings: AppSettings) -> None:
        self.settings = settings
        self.pipeline = TranscriptPipeline(downloader, transcriber, embedder, settings)
        self.jobs = jobs
        self._transcripts: TranscriptStore | None = None
        self.started = int(time.time())
        install_access(AccessControl(settings.ingress))

    @api.get("/healthz")
    @api.get("/health")  # the original lecture backend's route, which its clients still call
    async def healthz(self) -> dict:
        """Each deployment's state as the Serve controller sees it."""
        app_name = serve.get_replica_context().app_name
        app = (await asyncio.to_thread(serve.status)).applications[app_name]
        return {"status": str(app.status.value), "deployments": {n: str(d.status.value)
                                                                 for n, d in app.deployments.items()}}

    @api.get("/stats")
    async def stats(self) -> dict:
        """What the model replicas report now (one replica of each answers): model loads, memory, load."""
        pipeline = self.pipeline
        calls = {"Transcriber": pipeline.transcriber, "Embedder": pipeline.embedder, "Downloader": pipeline.downloader}
        return {name: await guarded(handle.stats.remote()) for name, handle in calls.items()}

    async def _audio(self, form: AudioForm, task: Literal["transcribe", "translate"]) -> Response:
        """Transcription and translation share everything but the task."""
        self.pipeline.check_model(form.model)
        data = None if form.file is None else await read_limited(form.file, self.settings.ingress.max_upload_bytes)
        filename = form.file.filename if form.file is not None else None
        source = "asr" if task == "translate" else form.source
        options = form.options(task)
        resolved = await self.pipeline.resolve(data, filename, form.url, source, form.language, options)
        if not form.stream:
            return render(await self.pipeline.transcription(resolved), form, task)
        segments = self.pipeline.segments(resolved).__aiter__()
        try:
            first = await guarded(segments.__anext__())
        except StopAsyncIteration:
            first = Segment(start=0.0, end=0.0, text="")
        return StreamingResponse(text_events(first, segments), media_type="text/event-stream")

    @api.post("/v1/audio/transcriptions")
    async def transcriptions(self, form: Annotated[AudioForm, Depends(audio_form)]) -> Response:
        """OpenAI's transcription endpoint: a file (or a ``url``) to text in the asked format."""
        return await self._audio(form, "transcribe")

    @api.post("/v1/audio/translations")
    async def translations(self, form: Annotated[AudioForm, Depends(audio_form)]) -> Response:
        """OpenAI's translation endpoint: speech in any language to English text."""
        return await self._audio(form, "translate")

    def _model_ids(self) -> list[str]:
        transcriber = self.settings.transcriber
        return [*transcriber.models, *transcriber.aliases, self.settings.embedder.model]

    @api.get("/v1/models")
    async def models(self) -> ModelList:
        """The Whisper models and aliases the configuration allows, and the embedding model."""
        return ModelList(data=[ModelCard(id=m, created=self.started) for m in self._model_ids()])

    @api.get("/v1/models/{model_id:path}")
    async def model(self, model_id: str) -> ModelCard:
        if model_id not in self._model_ids():
            raise UnknownModel(f"model {model_id!r} is not served here", param="model")
        return ModelCard(id=model_id, created=self.started)

    @api.post("/v1/embeddings")
    async def embeddings(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """OpenAI's embeddings endpoint on the embedder deployment."""
        return await self.pipeline.embeddings(request)

    @api.post("/v1/transcripts")
    async def transcripts(self, request: TranscriptRequest) -> TranscriptResponse:
        """A source URL's transcript (captions first, ASR otherwise) with embedded passages, added to the store."""
        response, passages = await self.pipeline.transcript_and_passages(request)
        if not request.store:
            return response
        key = await asyncio.to_thread((await self._store()).keep, response, passages)
        return response.model_copy(update={"transcript_id": key, "warning": None if passages else UNSEARCHABLE})

    async def _store(self) -> TranscriptStore:
        """The store, opened on first use (its schema needs the embedder's dimension)."""
        if self._transcripts is None:
            dimension = await guarded(self.pipeline.embedder.dimension.remote())
            self._transcripts = await asyncio.to_thread(TranscriptStore, self.settings.store.uri, dimension)
        return self._transcripts

    @api.post("/v1/jobs", status_code=202)
    async def create_job(self, request: JobRequest) -> JSONResponse:
        """Queue many sources (URLs and/or a playlist or channel URL) for ingestion into the store."""
        self.pipeline.check_model(request.model)
        urls = [u.strip() for u in request.urls if u.strip()]
        if request.playlist:
            urls += await guarded(self.pipeline.downloader.expand.remote(request.playlist))
        if not urls:
            raise InvalidRequest("give 'urls' or a 'playlist'", param="urls")
        if len(urls) > self.settings.jobs.max_urls:
            raise PayloadTooLarge(f"at most {self.settings.jobs.max_urls} items per job", param="urls")
        job_id = await guarded(self.jobs.submit.remote(request, urls))
        return JSONResponse({"job_id": job_id, "items": len(urls)}, status_code=202)

    @api.get("/v1/jobs/{job_id}")
    async def job(self, job_id: str) -> dict:
        """Counts, each item's status and reason, and the job's throughput in audio hours per hour."""
        status = await guarded(self.jobs.status.remote(job_id))
        if status is None:
            raise NotFound(f"job {job_id!r} does not exist", param="job_id")
        return status

    @api.get("/v1/transcripts")
    async def transcripts_page(self, offset: Annotated[int, Query(ge=0)] = 0,
                               limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict:
        """Stored transcripts, newest first, a page at a time."""
        total, rows = await asyncio.to_thread((await self._store()).list_transcripts, offset, limit)
        return {"object": "list", "total": total, "offset": offset, "limit": limit, "data": rows}

    @api.get("/v1/transcripts/{transcript_id:path}")
    async def stored_transcript(self, transcript_id: str) -> dict:
        """One stored transcript with its segments."""
        found = await asyncio.to_thread((await self._store()).get_transcript, transcript_id)
        if found is None:
            raise NotFound(f"transcript {transcript_id!r} is not in the store", param="transcript_id")
        return found

    @api.get("/v1/search")
    async def search(self, q: Annotated[str, Query(min_length=1, max_length=1000)],
                     k: Annotated[int, Query(ge=1, le=100)] = 5, transcript_id: str | None = None) -> dict:
        """The passages closest to a query (vectors and full text), with a link to the moment they start."""
        store = await self._store()
        (vector,) = await guarded(self.pipeline.embedder.embed.remote([q]))
        hits = await asyncio.to_thread(store.search, vector, q, k, transcript_id)
        return {"object": "list", "query": q, "data": [await asyncio.to_thread(passage_hit, store, h) for h in hits]}

    @api.post("/api/transcribe/youtube")
    async def transcribe_youtube(self, request: YoutubeRequest) -> TranscriptResponse:
        """The route the original lecture backend's clients call; same as ``/v1/transcripts``."""
        return await self.transcripts(TranscriptRequest(url=request.youtube_url, source="auto", store=request.store))


def build_app(args: dict | AppSettings) -> Application:
    """The application graph from the YAML's ``args``, validated here so errors name the bad key."""
    settings = args if isinstance(args, AppSettings) else AppSettings.model_validate(args)
    transcriber = Transcriber.bind(settings.transcriber)
    downloader = Downloader.bind(settings.downloader, transcriber)
    embedder = Embedder.bind(settings.embedder)
    jobs = JobRunner.bind(downloader, transcriber, embedder, settings)
    return Ingress.bind(downloader, transcriber, embedder, jobs, settings)
