"""The transcript store: LanceDB tables for transcripts, their embedded passages, and ingestion jobs.

An embedded directory by default; an object-store URI (``s3://…``, ``gs://…``) in production so that
every node writes to the same tables. Writes are upserts on a stable key (the source's identity plus
the model), so ingesting a source again replaces its rows and never duplicates them.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

TRANSCRIPTS = "transcripts"
CHUNKS = "chunks"
JOBS = "jobs"
ITEMS = "job_items"
LISTED = ["key", "url", "title", "duration", "source", "language", "translated_from", "model", "created_at"]
"""The columns of a transcript in a listing (its text and segments are read only when it is asked for)."""
HIDDEN_PASSAGE_COLUMNS = frozenset({"chunk_id", "key", "vector"})


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _quote(value: str) -> str:
    """A string literal for a LanceDB filter."""
    return "'" + value.replace("'", "''") + "'"


def _schemas(dimension: int) -> dict[str, pa.Schema]:
    text, number = pa.string(), pa.float64()
    return {
        TRANSCRIPTS: pa.schema([("key", text), ("source_key", text), ("url", text), ("title", text),
                                ("duration", number), ("source", text), ("language", text), ("model", text),
                                ("text", text), ("segments", text), ("created_at", text), ("translated_from", text)]),
        CHUNKS: pa.schema([("chunk_id", text), ("key", text), ("start", number), ("end", number), ("text", text),
                           ("vector", pa.list_(pa.float32(), dimension)), ("speaker", text)]),
        JOBS: pa.schema([("job_id", text), ("created_at", text), ("finished_at", text), ("request", text)]),
        ITEMS: pa.schema([("item_id", text), ("job_id", text), ("position", pa.int64()), ("url", text),
                          ("status", text), ("source", text), ("audio_seconds", number), ("error_type", text),
                          ("error_message", text), ("transcript_key", text), ("attempts", pa.int64()),
                          ("updated_at", text)]),
    }


def transcript_key(source_key: str, model: str | None) -> str:
    """The store's key: the source's identity plus the model that made the text (``captions`` for captions)."""
    return f"{source_key}|{model or 'captions'}"


ENGLISH_VERSION = "+en"
"""A source's identity with this suffix is the English version of its transcript (``translate: true``)."""


def other_version(key: str) -> str:
    """The key of a stored transcript's English version, or of the original for an English version's key."""
    source, _, model = key.rpartition("|")
    if source.endswith(ENGLISH_VERSION):
        return f"{source.removesuffix(ENGLISH_VERSION)}|{model}"
    return f"{source}{ENGLISH_VERSION}|{model}"


def transcript_record(response: Any) -> dict[str, Any]:
    """A transcript row from a transcript answer (``TranscriptResponse``: id, url, title, text, segments…)."""
    return {"key": transcript_key(response.id, response.model), "source_key": response.id, "url": response.url,
            "title": response.title, "duration": response.duration_s, "source": response.source,
            "language": response.language, "translated_from": response.translated_from,
            "model": response.model or "captions", "text": response.text,
            "segments": [s.model_dump() for s in response.segments]}


