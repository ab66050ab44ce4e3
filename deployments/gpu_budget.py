"""VRAM budgets for replicas that share a GPU: Ray does not isolate them, so each replica checks itself.

A Whisper replica measures what its model takes once loaded and refuses to start when the replicas
that fit on one GPU at its ``num_gpus`` share would together pass the configured ceiling of the card.
"""

from __future__ import annotations

import math
import os

GIB = 2**30


def replicas_per_gpu(gpu_share: float) -> int:
    """How many replicas Ray packs onto one GPU at ``num_gpus: gpu_share``."""
    return max(1, math.floor(1 / gpu_share + 1e-9)) if gpu_share > 0 else 1


def check_vram_budget(footprint: int, card_total: int, gpu_share: float, ceiling: float) -> None:
    """Raise with the numbers when ``replicas_per_gpu × footprint`` passes ``ceiling`` of the card."""
    replicas = replicas_per_gpu(gpu_share)
    if replicas * footprint > ceiling * card_total:
        raise RuntimeError(
            f"VRAM budget: the model takes {footprint / GIB:.2f} GiB; {replicas} replicas per GPU (num_gpus "
            f"{gpu_share:g}) need {replicas * footprint / GIB:.2f} GiB, past {ceiling:.0%} of the card's "
            f"{card_total / GIB:.1f} GiB ({ceiling * card_total / GIB:.1f} GiB). Raise num_gpus, lower "
            "transcriber.compute_type, or pick a smaller model."
        )


def this_process_on_gpu() -> tuple[int, int] | None:
    """(bytes this process holds, the card's total bytes) from NVML; None off GPU or without NVML."""
    from deployments.metrics import nvml

    lib = nvml()
    if not lib.available:
        return None
    for handle, processes in zip(lib.handles(), lib.processes_by_device(), strict=False):
        used = sum(p.usedGpuMemory or 0 for p in processes if p.pid == os.getpid())
        if used:
            return used, int(lib.module.nvmlDeviceGetMemoryInfo(handle).total)
    return None


def assigned_gpu_share() -> float:
    """The GPU fraction Ray gave this replica (its ``num_gpus``); 0 outside Ray or on CPU."""
    import ray

    if not ray.is_initialized():
        return 0.0
    return float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0))
