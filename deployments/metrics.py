"""The domain metrics nobody else exports: model loads and residency, audio and real-time factor, stages, batches.

Ray already exports the rest, and the dashboard reads it there: Serve's per-replica requests, errors,
latency and queue (``ray_serve_deployment_request_counter_total``, ``…_error_counter_total``,
``…_processing_latency_ms``, ``ray_serve_replica_processing_queries``) and the reporter's per-worker memory
(``ray_component_rss_mb``, ``ray_component_gpu_memory_mb``). Ours go through ``ray.util.metrics`` and are
exported with a ``ray_`` prefix (``transcribe_serve_model_loads_total`` is scraped as
``ray_transcribe_serve_model_loads_total``). Plain-Python mirrors stay on the instance for ``/stats`` and tests.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter as Tally
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ray.util.metrics import Counter, Gauge, Histogram

from deployments.nvml import read_gpu_memory

PREFIX = "transcribe_serve_"
EXPORT_PREFIX = "ray_"
"""What Ray's metrics agent puts in front of every application metric name when it exports to Prometheus."""

MODEL_LOADS = f"{PREFIX}model_loads_total"
MODELS_RESIDENT = f"{PREFIX}models_resident"
AUDIO_SECONDS = f"{PREFIX}audio_seconds_total"
PROCESSING_SECONDS = f"{PREFIX}processing_seconds_total"
REAL_TIME_FACTOR = f"{PREFIX}real_time_factor"
STAGE_SECONDS = f"{PREFIX}stage_seconds"
BATCH_SIZE = f"{PREFIX}batch_size"

GAUGES = (MODELS_RESIDENT,)
COUNTERS = (MODEL_LOADS, AUDIO_SECONDS, PROCESSING_SECONDS)
HISTOGRAMS = (REAL_TIME_FACTOR, STAGE_SECONDS, BATCH_SIZE)

RTF_BOUNDARIES = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0]
"""Processing seconds per audio second: below 1 is faster than real time; GPU whisper sits near 0.01-0.1."""

STAGE_BOUNDARIES = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
"""Seconds of one stage of one request or batch: from a VAD pass over a block to a batch's decode."""
BATCH_BOUNDARIES = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]

REPLICA_TAGS = ("deployment", "replica")
MODEL_TAGS = (*REPLICA_TAGS, "model")
STAGE_TAGS = (*REPLICA_TAGS, "stage")
LOCAL_REPLICA = "local"


def exported_names() -> set[str]:
    """Every series name these metrics have in Prometheus, histogram series included; for dashboard checks."""
    names = {EXPORT_PREFIX + name for name in (*GAUGES, *COUNTERS)}
    for name in HISTOGRAMS:
        names |= {f"{EXPORT_PREFIX}{name}_{suffix}" for suffix in ("bucket", "sum", "count")}
    return names


@dataclass(frozen=True)
class _Instruments:
    """The Ray metric objects; one set per process, since Ray registers a metric name once per worker."""

    model_loads: Counter
    models_resident: Gauge
    audio_seconds: Counter
    processing_seconds: Counter
    real_time_factor: Histogram
    stage_seconds: Histogram
    batch_size: Histogram


_INSTRUMENTS: _Instruments | None = None
_INSTRUMENTS_LOCK = threading.Lock()


def _create_instruments() -> _Instruments:
    """Define every metric with its tag keys; called once per process."""
    return _Instruments(
        model_loads=Counter(MODEL_LOADS, "Model loads; more than one per model and replica is the bug.", MODEL_TAGS),
        models_resident=Gauge(MODELS_RESIDENT, "1 while the model is loaded in the replica, else 0.", MODEL_TAGS),
        audio_seconds=Counter(AUDIO_SECONDS, "Seconds of audio processed.", MODEL_TAGS),
        processing_seconds=Counter(PROCESSING_SECONDS, "Wall-clock seconds spent processing audio.", MODEL_TAGS),
        real_time_factor=Histogram(
            REAL_TIME_FACTOR, "Processing seconds per audio second, per request.", RTF_BOUNDARIES, MODEL_TAGS
        ),
        stage_seconds=Histogram(STAGE_SECONDS, "Seconds per stage (audio decode, VAD, queue wait, batch decode, "
                                "encode, generate, align), per request or batch.", STAGE_BOUNDARIES, STAGE_TAGS),
        batch_size=Histogram(BATCH_SIZE, "Windows per decoded batch.", BATCH_BOUNDARIES, REPLICA_TAGS),
    )


def instruments() -> _Instruments:
    """The process's metric objects, created on first use so that importing this module costs nothing."""
    global _INSTRUMENTS
    with _INSTRUMENTS_LOCK:
        if _INSTRUMENTS is None:
            _INSTRUMENTS = _create_instruments()
        return _INSTRUMENTS


def replica_id() -> str:
    """This replica's tag (as Serve's own metrics label it), or ``local`` outside a Serve replica."""
    from ray import serve
    from ray.serve.exceptions import RayServeException

    try:
        return serve.get_replica_context().replica_tag
    except RayServeException:
        return LOCAL_REPLICA


def rss_bytes() -> int:
    """Resident set size of this process."""
    import psutil  # Ray vendors psutil and puts it on sys.path once ``ray`` is imported (done above).

    return int(psutil.Process().memory_info().rss)


