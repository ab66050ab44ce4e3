"""Samplers of the app's processes and GPUs: replica memory by process title, peaks over a run, GPU figures."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

MIB = 2**20


def replica_memory(head_pid: int, app_name: str = "transcribe") -> dict[str, dict[str, int | None]]:
    """RSS and VRAM of every Serve replica process of the cluster under ``head_pid``, keyed ``Deployment/pid``.

    Replicas are found by the process title Ray gives them (``ray::ServeReplica:<app>:<deployment>``).
    """
    import psutil

    from deployments.nvml import read_gpu_memory

    found: dict[str, dict[str, int | None]] = {}
    marker = f"ServeReplica:{app_name}:"
    for proc in psutil.Process(head_pid).children(recursive=True):
        try:
            title = " ".join(proc.cmdline())
            if marker in title:
                deployment = title.split(marker, 1)[1].split()[0].split(".")[0]  # busy: "Transcriber.handle_…"
                found[f"{deployment}/{proc.pid}"] = {"rss": proc.memory_info().rss,
                                                     "vram": read_gpu_memory(proc.pid)[1]}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def service_processes(head_pid: int) -> dict[str, int]:
    """RSS of every replica of the app (ingress included) and of Serve's HTTP proxy."""
    import psutil

    found = {key: figures["rss"] or 0 for key, figures in replica_memory(head_pid).items()}
    for proc in psutil.Process(head_pid).children(recursive=True):
        try:
            if "ProxyActor" in " ".join(proc.cmdline()):
                found[f"Proxy/{proc.pid}"] = proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def this_process() -> dict[str, int]:
    """This process's RSS: the library modes of a benchmark run here."""
    import psutil

    return {f"benchmark/{os.getpid()}": psutil.Process().memory_info().rss}


class PeakRss:
    """Samples figures by key (RSS by process, or a GPU's) in a thread and keeps each one's maximum.

    With ``timeline`` every sample is kept too, as (seconds since the start, figures).
    """

    def __init__(self, read: Callable[[], dict[str, int]], interval_s: float = 0.25, timeline: bool = False) -> None:
        self.read, self.interval_s = read, interval_s
        self.peaks: dict[str, int] = {}
        self.timeline: list[tuple[float, dict[str, int]]] | None = [] if timeline else None
        self._started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        figures = self.read()
        for key, value in figures.items():
            self.peaks[key] = max(value, self.peaks.get(key, 0))
        if self.timeline is not None:
            self.timeline.append((round(time.perf_counter() - self._started, 2), figures))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> PeakRss:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def gpu_figures(devices: list[dict[str, int | None]] | None = None) -> dict[str, int]:
    """Each GPU's utilisation (%) and memory used (bytes) now, keyed ``gpu<N>/util`` and ``gpu<N>/vram``; a figure
    NVML does not give (utilisation on MIG) is left out, and without NVML there are none."""
    from deployments.nvml import read_devices

    devices = read_devices() if devices is None else devices
    return {f"gpu{index}/{key}": device[key] for index, device in enumerate(devices) for key in ("util", "vram")
            if device[key] is not None}


def gpu_summary(sampled: PeakRss, devices: list[dict[str, int | None]] | None = None) -> dict[str, Any]:
    """GPU utilisation (mean, peak) and VRAM (peak, the card's size) over the service's run, and the timeline;
    None where NVML gave no figure (no NVML, or MIG's utilisation)."""
    from deployments.nvml import read_devices

    devices = read_devices() if devices is None else devices
    timeline = sampled.timeline or []
    util = [figures["gpu0/util"] for _, figures in timeline if "gpu0/util" in figures]
    return {"nvml": bool(devices), "util_mean_pct": round(sum(util) / len(util), 1) if util else None,
            "util_peak_pct": max(util, default=None), "vram_peak_mib": round(sampled.peaks.get("gpu0/vram", 0) / MIB),
            "vram_total_mib": round(devices[0]["total"] / MIB) if devices else None, "timeline": timeline}