def passage_hit(hit: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    """A search hit: the passage's columns, its transcript's url and title, and for YouTube a link to the moment."""
    url = source.get("url")
    youtube = (source.get("source_key") or "").startswith("youtube:")
    score = hit.get("_relevance_score", 1 - hit.get("_distance", 1.0))
    passage = {name: value for name, value in hit.items()
               if name not in HIDDEN_PASSAGE_COLUMNS and not name.startswith("_")}
    return {"transcript_id": hit["key"], "url": url, "title": source.get("title"), **passage,
            "score": float(score), "link": f"{url}&t={int(hit['start'])}s" if url and youtube else url}


class TranscriptStore:
    """LanceDB tables behind small, typed methods; safe to share between threads of one process."""

    def __init__(self, uri: str, dimension: int) -> None:
        import lancedb

        if "://" not in uri:
            Path(uri).expanduser().mkdir(parents=True, exist_ok=True)
            uri = str(Path(uri).expanduser())
        # Writers are other processes (the JobRunner): check for their commits on every read.
        self.db = lancedb.connect(uri, read_consistency_interval=timedelta(0))
        self.tables = {name: self._open(name, schema) for name, schema in _schemas(dimension).items()}
        self._lock = threading.Lock()
        self._fts_ready = False

    def _open(self, name: str, schema: pa.Schema) -> Any:
        """The table, created when new; a table an older version made gains the columns it lacks, empty.

        So adding a column to a schema above is all a new field takes: stored rows read it as null.
        """
        try:
            table = self.db.open_table(name)
        except ValueError:  # LanceDB's answer for a table that does not exist yet
            return self.db.create_table(name, schema=schema, exist_ok=True)
        missing = [field for field in schema if field.name not in table.schema.names]
        if missing:
            table.add_columns(missing)
        return table

    def _upsert(self, table: str, key: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            with self._lock:
                self.tables[table].merge_insert(key).when_matched_update_all().when_not_matched_insert_all() \
                    .execute(rows)

    def _where(self, table: str, condition: str, limit: int | None = None) -> list[dict[str, Any]]:
        query = self.tables[table].search().where(condition)
        return query.limit(limit).to_list() if limit else query.to_arrow().to_pylist()

    # transcripts --------------------------------------------------------------------------------------------

    def put_transcript(self, record: dict[str, Any], passages: list[dict[str, Any]]) -> None:
        """Upsert a transcript and replace its passages (a shorter re-ingest leaves no stale chunks)."""
        key = record["key"]
        self._upsert(TRANSCRIPTS, "key", [{**record, "segments": json.dumps(record["segments"]),
                                            "created_at": _now()}])
        with self._lock:
            self.tables[CHUNKS].delete(f"key = {_quote(key)}")
        self._upsert(CHUNKS, "chunk_id", [{**p, "chunk_id": f"{key}#{i}", "key": key} for i, p in enumerate(passages)])

    def keep(self, response: Any, passages: list[Any]) -> str:
        """Upsert a transcript answer and its passages (``Passage`` models); returns its key."""
        record = transcript_record(response)
        self.put_transcript(record, [p.model_dump() for p in passages])
        return record["key"]

    def get_transcript(self, key: str) -> dict[str, Any] | None:
        rows = self._where(TRANSCRIPTS, f"key = {_quote(key)}", limit=1)
        return {**rows[0], "segments": json.loads(rows[0]["segments"])} if rows else None

    def stored_source(self, source_key: str, models: list[str]) -> dict[str, Any] | None:
        """The stored transcript of this source by one of ``models`` (or from its captions): its key, duration and
        source."""
        keys = [*(transcript_key(source_key, model) for model in models), transcript_key(source_key, None)]
        rows = self._where(TRANSCRIPTS, f"key IN ({', '.join(map(_quote, keys))})", limit=1)
        return {name: rows[0][name] for name in ("key", "duration", "source")} if rows else None

    def list_transcripts(self, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """One page of transcripts (without their text and segments), newest first, and the total count.

        Only the key and creation time of every row are read to order them (LanceDB has no ORDER BY);
        the page's other columns are read for its rows alone.
        """
        table = self.tables[TRANSCRIPTS]
        order = table.search().select(["key", "created_at"]).limit(None).to_arrow()
        ranked = order.take(pc.sort_indices(order, [("created_at", "descending"), ("key", "descending")]))
        keys = ranked.column("key").to_pylist()[offset:offset + limit]
        if not keys:
            return order.num_rows, []
        rows = table.search().where(f"key IN ({', '.join(map(_quote, keys))})").select(LISTED) \
            .limit(len(keys)).to_list()
        by_key = {row["key"]: {name: row[name] for name in LISTED} for row in rows}
        return order.num_rows, [by_key[key] for key in keys if key in by_key]

    def search(self, vector: list[float], text: str, k: int, key: str | None = None,
               speaker: str | None = None) -> list[dict[str, Any]]:
        """The best passages (of one transcript, one speaker when given), each with its transcript's url and title
        (read once per transcript, not per hit).

        Vectors and full text together (hybrid) where LanceDB can, vectors alone else. A hit carries every
        passage column but the vector, so a column added to the passages reaches the results as it is.
        """
        table = self.tables[CHUNKS]
        conditions = [f"{column} = {_quote(value)}" for column, value in (("key", key), ("speaker", speaker)) if value]
        try:
            self._ensure_fts()
            query = table.search(query_type="hybrid").vector(vector).text(text)
        except (ValueError, RuntimeError, OSError):
            query = table.search(vector)
        if conditions:
            query = query.where(" AND ".join(conditions), prefilter=True)
        hits = query.limit(k).to_list()
        sources = self._sources({h["key"] for h in hits})
        return [passage_hit(h, sources.get(h["key"], {})) for h in hits]

    def _sources(self, keys: set[str]) -> dict[str, dict[str, Any]]:
        """The url, title and source key of each transcript in ``keys``, in one read."""
        if not keys:
            return {}
        rows = self.tables[TRANSCRIPTS].search().where(f"key IN ({', '.join(map(_quote, sorted(keys)))})") \
            .select(["key", "url", "title", "source_key"]).limit(len(keys)).to_list()
        return {row["key"]: row for row in rows}

    def _ensure_fts(self) -> None:
        if not self._fts_ready:
            from lancedb.index import FTS

            with self._lock:
                self.tables[CHUNKS].create_index("text", config=FTS(), replace=True)
            self._fts_ready = True

    # jobs ---------------------------------------------------------------------------------------------------

    def create_job(self, job_id: str, request: dict[str, Any], urls: list[str]) -> None:
        self._upsert(JOBS, "job_id", [{"job_id": job_id, "created_at": _now(), "finished_at": None,
                                        "request": json.dumps(request)}])
        self._upsert(ITEMS, "item_id", [
            {"item_id": f"{job_id}#{i}", "job_id": job_id, "position": i, "url": url, "status": "queued",
             "source": None, "audio_seconds": 0.0, "error_type": None, "error_message": None,
             "transcript_key": None, "attempts": 0, "updated_at": _now()}
            for i, url in enumerate(urls)
        ])

    def update_item(self, item: dict[str, Any], **changes: Any) -> dict[str, Any]:
        updated = {**item, **changes, "updated_at": _now()}
        self._upsert(ITEMS, "item_id", [updated])
        return updated

    def finish_job(self, job_id: str) -> None:
        job = self.get_job(job_id)
        if job is not None:
            self._upsert(JOBS, "job_id", [{**job, "finished_at": _now()}])

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        rows = self._where(JOBS, f"job_id = {_quote(job_id)}", limit=1)
        return rows[0] if rows else None

    def job_items(self, job_id: str) -> list[dict[str, Any]]:
        return sorted(self._where(ITEMS, f"job_id = {_quote(job_id)}"), key=lambda r: r["position"])

    def unfinished_jobs(self) -> list[dict[str, Any]]:
        return self._where(JOBS, "finished_at IS NULL")