def memory_now() -> dict[str, int | None]:
    """This process's RSS and the GPU memory NVML says it holds (None off GPU), read now for ``/stats``."""
    return {"rss_bytes": rss_bytes(), "gpu_memory_bytes": read_gpu_memory(os.getpid())[1]}


@dataclass
class Tracked:
    """One tracked call: set ``audio_seconds`` (and ``model``) inside the block when known only after decoding."""

    kind: str
    model: str
    audio_seconds: float = 0.0
    processing_seconds: float = 0.0
    error: str | None = None


@dataclass
class _Figures:
    """Plain-Python mirrors of what was exported, and the calls in flight, for ``/stats`` and tests."""

    model_loads: Tally[str] = field(default_factory=Tally)
    models_resident: list[str] = field(default_factory=list)
    audio_seconds: float = 0.0
    audio_seconds_by_model: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    processing_seconds: float = 0.0
    in_flight: int = 0
    stage_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    stage_counts: Tally[str] = field(default_factory=Tally)
    batch_sizes: Tally[int] = field(default_factory=Tally)


class ReplicaMetrics:
    """The domain metrics of one replica, tagged with its deployment and replica id; cheap to call per request."""

    def __init__(self, deployment: str) -> None:
        self.deployment = deployment
        self.replica = replica_id()
        self.tags = {"deployment": deployment, "replica": self.replica}
        self.metrics = instruments()
        self.figures = _Figures()
        self._lock = threading.Lock()
        self._known_models: set[str] = set()

    def _with(self, **tags: str) -> dict[str, str]:
        """The replica's tags plus ``tags``."""
        return {**self.tags, **tags}

    def model_loaded(self, model: str) -> None:
        """Count one model load; a steady rate of these means a load per request."""
        self.metrics.model_loads.inc(1, tags=self._with(model=model))
        with self._lock:
            self.figures.model_loads[model] += 1

    def models_resident(self, models: list[str]) -> None:
        """Mark ``models`` resident (1) and every model seen before but now gone (0); sum by replica to count."""
        with self._lock:
            self._known_models |= set(models)
            gone = sorted(self._known_models - set(models))
            self.figures.models_resident = list(models)
        for model in models:
            self.metrics.models_resident.set(1, tags=self._with(model=model))
        for model in gone:
            self.metrics.models_resident.set(0, tags=self._with(model=model))

    def audio(self, seconds_in: float, processing_seconds: float, model: str) -> None:
        """Add audio and processing seconds and observe their ratio (the real-time factor) when both are known."""
        tags = self._with(model=model)
        if seconds_in > 0:
            self.metrics.audio_seconds.inc(float(seconds_in), tags=tags)
        if processing_seconds > 0:
            self.metrics.processing_seconds.inc(float(processing_seconds), tags=tags)
        if seconds_in > 0 and processing_seconds > 0:
            self.metrics.real_time_factor.observe(processing_seconds / seconds_in, tags=tags)
        with self._lock:
            self.figures.audio_seconds += max(seconds_in, 0.0)
            self.figures.audio_seconds_by_model[model] += max(seconds_in, 0.0)
            self.figures.processing_seconds += max(processing_seconds, 0.0)

    def _in_flight(self, change: int) -> None:
        with self._lock:
            self.figures.in_flight = max(self.figures.in_flight + change, 0)

    @contextmanager
    def track(self, kind: str, model: str, audio_seconds: float = 0.0, timed: bool = True) -> Iterator[Tracked]:
        """Keep a call in the in-flight count and time it; a call that raises adds no audio.

        Serve counts the request and its error itself. ``timed=False`` leaves audio and processing seconds to
        the caller: a batch times its windows together.
        """
        tracked = Tracked(kind=kind, model=model, audio_seconds=audio_seconds)
        self._in_flight(1)
        start = time.perf_counter()
        try:
            yield tracked
        except BaseException as error:
            tracked.error = type(error).__name__
            raise
        finally:
            tracked.processing_seconds = time.perf_counter() - start
            self._in_flight(-1)
        if timed:
            self.audio(tracked.audio_seconds, tracked.processing_seconds, tracked.model)

    def stage(self, name: str, seconds: float) -> None:
        """Count ``seconds`` spent in one run of stage ``name``: where a request's time goes, per replica."""
        with self._lock:
            self.figures.stage_seconds[name] += seconds
            self.figures.stage_counts[name] += 1
        self.metrics.stage_seconds.observe(seconds, tags=self._with(stage=name))

    def batch(self, size: int) -> None:
        """Count one decoded batch of ``size`` windows."""
        with self._lock:
            self.figures.batch_sizes[size] += 1
        self.metrics.batch_size.observe(size, tags=self.tags)

    def stats(self) -> dict[str, Any]:
        """The plain figures and this process's memory now, JSON-ready, with the real-time factor when derivable."""
        with self._lock:
            figures = self.figures
            audio, processing = figures.audio_seconds, figures.processing_seconds
            return {
                "deployment": self.deployment,
                "replica": self.replica,
                "model_loads": dict(figures.model_loads),
                "models_resident": list(figures.models_resident),
                "audio_seconds": audio,
                "audio_seconds_by_model": dict(figures.audio_seconds_by_model),
                "processing_seconds": processing,
                "real_time_factor": processing / audio if audio > 0 else None,
                "in_flight": figures.in_flight,
                "stage_seconds": dict(figures.stage_seconds),
                "stage_counts": dict(figures.stage_counts),
                "batch_sizes": dict(figures.batch_sizes),
                **memory_now(),
            }
