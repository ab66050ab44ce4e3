"""Ingestion jobs: many sources, each landing in the store or failing with a reason, resumable.

The JobRunner is the store's one owner: it opens it, runs the jobs, and answers the Ingress's transcript
reads, writes and searches, so one process writes the tables. Job and item state live in the store, not in
the actor: a JobRunner replica that starts (after a crash or a redeploy) resumes every unfinished job's
remaining items. A playlist is expanded here, where its items run, so thousands of URLs never cross the graph.
Items run concurrently up to a limit, each through the graph's pipeline (the Downloader spreads its windows
over the Transcribers); one item's failure never touches the others.
Transient failures (network, overload, a replica lost mid-request) are retried with exponential backoff
and a cap; permanent ones (private, removed, not audio) are not.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.downloader import source_identity
from deployments.errors import InvalidRequest, Overloaded, PayloadTooLarge, SourceUnreachable, as_service_error, unwrap
from deployments.handles import ServiceHandle
from deployments.pipeline import TranscriptPipeline
from deployments.schemas import JobSpec, Passage, Transcript, TranscriptSpec
from deployments.settings import JobSettings, StoreSettings, TranscriberSettings
from deployments.store import TranscriptStore, other_version

FINAL = frozenset({"done", "failed", "skipped"})


def is_transient(error: BaseException) -> bool:
    """Worth retrying: the network, an overloaded deployment, or a replica lost while it worked."""
    return isinstance(as_service_error(error), (SourceUnreachable, Overloaded))


def describe(error: BaseException) -> tuple[str, str]:
    """(error type, message) for an item's record."""
    mapped = as_service_error(error)
    if mapped is not None:
        return mapped.code, mapped.message
    cause = unwrap(error)
    return type(cause).__name__, str(cause)[:500] or type(cause).__name__


