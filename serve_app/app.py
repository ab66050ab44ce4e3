"""The HTTP routes, the app factory over the graph, the Ingress deployment and the application builder.

Each Ingress replica builds its own FastAPI app with ``create_app`` (Serve's late-bound ingress), so what
an app needs (the graph's handles, the access policy) is on that app's state, not in module globals.
``serve run configs/local.yaml`` imports ``serve_app.app:build_app``, which validates the YAML's ``args``
against ``AppSettings`` before anything starts, so a bad key fails with its name.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from deployments.diarizer import Diarizer
from deployments.downloader import Downloader
from deployments.embedder import Embedder
from deployments.errors import InvalidRequest, NotFound, PayloadTooLarge, UnknownModel, as_service_error
from deployments.handles import ServiceHandle
from deployments.jobs import JobRunner
from deployments.pipeline import TranscriptPipeline
from deployments.schemas import (
    Passage,
    Reference,
    Segment,
    SourceMode,
    TranscribeOptions,
    Transcript,
    Transcription,
)
from deployments.transcriber import Transcriber
from serve_app.access import AccessControl
from serve_app.access import install as install_access
from serve_app.embeddings import embeddings
from serve_app.errors import install_error_handlers
from serve_app.formats import (
    TIMED_FORMATS,
    ResponseFormat,
    diarized_segment,
    sse,
    to_diarized_json,
    to_srt,
    to_verbose_json,
    to_vtt,
)
from serve_app.protocol import (
    MAX_SPEAKERS,
    EmbeddingRequest,
    EmbeddingResponse,
    JobRequest,
    ModelCard,
    ModelList,
    TranscriptionText,
    TranscriptRequest,
    TranscriptResponse,
    YoutubeRequest,
    known_speakers,
    speaker_range,
)
from serve_app.realtime import router as realtime_router
from serve_app.realtime_session import Slots
from serve_app.settings import AppSettings
from serve_app.web import install as install_page

UPLOAD_CHUNK = 1024 * 1024
UNSEARCHABLE = ("stored without passages (embedding was off or there was no text): /v1/search will not find it; "
                "post it again with \"embed\": true to make it searchable")
Granularity = Literal["segment", "word"]
StoredFormat = Literal["json", "text", "srt", "vtt"]


class AudioForm(BaseModel):
    """OpenAI's multipart audio request, plus ``url``, ``source`` and ``diarize`` (this service's extensions)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    file: UploadFile | None
    url: str | None
    source: SourceMode
    model: str | None
    """None: routed by language when ``transcriber.routing`` is configured, else the default model."""
    language: str | None
    prompt: str | None
    response_format: ResponseFormat
    temperature: float
    timestamp_granularities: list[Granularity]
    stream: bool
    diarize: bool
    """Asked with ``diarize=true``, or implied by ``response_format=diarized_json``, known speakers or a count."""
    known_speakers: list[Reference]
    min_speakers: int | None
    max_speakers: int | None

    def options(self, task: str) -> TranscribeOptions:
        return TranscribeOptions(model=self.model, language=self.language, task=task, initial_prompt=self.prompt,
                                 temperature=self.temperature, word_timestamps="word" in self.timestamp_granularities,
                                 timestamps=self.stream or self.response_format in TIMED_FORMATS,
                                 diarize=self.diarize, min_speakers=self.min_speakers, max_speakers=self.max_speakers)


def check_chunking(value: str | None, fields: dict[str, str]) -> None:
    """OpenAI's ``chunking_strategy``: ``auto``, or a ``server_vad`` object (as JSON, or flattened into form fields
    ``chunking_strategy[type]`` … as the official client sends it). Accepted and checked; windows are always
    cut at silences here (``downloader.window_s``)."""
    kind = fields.get("chunking_strategy[type]")
    if value is not None and kind is None:
        try:
            parsed = json.loads(value) if value.strip().startswith("{") else value
        except json.JSONDecodeError as error:
            raise InvalidRequest(f"chunking_strategy is not valid JSON ({error.msg})",
                                 param="chunking_strategy") from error
        kind = parsed.get("type") if isinstance(parsed, dict) else parsed
    if value is None and kind is None:
        return
    if kind not in ("auto", "server_vad"):
        raise InvalidRequest("chunking_strategy must be 'auto' or an object of type 'server_vad'",
                             param="chunking_strategy")


