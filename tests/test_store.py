"""The store keeps speakers: on stored segments and passages, as a search filter, and in an older store."""

from __future__ import annotations

from pathlib import Path

import lancedb
import pyarrow as pa

from deployments.schemas import Passage, TimedText
from deployments.store import CHUNKS, TranscriptStore
from serve_app.protocol import TranscriptResponse


def _transcript() -> TranscriptResponse:
    segments = [TimedText(start=0, end=2, text="Where do rivers end?", speaker="A"),
                TimedText(start=2, end=5, text="Most rivers end in the sea.", speaker="Ruth")]
    return TranscriptResponse(id="upload:x", url=None, title="talk", duration_s=5, source="asr", language="en",
                              model="tiny.en", text="…", segments=segments, chunks=[], embedding_dim=2)


def test_speakers_are_kept_on_segments_and_passages_and_filter_search(tmp_path: Path) -> None:
    store = TranscriptStore(str(tmp_path), dimension=2)
    passages = [Passage(start=0, end=2, text="Where do rivers end?", vector=[1.0, 0.0], speaker="A"),
                Passage(start=2, end=5, text="Most rivers end in the sea.", vector=[0.9, 0.1], speaker="Ruth")]
    key = store.keep(_transcript(), passages)
    assert [s["speaker"] for s in store.get_transcript(key)["segments"]] == ["A", "Ruth"]
    hits = store.search([1.0, 0.0], "rivers", k=5, speaker="Ruth")
    assert [(h["speaker"], h["text"]) for h in hits] == [("Ruth", "Most rivers end in the sea.")]
    assert {h["speaker"] for h in store.search([1.0, 0.0], "rivers", k=5)} == {"A", "Ruth"}


def test_a_store_made_before_speakers_gains_the_column(tmp_path: Path) -> None:
    old = pa.schema([("chunk_id", pa.string()), ("key", pa.string()), ("start", pa.float64()),
                     ("end", pa.float64()), ("text", pa.string()), ("vector", pa.list_(pa.float32(), 2))])
    lancedb.connect(str(tmp_path)).create_table(CHUNKS, schema=old)
    store = TranscriptStore(str(tmp_path), dimension=2)
    store.keep(_transcript(), [Passage(start=0, end=2, text="Where do rivers end?", vector=[1.0, 0.0], speaker="A")])
    assert [h["speaker"] for h in store.search([1.0, 0.0], "rivers", k=5, speaker="A")] == ["A"]
