"""NVML, read through nvidia-ml-py's ``pynvml``: one session per process, shared by the metrics, the VRAM
budget and the benchmarks. Every reader returns "unknown" instead of raising where there is no GPU, no
driver, or (MIG) no figure."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class NvmlProcess(Protocol):
    """The two fields of NVML's process record (``nvmlDeviceGetComputeRunningProcesses``) that matter here."""

    pid: int
    usedGpuMemory: int | None


def gpu_memory_of(pid: int, processes_by_device: Iterable[Iterable[NvmlProcess]]) -> int | None:
    """GPU memory ``pid`` uses summed over devices; None when it is on none or NVML gives no figure for it."""
    figures = [
        int(record.usedGpuMemory)
        for processes in processes_by_device
        for record in processes
        if int(record.pid) == pid and record.usedGpuMemory is not None
    ]
    return sum(figures) if figures else None


def _import_nvml() -> ModuleType | None:
    """nvidia-ml-py's ``pynvml`` (a dependency); None where it is not installed."""
    try:
        import pynvml

        return pynvml
    except ImportError:
        return None


class _Nvml:
    """NVML opened once per process; ``available`` is False on CPU nodes or when the library or driver is missing."""

    def __init__(self) -> None:
        self.module: Any = _import_nvml()  # pynvml, untyped; used only when ``available``
        self.available = self.module is not None and self._init()

    def _init(self) -> bool:
        """nvmlInit, reporting failure (no driver, no GPU) as unavailable instead of raising."""
        try:
            self.module.nvmlInit()
            return True
        except Exception as error:  # NVMLError subclasses, or OSError from a broken libnvidia-ml
            logger.debug("NVML unavailable: %s", error)
            return False

    def handles(self) -> Iterator[Any]:
        """Device handles to query: each whole GPU, or its MIG slices when MIG mode is on."""
        nvml = self.module
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            yield from self._mig_handles(handle) or [handle]

    def _mig_handles(self, handle: Any) -> list[Any]:
        """The MIG device handles of a GPU in MIG mode; empty when MIG is off or unsupported."""
        nvml = self.module
        try:
            current, _pending = nvml.nvmlDeviceGetMigMode(handle)
            if current != nvml.NVML_DEVICE_MIG_ENABLE:
                return []
            slices = []
            for index in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
                try:
                    slices.append(nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, index))
                except nvml.NVMLError:
                    continue
            return slices
        except (nvml.NVMLError, AttributeError):
            return []

    def processes_by_device(self) -> list[list[NvmlProcess]]:
        """Compute processes per device; a device that cannot report them contributes an empty list."""
        result: list[list[NvmlProcess]] = []
        for handle in self.handles():
            try:
                result.append(list(self.module.nvmlDeviceGetComputeRunningProcesses(handle)))
            except self.module.NVMLError as error:
                logger.debug("NVML process list unavailable: %s", error)
                result.append([])
        return result


@functools.cache
def nvml() -> _Nvml:
    """The process's NVML session, opened on first use (nvmlInit counts its callers, so a race costs nothing)."""
    return _Nvml()


def read_devices() -> list[dict[str, int | None]]:
    """Each GPU (or MIG slice): utilisation (%, None where NVML has none, as on MIG) and memory used and total
    (bytes) now; empty without NVML, so a benchmark records no GPU figures instead of failing."""
    session = nvml()
    if not session.available:
        return []
    found = []
    for handle in session.handles():
        try:
            memory = session.module.nvmlDeviceGetMemoryInfo(handle)
        except session.module.NVMLError as error:
            logger.debug("NVML memory figures unavailable: %s", error)
            continue
        found.append({"util": _utilisation(session.module, handle), "vram": int(memory.used),
                      "total": int(memory.total)})
    return found


def _utilisation(module: ModuleType, handle: Any) -> int | None:
    """The device's utilisation in percent; None where NVML does not report it (MIG slices)."""
    try:
        return int(module.nvmlDeviceGetUtilizationRates(handle).gpu)
    except module.NVMLError:
        return None


def read_gpu_memory(pid: int) -> tuple[bool, int | None]:
    """(whether NVML answered, bytes ``pid`` uses or None); never raises, so a sampler cannot die on it."""
    session = nvml()
    if not session.available:
        return False, None
    try:
        return True, gpu_memory_of(pid, session.processes_by_device())
    except Exception as error:  # a driver hiccup must not take the replica's metrics down
        logger.debug("NVML query failed: %s", error)
        return False, None
