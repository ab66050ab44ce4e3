"""Passage chunking, and the real all-MiniLM-L6-v2 embedding model without Ray."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from deployments.embedder import EmbeddingEngine, cap_gpu_memory, chunk_by_speaker, chunk_segments
from deployments.schemas import Segment
from deployments.settings import EmbedderSettings


def segments(*texts: str, seconds: float = 2.0) -> list[Segment]:
    return [Segment(id=i, start=i * seconds, end=(i + 1) * seconds, text=t) for i, t in enumerate(texts)]


def test_passages_cover_every_segment_in_order_with_their_times() -> None:
    segs = segments(*(f"w{i}a w{i}b w{i}c" for i in range(10)))
    passages = chunk_segments(segs, words=6, overlap_words=3)
    assert passages[0].start == 0.0 and passages[-1].end == 20.0
    assert passages[0].text == "w0a w0b w0c w1a w1b w1c"
    covered = " ".join(p.text for p in passages)
    assert all(f"w{i}a" in covered for i in range(10))
    starts = [p.start for p in passages]
    assert starts == sorted(starts)


def test_consecutive_passages_overlap_by_whole_segments() -> None:
    passages = chunk_segments(segments(*(f"s{i} x y" for i in range(8))), words=9, overlap_words=3)
    for first, second in zip(passages, passages[1:], strict=False):
        assert second.start < first.end
        assert second.text.split()[0] in first.text.split()


def test_a_passage_never_spans_a_change_of_speaker() -> None:
    texts = (f"s{i} x" for i in range(6))
    segs = [s.model_copy(update={"speaker": "A" if s.id < 3 else "B"}) for s in segments(*texts)]
    passages = chunk_by_speaker(segs, words=100, overlap_words=2)
    assert [(p.speaker, p.text) for p in passages] == [("A", "s0 x s1 x s2 x"), ("B", "s3 x s4 x s5 x")]
    assert [p.speaker for p in chunk_by_speaker(segments("a b", "c d"), words=100, overlap_words=2)] == [None]


def test_a_segment_longer_than_the_window_is_its_own_passage() -> None:
    long_text = " ".join(["word"] * 50)
    passages = chunk_segments(segments(long_text, "short end"), words=10, overlap_words=2)
    assert passages[0].text == long_text
    assert passages[-1].text.endswith("short end")


def test_empty_transcript_has_no_passages() -> None:
    assert chunk_segments([], words=10, overlap_words=2) == []


@pytest.fixture(scope="module")
def engine() -> EmbeddingEngine:
    return EmbeddingEngine(EmbedderSettings())


def test_vectors_are_unit_length_and_meaningful(engine: EmbeddingEngine) -> None:
    vectors = engine.embed([
        "The river floods after heavy rain.",
        "Heavy rainfall makes the river overflow.",
        "Add salt to the onions in the pan.",
    ])
    assert vectors.shape == (3, engine.dimension) == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert similar > unrelated + 0.3


def test_tokens_are_counted_with_the_model_tokenizer(engine: EmbeddingEngine) -> None:
    assert engine.count_tokens([]) == 0
    one = engine.count_tokens(["rain"])
    assert one == 3  # [CLS] rain [SEP]
    assert engine.count_tokens(["rain", "heavy rain falls"]) == one + 5


class FakeCuda:
    """torch.cuda's memory cap on a node whose driver accepts it, or refuses it."""

    def __init__(self, refuse: bool) -> None:
        self.refuse, self.fractions = refuse, []

    def set_per_process_memory_fraction(self, fraction: float) -> None:
        if self.refuse:
            raise RuntimeError("CUDA driver version is insufficient for CUDA runtime version")
        self.fractions.append(fraction)


def test_the_embedder_caps_torch_at_its_share_or_warns_and_runs_uncapped(caplog: pytest.LogCaptureFixture) -> None:
    accepted = FakeCuda(refuse=False)
    assert cap_gpu_memory(accepted, 0.08) and accepted.fractions == [0.08]
    with caplog.at_level(logging.WARNING, logger="deployments.embedder"):
        assert not cap_gpu_memory(FakeCuda(refuse=True), 0.08)
    assert "could not cap its GPU memory at 8% of the card" in caplog.text