async def audio_form(
    request: Request,
    file: Annotated[UploadFile | None, File()] = None,
    url: Annotated[str | None, Form(min_length=1, max_length=4096)] = None,
    source: Annotated[SourceMode, Form()] = "auto",
    model: Annotated[str | None, Form(min_length=1)] = None,
    language: Annotated[str | None, Form(min_length=2, max_length=8)] = None,
    prompt: Annotated[str | None, Form(max_length=2000)] = None,
    response_format: Annotated[ResponseFormat, Form()] = "json",
    temperature: Annotated[float, Form(ge=0.0, le=1.0)] = 0.0,
    timestamp_granularities: Annotated[list[Granularity] | None, Form(alias="timestamp_granularities[]")] = None,
    stream: Annotated[bool, Form()] = False,
    diarize: Annotated[bool, Form()] = False,
    chunking_strategy: Annotated[str | None, Form(max_length=1000)] = None,
    known_speaker_names: Annotated[list[str] | None, Form(alias="known_speaker_names[]")] = None,
    known_speaker_references: Annotated[list[str] | None, Form(alias="known_speaker_references[]")] = None,
    min_speakers: Annotated[int | None, Form(ge=1, le=MAX_SPEAKERS)] = None,
    max_speakers: Annotated[int | None, Form(ge=1, le=MAX_SPEAKERS)] = None,
) -> AudioForm:
    """The form fields FastAPI validated, gathered (shared by transcriptions and translations); ``request`` for
    the fields the official client flattens (``chunking_strategy[type]``)."""
    check_chunking(chunking_strategy, {k: v for k, v in (await request.form()).items() if isinstance(v, str)})
    known = known_speakers(known_speaker_names or [], known_speaker_references or [])
    low, high = speaker_range(min_speakers, max_speakers, len(known))
    asked = diarize or response_format == "diarized_json" or bool(known) or low is not None or high is not None
    return AudioForm(file=file, url=url, source=source, model=model, language=language, prompt=prompt,
                     response_format=response_format, temperature=temperature,
                     timestamp_granularities=timestamp_granularities or [], stream=stream,
                     diarize=asked, known_speakers=known, min_speakers=low, max_speakers=high)


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
        return PlainTextResponse(to_srt(result.segments))
    if form.response_format == "vtt":
        return PlainTextResponse(to_vtt(result.segments), media_type="text/vtt")
    if form.response_format == "diarized_json":
        return JSONResponse(to_diarized_json(result, task))
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
        yield failure_event(exc)
        return
    yield sse({"type": "transcript.text.done", "text": " ".join(texts).strip()})


async def diarized_events(transcription: Awaitable[Transcription]) -> AsyncIterator[str]:
    """OpenAI's diarized stream: a ``transcript.text.segment`` per segment with its speaker, then
    ``transcript.text.done``. Speakers are known once the whole source is clustered, so the segments come then."""
    try:
        result = await transcription
    except Exception as exc:  # the stream is already open: report the failure, do not crash
        yield failure_event(exc)
        return
    for segment in result.segments:
        if segment.text.strip():
            yield sse(diarized_segment(segment))
    yield sse({"type": "transcript.text.done", "text": result.text})


def failure_event(exc: Exception) -> str:
    """A failure after a stream's first event, in OpenAI's error shape (which the official client raises)."""
    error = as_service_error(exc)
    message = error.message if error is not None else "internal error; see the server logs"
    return sse({"error": {"message": message, "type": "server_error", "param": None, "code": "stream_failed"}})


