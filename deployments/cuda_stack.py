"""Whether a node's CUDA stack can run the models: cuBLAS 12 made visible, one tiny encode, and the GPU preflight.

CTranslate2 4.8 (faster-whisper's engine) opens ``libcublas.so.12`` with dlopen at its first GPU matrix
product, not when a model loads: with a torch built for another CUDA major the model loads, the replica
reports healthy, and the first request fails ("Library libcublas.so.12 is not found"). So the cuBLAS 12
of the ``nvidia-cublas-cu12`` wheel is loaded by path before a model, and a replica runs one encode in
``__init__``: a broken stack fails the deployment, not the first user.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deployments.audio import SAMPLE_RATE

CUBLAS = "libcublas.so.12"
CUBLAS_LT = "libcublasLt.so.12"
FIX = ("install the GPU stack with `make install-gpu` (torch for CUDA 12 and nvidia-cublas-cu12), or put a "
       "CUDA 12 cuBLAS on LD_LIBRARY_PATH")


def on_gpu(device: str) -> bool:
    """Whether a configured ``device`` (cpu, cuda, auto) runs on a GPU: ``auto`` does where CTranslate2 sees one."""
    return device == "cuda" or (device == "auto" and _cuda_devices() > 0)


@functools.cache
def _cuda_devices() -> int:
    """CUDA devices CTranslate2 sees on this machine (0 without a driver); asked once per process."""
    import ctranslate2

    return ctranslate2.get_cuda_device_count()


class CudaStackBroken(RuntimeError):
    """The model loaded but cannot compute on the GPU: a missing or mismatched CUDA library, or no device."""


def cublas12_dirs(paths: Iterable[str] | None = None) -> list[Path]:
    """Folders of the nvidia-cublas-cu12 wheel (``site-packages/nvidia/cublas/lib``) that hold cuBLAS 12."""
    found = (Path(p) / "nvidia" / "cublas" / "lib" for p in (sys.path if paths is None else paths) if p)
    return list(dict.fromkeys(d for d in found if (d / CUBLAS).is_file()))


def preload_cublas12(dirs: Sequence[Path] | None = None,
                     load: Callable[..., Any] = ctypes.CDLL) -> Path | None:
    """Load the wheel's cuBLAS 12 globally so CTranslate2's dlopen finds it by name; its path, or None if absent."""
    for folder in cublas12_dirs() if dirs is None else dirs:
        if (folder / CUBLAS).is_file():
            if (folder / CUBLAS_LT).is_file():
                load(str(folder / CUBLAS_LT), mode=ctypes.RTLD_GLOBAL)
            load(str(folder / CUBLAS), mode=ctypes.RTLD_GLOBAL)
            return folder / CUBLAS
    return None


def encode_once(model: Any, sample_rate: int = SAMPLE_RATE) -> None:
    """One encoder pass over a second of silence on the model's device; raises ``CudaStackBroken`` saying why."""
    features = model.feature_extractor(np.zeros(sample_rate, dtype=np.float32))
    try:
        model.encode(features)
    except RuntimeError as error:
        hint = f"; {FIX}" if "cublas" in str(error).lower() or "cuda" in str(error).lower() else ""
        raise CudaStackBroken(f"the Whisper model loaded but one encode failed: {error}{hint}") from error


@dataclass(frozen=True)
class Line:
    """One named check of the GPU preflight and what it found."""

    name: str
    ok: bool
    detail: str

    def __str__(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"


Check = tuple[str, Callable[[], str]]
"""A check's name and a function that returns what it found, or raises saying what is wrong."""


def run_checks(checks: Sequence[Check]) -> list[Line]:
    """Every check in order, each a line; a check that raises is a failed line, and the next ones still run."""
    lines = []
    for name, check in checks:
        try:
            lines.append(Line(name, True, check()))
        except Exception as error:  # the report is for a person: every failure becomes a line
            lines.append(Line(name, False, f"{type(error).__name__}: {error}"))
    return lines


def ctranslate2_device(ct2: Any) -> str:
    """CTranslate2 counts at least one CUDA device."""
    count = ct2.get_cuda_device_count()
    if count < 1:
        raise CudaStackBroken("ctranslate2 finds no CUDA device (driver missing, or CUDA_VISIBLE_DEVICES empty)")
    return f"{count} device(s)"


def float16_supported(ct2: Any) -> str:
    """CTranslate2 computes in float16 on the device (prod.yaml's compute_type)."""
    types = sorted(ct2.get_supported_compute_types("cuda"))
    if "float16" not in types:
        raise CudaStackBroken(f"float16 is not among the device's compute types {types}")
    return ", ".join(types)


def torch_cuda(torch: Any) -> str:
    """torch (the embedder's) sees the device, and says which CUDA it was built for."""
    if not torch.cuda.is_available():
        raise CudaStackBroken(f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device")
    return f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}"


def nvml_attributes(reading: Any) -> str:
    """NVML lists this process's memory (the VRAM budget's first choice); a VramReading or None."""
    if reading is None:
        raise CudaStackBroken("NVML is not available (libnvidia-ml.so.1 missing?): the VRAM budget cannot run")
    if not reading.process_bytes:
        raise CudaStackBroken("NVML lists no memory for this process (own PID namespace?): the VRAM budget "
                              "falls back to the whole card's figure")
    return f"{reading.process_bytes / 2**20:.0f} MiB of {reading.device_total / 2**30:.1f} GiB"


def node_checks() -> list[Line]:
    """The GPU preflight on this node: CTranslate2's device and float16, a tiny encode, torch, NVML."""
    import ctranslate2
    from faster_whisper import WhisperModel

    from deployments.gpu_budget import read_vram
    from deployments.transcriber import whisper_model_location

    held: list[Any] = []

    def tiny_encode() -> str:
        cublas = preload_cublas12()
        held.append(WhisperModel(whisper_model_location("tiny.en", "embedded"), device="cuda",
                                 compute_type="float16"))
        encode_once(held[0])
        return f"tiny.en float16 on cuda; cuBLAS 12 from {cublas or 'the library path'}"

    def torch_check() -> str:
        import torch

        return torch_cuda(torch)

    return run_checks([
        ("ctranslate2 sees the device", lambda: ctranslate2_device(ctranslate2)),
        ("float16 supported", lambda: float16_supported(ctranslate2)),
        ("a tiny encode works", tiny_encode),
        ("torch sees CUDA", torch_check),
        ("NVML attributes this process's memory", lambda: nvml_attributes(read_vram())),
    ])
