"""VRAM budgets for replicas that share a GPU: Ray does not isolate them, so each replica checks itself.

A Whisper replica measures what it holds after a warm-up batch of ``max_batch_size`` windows (batched
decoding adds gigabytes to the weights) and again after every later model load, and refuses when the
replicas that fit on one GPU at its ``num_gpus`` share would together pass the configured ceiling of the
card. Where NVML cannot attribute memory to this process (a container with its own PID namespace), the
device's change since before the load stands in for it; where NVML is missing, the replica says loudly
that nothing was checked.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

GIB = 2**30

logger = logging.getLogger(__name__)


class VramBudgetExceeded(RuntimeError):
    """The replicas sharing a GPU would pass the configured ceiling of the card."""


@dataclass(frozen=True)
class VramReading:
    """One look at this replica's GPU: its own bytes (None when NVML cannot attribute them) and the device's."""

    process_bytes: int | None
    device_used: int
    device_total: int


def replicas_per_gpu(gpu_share: float) -> int:
    """How many replicas Ray packs onto one GPU at ``num_gpus: gpu_share``."""
    return max(1, math.floor(1 / gpu_share + 1e-9)) if gpu_share > 0 else 1


def check_vram_budget(footprint: int, card_total: int, gpu_share: float, ceiling: float,
                      what: str = "the model") -> None:
    """Raise with the numbers when ``replicas_per_gpu × footprint`` passes ``ceiling`` of the card."""
    replicas = replicas_per_gpu(gpu_share)
    if replicas * footprint > ceiling * card_total:
        raise VramBudgetExceeded(
            f"VRAM budget: {what} takes {footprint / GIB:.2f} GiB; {replicas} replicas per GPU (num_gpus "
            f"{gpu_share:g}) need {replicas * footprint / GIB:.2f} GiB, past {ceiling:.0%} of the card's "
            f"{card_total / GIB:.1f} GiB ({ceiling * card_total / GIB:.1f} GiB). Raise num_gpus, lower "
            "transcriber.compute_type or max_batch_size, or pick a smaller model."
        )


def visible_device(lib: Any, visible: str | None) -> Any:
    """The NVML handle of the first device in ``CUDA_VISIBLE_DEVICES`` (an index or a GPU-/MIG- UUID); 0 if unset."""
    first = (visible or "0").split(",")[0].strip()
    if first.isdigit():
        return lib.module.nvmlDeviceGetHandleByIndex(int(first))
    return lib.module.nvmlDeviceGetHandleByUUID(first)


def read_vram(lib: Any = None, pid: int | None = None) -> VramReading | None:
    """This process's and its device's GPU memory now, from NVML; None without NVML (CPU nodes, no driver)."""
    from deployments.nvml import gpu_memory_of, nvml

    lib = lib or nvml()
    if not lib.available:
        return None
    memory = lib.module.nvmlDeviceGetMemoryInfo(visible_device(lib, os.environ.get("CUDA_VISIBLE_DEVICES")))
    mine = gpu_memory_of(os.getpid() if pid is None else pid, lib.processes_by_device())
    return VramReading(process_bytes=mine, device_used=int(memory.used), device_total=int(memory.total))


class VramBudget:
    """One replica's VRAM check: started before its first model loads, settled after the warm-up batch,
    repeated after every later model load with the warm-up's batch memory added."""

    def __init__(self, gpu_share: float, ceiling: float,
                 read: Callable[[], VramReading | None] = read_vram) -> None:
        self.gpu_share, self.ceiling, self._read = gpu_share, ceiling, read
        self.before = self.reading()
        """The device before this replica loaded anything: the fallback's zero."""
        self.batch_bytes = 0
        """What a warm-up batch added to the loaded model: room every later model needs on top of its weights."""
        self.settled = False

    def reading(self) -> VramReading | None:
        """NVML's figures for this replica now (None without NVML)."""
        return self._read()

    def _own_bytes(self, reading: VramReading) -> int:
        """This replica's bytes, or (NVML cannot see its PID) the device's growth since it started: an upper bound."""
        if reading.process_bytes is not None:
            return reading.process_bytes
        return max(reading.device_used - (self.before.device_used if self.before is not None else 0), 0)

    def _check(self, reading: VramReading, extra: int, what: str) -> None:
        """Refuse when this replica's share would pass the ceiling; without attribution, when the card itself would.

        The device's growth also counts neighbours that loaded meanwhile, so multiplying it by the replicas
        per GPU would refuse healthy replicas that start together: the card's own figure is checked instead.
        """
        if reading.process_bytes is not None:
            check_vram_budget(reading.process_bytes + extra, reading.device_total, self.gpu_share, self.ceiling, what)
            return
        grown = self._own_bytes(reading) + extra
        logger.warning(
            "VRAM budget: NVML lists no memory for this process (a container with its own PID namespace?); "
            "checking the whole card instead: %.2f of %.2f GiB used, this replica grew it by up to %.2f GiB "
            "(%d replicas per GPU would need up to %.2f GiB)", (reading.device_used + extra) / GIB,
            reading.device_total / GIB, grown / GIB, replicas_per_gpu(self.gpu_share),
            replicas_per_gpu(self.gpu_share) * grown / GIB)
        if reading.device_used + extra > self.ceiling * reading.device_total:
            raise VramBudgetExceeded(
                f"VRAM budget: the card holds {(reading.device_used + extra) / GIB:.2f} GiB with {what}, past "
                f"{self.ceiling:.0%} of its {reading.device_total / GIB:.1f} GiB (NVML cannot attribute memory "
                "to this process, so the card's own figure was checked). Raise num_gpus, lower "
                "transcriber.compute_type or max_batch_size, or pick a smaller model.")

    def after_warm_up(self, loaded: VramReading | None) -> None:
        """Check the replica after its warm-up batch; ``loaded`` was read after the model loaded, before the batch."""
        reading = self.reading()
        self.settled = True
        if reading is None or loaded is None:
            logger.error("VRAM budget NOT checked: NVML is not available in this replica (libnvidia-ml.so.1 "
                         "missing?), so nothing stops the replicas on this GPU from running it out of memory")
            return
        self.batch_bytes = max(self._own_bytes(reading) - self._own_bytes(loaded), 0)
        self._check(reading, 0, "the model with a warm-up batch")

    def after_load(self, model: str) -> None:
        """Check again once another model has loaded (before any batch of it): now plus the warm-up's batch memory."""
        if not self.settled:
            return  # the first model: checked after the warm-up batch instead
        reading = self.reading()
        if reading is None:
            logger.error("VRAM budget NOT checked after loading %s: NVML is not available", model)
            return
        self._check(reading, self.batch_bytes, f"{model} loaded next to the resident models, with a batch's memory,")


def assigned_gpu_share() -> float:
    """The GPU fraction Ray gave this replica (its ``num_gpus``); 0 outside Ray or on CPU."""
    import ray

    if not ray.is_initialized():
        return 0.0
    return float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0))