class Graph:
    """What the routes reach: the settings, the pipeline, each deployment's handle; the JobRunner owns the store."""

    def __init__(self, settings: AppSettings, downloader: ServiceHandle, transcriber: ServiceHandle,
                 embedder: ServiceHandle, jobs: ServiceHandle, diarizer: ServiceHandle | None = None) -> None:
        self.settings = settings
        self.pipeline = TranscriptPipeline(downloader, embedder, settings.transcriber, diarizer)
        self.handles = {"Transcriber": transcriber, "Embedder": embedder, "Downloader": downloader,
                        **({"Diarizer": diarizer} if diarizer is not None else {})}
        self.transcriber = transcriber
        self.embedder = embedder
        self.jobs = jobs
        self.started = int(time.time())

    def model_ids(self) -> list[str]:
        """Every model name a request may give: Whisper models, their aliases, the routed name, the embedding model."""
        transcriber = self.settings.transcriber
        routed = [transcriber.routing.name] if transcriber.routing is not None else []
        return [*transcriber.models, *transcriber.aliases, *routed, self.settings.embedder.model]

    def card(self, model_id: str) -> ModelCard:
        """The model object of one id; a speech model's (an alias's: its target's) with its languages."""
        transcriber = self.settings.transcriber
        name = transcriber.resolve(model_id) if model_id != self.settings.embedder.model else None
        return ModelCard(id=model_id, created=self.started,
                         languages=transcriber.languages_of(name) if name is not None else None)


def graph_of(request: Request) -> Graph:
    """The graph of the app this request reached (per-app state, set by ``create_app``)."""
    return request.app.state.graph


GraphDep = Annotated[Graph, Depends(graph_of)]
router = APIRouter()


@router.get("/healthz")
@router.get("/health")  # the original lecture backend's route, which its clients still call
async def healthz(request: Request) -> dict:
    """Each deployment's state as the Serve controller sees it, and whether other routes need an API key."""
    app_name = serve.get_replica_context().app_name
    app = (await asyncio.to_thread(serve.status)).applications[app_name]
    return {"status": str(app.status.value), "deployments": {n: str(d.status.value)
                                                             for n, d in app.deployments.items()},
            "api_key_required": request.app.state.access.keys_required}


@router.get("/stats")
async def stats(graph: GraphDep) -> dict:
    """What the model replicas report now (one replica of each answers): model loads, memory, load."""
    return {name: await handle.stats.remote() for name, handle in graph.handles.items()}


async def _audio(graph: Graph, form: AudioForm, task: Literal["transcribe", "translate"]) -> Response:
    """Transcription and translation share everything but the task."""
    pipeline = graph.pipeline
    pipeline.check_source_model(form.model, form.language)
    data = None if form.file is None else await read_limited(form.file, graph.settings.ingress.max_upload_bytes)
    filename = form.file.filename if form.file is not None else None
    source = "asr" if task == "translate" else form.source
    options = form.options(task)
    resolved = await pipeline.resolve(data, filename, form.url, source, form.language, options, form.known_speakers)
    if not form.stream:
        return render(await pipeline.transcription(resolved), form, task)
    if form.diarize:
        return StreamingResponse(diarized_events(pipeline.transcription(resolved)), media_type="text/event-stream")
    segments = pipeline.segments(resolved).__aiter__()
    try:
        first = await segments.__anext__()
    except StopAsyncIteration:
        first = Segment(start=0.0, end=0.0, text="")
    return StreamingResponse(text_events(first, segments), media_type="text/event-stream")


@router.post("/v1/audio/transcriptions")
async def transcriptions(graph: GraphDep, form: Annotated[AudioForm, Depends(audio_form)]) -> Response:
    """OpenAI's transcription endpoint: a file (or a ``url``) to text in the asked format."""
    return await _audio(graph, form, "transcribe")


