"""TranscriptStore without Ray: pages read in the store, search hits with their transcript and speaker, older
tables opened."""

from __future__ import annotations

from pathlib import Path

import lancedb
import pyarrow as pa
import pytest

from deployments.schemas import Passage, TimedText, Transcript
from deployments.store import CHUNKS, TranscriptStore

DIMENSION = 4


def transcript(source_key: str, url: str, title: str, text: str) -> Transcript:
    return Transcript(id=source_key, url=url, title=title, duration_s=3.0, source="asr", language="en",
                      model="tiny.en", text=text, segments=[TimedText(start=0.0, end=3.0, text=text)], chunks=[],
                      embedding_dim=DIMENSION)


def passage(text: str, start: float, axis: int) -> Passage:
    vector = [0.0] * DIMENSION
    vector[axis] = 1.0
    return Passage(start=start, end=start + 2.0, text=text, vector=vector)


@pytest.fixture
def store(tmp_path: Path) -> TranscriptStore:
    return TranscriptStore(str(tmp_path / "store"), DIMENSION)


def test_pages_are_newest_first_and_count_every_transcript(store: TranscriptStore) -> None:
    keys = [store.keep(transcript(f"url:{i}", f"http://127.0.0.1:9/{i}.wav", f"talk {i}", "words"), [])
            for i in range(7)]
    total, first = store.list_transcripts(0, 3)
    _, rest = store.list_transcripts(3, 10)
    assert total == 7
    listed = [row["key"] for row in first + rest]
    assert sorted(listed) == sorted(keys) and len(listed) == 7
    stamps = [row["created_at"] for row in first + rest]
    assert stamps == sorted(stamps, reverse=True)
    assert set(first[0]) == {"key", "url", "title", "duration", "source", "language", "translated_from", "model",
                            "created_at"}
    assert store.list_transcripts(7, 3) == (7, [])


def test_search_hits_carry_their_transcripts_url_title_and_youtube_link(store: TranscriptStore) -> None:
    talk = store.keep(transcript("url:talk", "http://127.0.0.1:9/talk.wav", "A talk", "onions"),
                      [passage("onions and carrots in a pan", 0.0, 0), passage("the river in spring", 2.0, 1)])
    video = store.keep(transcript("youtube:abcdefghijk", "https://www.youtube.com/watch?v=abcdefghijk", "A video",
                                  "rivers"), [passage("a river runs to the sea", 61.5, 1)])
    hits = store.search([0.0, 1.0, 0.0, 0.0], "river", 3)
    by_text = {hit["text"]: hit for hit in hits}
    river = by_text["a river runs to the sea"]
    assert (river["transcript_id"], river["title"], river["start"], river["end"]) == (video, "A video", 61.5, 63.5)
    assert river["link"] == "https://www.youtube.com/watch?v=abcdefghijk&t=61s"
    spring = by_text["the river in spring"]
    assert (spring["transcript_id"], spring["url"], spring["title"]) == (talk, "http://127.0.0.1:9/talk.wav",
                                                                        "A talk")
    assert spring["link"] == spring["url"] and "vector" not in spring and isinstance(spring["score"], float)
    only = store.search([1.0, 0.0, 0.0, 0.0], "onions", 3, key=talk)
    assert {hit["transcript_id"] for hit in only} == {talk}


def test_a_table_from_an_older_version_gains_the_passage_columns_it_lacks(tmp_path: Path) -> None:
    """Passages stored before a column existed open with that column empty, and searching them still works."""
    uri = tmp_path / "store"
    uri.mkdir()
    old = pa.schema([("chunk_id", pa.string()), ("key", pa.string()), ("start", pa.float64()),
                     ("vector", pa.list_(pa.float32(), DIMENSION))])
    lancedb.connect(str(uri)).create_table(CHUNKS, data=[{"chunk_id": "k#0", "key": "k", "start": 4.0,
                                                          "vector": [1.0, 0.0, 0.0, 0.0]}], schema=old)
    store = TranscriptStore(str(uri), DIMENSION)
    assert {"end", "text"} <= set(store.tables[CHUNKS].schema.names)
    (hit,) = store.search([1.0, 0.0, 0.0, 0.0], "anything", 1)
    assert (hit["transcript_id"], hit["start"], hit["text"], hit["url"]) == ("k", 4.0, None, None)


def _dialogue() -> Transcript:
    segments = [TimedText(start=0, end=2, text="Where do rivers end?", speaker="A"),
                TimedText(start=2, end=5, text="Most rivers end in the sea.", speaker="Ruth")]
    return Transcript(id="upload:x", url=None, title="talk", duration_s=5, source="asr", language="en",
                              model="tiny.en", text="…", segments=segments, chunks=[], embedding_dim=2)


def test_speakers_are_kept_on_segments_and_passages_and_filter_search(tmp_path: Path) -> None:
    store = TranscriptStore(str(tmp_path), dimension=2)
    passages = [Passage(start=0, end=2, text="Where do rivers end?", vector=[1.0, 0.0], speaker="A"),
                Passage(start=2, end=5, text="Most rivers end in the sea.", vector=[0.9, 0.1], speaker="Ruth")]
    key = store.keep(_dialogue(), passages)
    assert [s["speaker"] for s in store.get_transcript(key)["segments"]] == ["A", "Ruth"]
    hits = store.search([1.0, 0.0], "rivers", k=5, speaker="Ruth")
    assert [(h["speaker"], h["text"]) for h in hits] == [("Ruth", "Most rivers end in the sea.")]
    assert {h["speaker"] for h in store.search([1.0, 0.0], "rivers", k=5)} == {"A", "Ruth"}


def test_a_store_made_before_speakers_gains_the_column(tmp_path: Path) -> None:
    old = pa.schema([("chunk_id", pa.string()), ("key", pa.string()), ("start", pa.float64()),
                     ("end", pa.float64()), ("text", pa.string()), ("vector", pa.list_(pa.float32(), 2))])
    lancedb.connect(str(tmp_path)).create_table(CHUNKS, schema=old)
    store = TranscriptStore(str(tmp_path), dimension=2)
    store.keep(_dialogue(), [Passage(start=0, end=2, text="Where do rivers end?", vector=[1.0, 0.0], speaker="A")])
    assert [h["speaker"] for h in store.search([1.0, 0.0], "rivers", k=5, speaker="A")] == ["A"]