def summarize(job: dict[str, Any], items: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """Counts per status, each item, audio seconds and the job's throughput in audio hours per hour."""
    counts = {status: 0 for status in ("queued", "running", "done", "failed", "skipped")}
    for item in items:
        counts[item["status"]] = counts.get(item["status"], 0) + 1
    started = datetime.fromisoformat(job["created_at"])
    ended = datetime.fromisoformat(job["finished_at"]) if job["finished_at"] else now
    wall = max((ended - started).total_seconds(), 1e-9)
    audio = sum(i["audio_seconds"] or 0.0 for i in items if i["status"] == "done")
    return {
        "job_id": job["job_id"],
        "status": "finished" if job["finished_at"] else "running",
        "created_at": job["created_at"],
        "finished_at": job["finished_at"],
        "counts": counts,
        "audio_seconds": round(audio, 3),
        "wall_seconds": round(wall, 3),
        "audio_hours_per_hour": round(audio / wall, 3),
        "items": [{k: i[k] for k in ("position", "url", "status", "source", "audio_seconds", "error_type",
                                     "error_message", "transcript_key", "attempts")} for i in items],
    }


class JobManager:
    """Runs jobs against the pipeline and keeps their state in the store."""

    def __init__(self, store: TranscriptStore, pipeline: TranscriptPipeline, settings: JobSettings) -> None:
        self.store = store
        self.pipeline = pipeline
        self.settings = settings
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._tasks: dict[str, asyncio.Task] = {}

    async def submit(self, spec: JobSpec, urls: list[str], playlist: str | None = None) -> dict[str, Any]:
        """Persist a job of ``urls`` and the playlist's items, sharing ``spec``, and start it: its id and size."""
        urls = [u.strip() for u in urls if u.strip()]
        if playlist:
            urls += await self.pipeline.expand(playlist)
        if not urls:
            raise InvalidRequest("give 'urls' or a 'playlist'", param="urls")
        if len(urls) > self.settings.max_urls:
            raise PayloadTooLarge(f"at most {self.settings.max_urls} items per job", param="urls")
        job_id = uuid.uuid4().hex[:16]
        await asyncio.to_thread(self.store.create_job, job_id, spec.model_dump(), urls)
        self.start(job_id)
        return {"job_id": job_id, "items": len(urls)}

    def start(self, job_id: str) -> None:
        if job_id not in self._tasks or self._tasks[job_id].done():
            self._tasks[job_id] = asyncio.create_task(self._run(job_id))

    def resume_unfinished(self) -> list[str]:
        """Start every job the store says is unfinished (after a restart)."""
        jobs = [job["job_id"] for job in self.store.unfinished_jobs()]
        for job_id in jobs:
            self.start(job_id)
        return jobs

    async def status(self, job_id: str) -> dict[str, Any] | None:
        job = await asyncio.to_thread(self.store.get_job, job_id)
        if job is None:
            return None
        items = await asyncio.to_thread(self.store.job_items, job_id)
        return summarize(job, items, datetime.now(datetime.fromisoformat(job["created_at"]).tzinfo))

    async def _run(self, job_id: str) -> None:
        job = await asyncio.to_thread(self.store.get_job, job_id)
        assert job is not None, f"job {job_id} was started, so the store has it"
        spec = JobSpec.model_validate(json.loads(job["request"]))
        items = await asyncio.to_thread(self.store.job_items, job_id)
        await asyncio.gather(*(self._item(item, spec) for item in items if item["status"] not in FINAL))
        await asyncio.to_thread(self.store.finish_job, job_id)

    async def _item(self, item: dict[str, Any], spec: JobSpec) -> None:
        async with self._slots:
            update = self.store.update_item
            models = self.pipeline.models_for(spec.model, spec.language) if spec.source != "captions" else []
            stored = await asyncio.to_thread(self.store.stored_source, source_identity(item["url"]), models)
            if stored is not None and item["status"] == "running":  # stored by this job before its runner stopped
                await asyncio.to_thread(update, item, status="done", source=stored["source"],
                                        audio_seconds=stored["duration"], transcript_key=stored["key"])
                return
            if stored is not None:
                await asyncio.to_thread(update, item, status="skipped")
                return
            item = await asyncio.to_thread(update, item, status="running")
            for attempt in range(1, self.settings.max_attempts + 1):
                try:
                    await self._ingest(item, spec, attempt)
                    return
                except Exception as error:  # every failure is recorded on its item, never raised
                    if not is_transient(error) or attempt == self.settings.max_attempts:
                        kind, message = describe(error)
                        await asyncio.to_thread(update, item, status="failed", error_type=kind,
                                                error_message=message, attempts=attempt)
                        return
                    await asyncio.sleep(min(self.settings.backoff_cap_s, self.settings.backoff_s * 2 ** (attempt - 1)))

    async def _ingest(self, item: dict[str, Any], spec: JobSpec, attempt: int) -> None:
        item_spec = TranscriptSpec(url=item["url"], source=spec.source, language=spec.language, model=spec.model,
                                   embed=True, diarize=spec.diarize, translate=spec.translate)
        transcript, passages = await self.pipeline.transcript_and_passages(item_spec)
        translated = await self.pipeline.translation(item_spec, transcript) if spec.translate else None
        if translated is not None:
            await asyncio.to_thread(self.store.keep, *translated)
        key = await asyncio.to_thread(self.store.keep, transcript, passages)
        await asyncio.to_thread(self.store.update_item, item, status="done", source=transcript.source,
                                audio_seconds=transcript.duration_s, transcript_key=key, attempts=attempt)


@serve.deployment(name="JobRunner")
class JobRunner:
    """Serve wrapper: one replica owns the store (its only writer) and the running jobs, whose state is in it."""

    async def __init__(self, downloader: DeploymentHandle, embedder: DeploymentHandle,  # type: ignore[misc]
                       transcriber_settings: TranscriberSettings, store_settings: StoreSettings,
                       job_settings: JobSettings, diarizer: DeploymentHandle | None = None) -> None:
        self.embedder = ServiceHandle(embedder)
        pipeline = TranscriptPipeline(ServiceHandle(downloader), self.embedder, transcriber_settings,
                                      None if diarizer is None else ServiceHandle(diarizer))
        dimension = await self.embedder.dimension.remote()
        self.store = await asyncio.to_thread(TranscriptStore, store_settings.uri, dimension)
        self.manager = JobManager(self.store, pipeline, job_settings)
        self.manager.resume_unfinished()

    async def submit(self, spec: JobSpec, urls: list[str], playlist: str | None = None) -> dict[str, Any]:
        return await self.manager.submit(spec, urls, playlist)

    async def status(self, job_id: str) -> dict[str, Any] | None:
        return await self.manager.status(job_id)

    async def keep(self, transcript: Transcript, passages: list[Passage]) -> str:
        """Store a transcript and its passages; returns its key."""
        return await asyncio.to_thread(self.store.keep, transcript, passages)

    async def transcripts(self, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """One page of stored transcripts, newest first, and the total count."""
        return await asyncio.to_thread(self.store.list_transcripts, offset, limit)

    async def transcript(self, key: str) -> dict[str, Any] | None:
        """One stored transcript with its segments, or None; with the key of its other version (``translate``: the
        English one, or the original of an English one) when that is stored too."""
        found = await asyncio.to_thread(self.store.get_transcript, key)
        other = other_version(key)
        if found is not None and await asyncio.to_thread(self.store.get_transcript, other) is not None:
            found["other_version"] = other
        return found

    async def search(self, query: str, k: int, key: str | None = None,
                     speaker: str | None = None) -> list[dict[str, Any]]:
        """The passages closest to ``query`` (embedded here), with their transcripts' url and title."""
        (vector,) = await self.embedder.embed.remote([query])
        return await asyncio.to_thread(self.store.search, vector, query, k, key, speaker)