@router.post("/v1/audio/translations")
async def translations(graph: GraphDep, form: Annotated[AudioForm, Depends(audio_form)]) -> Response:
    """OpenAI's translation endpoint: speech in any language to English text."""
    return await _audio(graph, form, "translate")


@router.get("/v1/models", response_model_exclude_none=True)
async def models(graph: GraphDep) -> ModelList:
    """The Whisper models, their aliases and the routed name the configuration allows, with the languages each
    transcribes, and the embedding model."""
    return ModelList(data=[graph.card(m) for m in graph.model_ids()])


@router.get("/v1/models/{model_id:path}", response_model_exclude_none=True)
async def model(graph: GraphDep, model_id: str) -> ModelCard:
    """One model the configuration allows."""
    if model_id not in graph.model_ids():
        raise UnknownModel(f"model {model_id!r} is not served here", param="model")
    return graph.card(model_id)


@router.post("/v1/embeddings")
async def create_embeddings(graph: GraphDep, request: EmbeddingRequest) -> EmbeddingResponse:
    """OpenAI's embeddings endpoint on the embedder deployment."""
    return await embeddings(graph.embedder, request, graph.settings)


async def _transcript(graph: Graph, request: TranscriptRequest) -> TranscriptResponse:
    """A source URL's transcript with embedded passages (and, with ``translate``, its English version), kept in the
    store unless the request says not to."""
    spec = request.spec(graph.settings.ingress.default_embed)
    transcript, passages = await graph.pipeline.transcript_and_passages(spec)
    translated = await graph.pipeline.translation(spec, transcript) if spec.translate else None
    english = None if translated is None else await _answer(graph, *translated, request.store)
    return (await _answer(graph, transcript, passages, request.store)).model_copy(update={"translation": english})


async def _answer(graph: Graph, transcript: Transcript, passages: list[Passage], store: bool) -> TranscriptResponse:
    """A transcript as answered, kept in the store first when ``store``."""
    response = TranscriptResponse(**transcript.model_dump())
    if not store:
        return response
    key = await graph.jobs.keep.remote(transcript, passages)
    return response.model_copy(update={"transcript_id": key, "warning": None if passages else UNSEARCHABLE})


@router.post("/v1/transcripts")
async def transcripts(graph: GraphDep, request: TranscriptRequest) -> TranscriptResponse:
    """A source URL's transcript (captions first, ASR otherwise) with embedded passages, added to the store."""
    return await _transcript(graph, request)


@router.post("/v1/jobs", status_code=202)
async def create_job(graph: GraphDep, request: JobRequest) -> JSONResponse:
    """Queue many sources (URLs and/or a playlist or channel URL) for ingestion into the store."""
    graph.pipeline.check_source_model(request.model, request.language)
    graph.pipeline.check_diarize(request.diarize, request.source)
    return JSONResponse(await graph.jobs.submit.remote(request.spec(), request.urls, request.playlist),
                        status_code=202)


@router.get("/v1/jobs/{job_id}")
async def job(graph: GraphDep, job_id: str) -> dict:
    """Counts, each item's status and reason, and the job's throughput in audio hours per hour."""
    status = await graph.jobs.status.remote(job_id)
    if status is None:
        raise NotFound(f"job {job_id!r} does not exist", param="job_id")
    return status


@router.get("/v1/transcripts")
async def transcripts_page(graph: GraphDep, offset: Annotated[int, Query(ge=0)] = 0,
                           limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict:
    """Stored transcripts, newest first, a page at a time."""
    total, rows = await graph.jobs.transcripts.remote(offset, limit)
    return {"object": "list", "total": total, "offset": offset, "limit": limit, "data": rows}


@router.get("/v1/transcripts/{transcript_id:path}", response_model=None)
async def stored_transcript(graph: GraphDep, transcript_id: str,
                            response_format: StoredFormat = "json") -> dict | Response:
    """One stored transcript with its segments, or as plain text, SubRip or WebVTT (the page's downloads)."""
    found = await graph.jobs.transcript.remote(transcript_id)
    if found is None:
        raise NotFound(f"transcript {transcript_id!r} is not in the store", param="transcript_id")
    if response_format == "json":
        return found
    if response_format == "text":
        return PlainTextResponse(found["text"])
    segments = [Segment.model_validate(s) for s in found["segments"]]
    if response_format == "srt":
        return PlainTextResponse(to_srt(segments))
    return PlainTextResponse(to_vtt(segments), media_type="text/vtt")


@router.get("/v1/search")
async def search(graph: GraphDep, q: Annotated[str, Query(min_length=1, max_length=1000)],
                 k: Annotated[int, Query(ge=1, le=100)] = 5, transcript_id: str | None = None,
                 speaker: Annotated[str | None, Query(min_length=1, max_length=200)] = None) -> dict:
    """The passages closest to a query (vectors and full text; of one speaker when ``speaker`` is given), with
    who spoke them and a link to the moment they start."""
    return {"object": "list", "query": q, "data": await graph.jobs.search.remote(q, k, transcript_id, speaker)}


@router.post("/api/transcribe/youtube")
async def transcribe_youtube(graph: GraphDep, request: YoutubeRequest) -> TranscriptResponse:
    """The route the original lecture backend's clients call; same as ``/v1/transcripts``."""
    return await _transcript(graph, TranscriptRequest(url=request.youtube_url, source="auto", store=request.store))


def create_app(graph: Graph) -> FastAPI:
    """The HTTP app over ``graph``: its routes, error mapping and access policy, all kept on this app."""
    api = FastAPI(title="transcribe-serve", version="0.1.0")
    api.state.graph = graph
    install_error_handlers(api)
    install_access(api, AccessControl(graph.settings.ingress))
    api.state.realtime_slots = Slots(graph.settings.realtime.max_sessions)
    api.state.realtime_partials = Slots(graph.settings.realtime.max_partials_in_flight)
    api.include_router(router)
    api.include_router(realtime_router)
    install_page(api)
    return api


@serve.deployment(name="Ingress")
@serve.ingress()
class Ingress:
    """Routes HTTP requests into the graph; holds no model itself. Serve builds its app after ``__init__``."""

    def __init__(self, downloader: DeploymentHandle, transcriber: DeploymentHandle, embedder: DeploymentHandle,
                 jobs: DeploymentHandle, settings: AppSettings, diarizer: DeploymentHandle | None = None) -> None:
        self.graph = Graph(settings, ServiceHandle(downloader), ServiceHandle(transcriber), ServiceHandle(embedder),
                           ServiceHandle(jobs), None if diarizer is None else ServiceHandle(diarizer))

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve's late-bound ingress: this replica's app, built by the factory over this replica's graph."""
        return create_app(self.graph)


def bound(deployment: object, *args: Any) -> Application:
    """``deployment.bind(*args)``: ``@serve.deployment`` made the class a Deployment, which mypy cannot see."""
    return cast(Any, deployment).bind(*args)


def build_app(args: dict | AppSettings) -> Application:
    """The application graph from the YAML's ``args``, validated here so errors name the bad key."""
    settings = args if isinstance(args, AppSettings) else AppSettings.model_validate(args)
    transcriber = bound(Transcriber, settings.transcriber)
    diarizer = None if settings.diarizer is None else bound(Diarizer, settings.diarizer)
    downloader = bound(Downloader, settings.downloader, transcriber, diarizer, settings.transcriber.routing)
    embedder = bound(Embedder, settings.embedder)
    jobs = bound(JobRunner, downloader, embedder, settings.transcriber, settings.store, settings.jobs, diarizer)
    return bound(Ingress, downloader, transcriber, embedder, jobs, settings, diarizer)
