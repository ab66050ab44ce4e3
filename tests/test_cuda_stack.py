"""The CUDA stack checks: cuBLAS 12 found by path, one tiny encode, and the GPU preflight's named lines.

The encode runs on the real tiny.en on this CPU; what only a GPU can show (a missing cuBLAS, no device)
is given by fakes of the device side: a loader, CTranslate2's and torch's device queries, NVML readings.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from deployments.cuda_stack import (
    CudaStackBroken,
    Line,
    ctranslate2_device,
    cublas12_dirs,
    encode_once,
    float16_supported,
    node_checks,
    nvml_attributes,
    on_gpu,
    preload_cublas12,
    run_checks,
    torch_cuda,
)
from deployments.gpu_budget import VramReading
from deployments.transcriber import whisper_model_location


def test_one_encode_runs_on_the_real_model() -> None:
    from faster_whisper import WhisperModel

    encode_once(WhisperModel(whisper_model_location("tiny.en", "embedded"), device="cpu", compute_type="int8"))


class BrokenDevice:
    """A model on a node whose CTranslate2 cannot open cuBLAS: it loads, and its first encode fails."""

    def feature_extractor(self, audio: np.ndarray) -> np.ndarray:
        return np.zeros((80, len(audio) // 160), dtype=np.float32)

    def encode(self, features: np.ndarray) -> None:
        raise RuntimeError("Library libcublas.so.12 is not found or cannot be loaded")


def test_a_missing_cublas_fails_the_encode_and_says_how_to_fix_it() -> None:
    with pytest.raises(CudaStackBroken, match=r"libcublas.so.12 is not found.*make install-gpu"):
        encode_once(BrokenDevice())


def test_cublas12_is_loaded_by_path_from_the_wheel_folder(tmp_path: Path) -> None:
    folder = tmp_path / "site" / "nvidia" / "cublas" / "lib"
    folder.mkdir(parents=True)
    (folder / "libcublas.so.12").touch()
    (folder / "libcublasLt.so.12").touch()
    loaded: list[tuple[str, int]] = []
    dirs = cublas12_dirs([str(tmp_path / "elsewhere"), str(tmp_path / "site")])
    assert dirs == [folder]
    assert preload_cublas12(dirs, load=lambda path, mode: loaded.append((Path(path).name, mode))) \
        == folder / "libcublas.so.12"
    assert loaded == [("libcublasLt.so.12", ctypes.RTLD_GLOBAL), ("libcublas.so.12", ctypes.RTLD_GLOBAL)]
    assert preload_cublas12(cublas12_dirs([str(tmp_path / "elsewhere")]), load=loaded.append) is None


def test_a_failed_check_is_a_line_and_the_next_checks_still_run() -> None:
    def broken() -> str:
        raise CudaStackBroken("no device")

    lines = run_checks([("first", lambda: "fine"), ("second", broken), ("third", lambda: "also fine")])
    assert lines == [Line("first", True, "fine"), Line("second", False, "CudaStackBroken: no device"),
                     Line("third", True, "also fine")]
    assert str(lines[1]) == "FAIL second: CudaStackBroken: no device"


def test_each_check_says_what_it_found_on_a_working_gpu() -> None:
    ct2 = SimpleNamespace(get_cuda_device_count=lambda: 1,
                          get_supported_compute_types=lambda device: {"float32", "float16", "int8_float16"})
    torch = SimpleNamespace(__version__="2.13.0+cu128", version=SimpleNamespace(cuda="12.8"),
                            cuda=SimpleNamespace(is_available=lambda: True, get_device_name=lambda i: "NVIDIA H200"))
    assert ctranslate2_device(ct2) == "1 device(s)"
    assert float16_supported(ct2) == "float16, float32, int8_float16"
    assert torch_cuda(torch) == "torch 2.13.0+cu128, CUDA 12.8, NVIDIA H200"
    assert nvml_attributes(VramReading(512 * 2**20, 10 * 2**30, 140 * 2**30)) == "512 MiB of 140.0 GiB"


def test_each_check_names_what_is_wrong_on_a_broken_node() -> None:
    ct2 = SimpleNamespace(get_cuda_device_count=lambda: 0, get_supported_compute_types=lambda device: {"float32"})
    with pytest.raises(CudaStackBroken, match="finds no CUDA device"):
        ctranslate2_device(ct2)
    with pytest.raises(CudaStackBroken, match="float16 is not among"):
        float16_supported(ct2)
    with pytest.raises(CudaStackBroken, match="own PID namespace"):
        nvml_attributes(VramReading(None, 10 * 2**30, 140 * 2**30))
    with pytest.raises(CudaStackBroken, match="NVML is not available"):
        nvml_attributes(None)


def test_on_this_cpu_machine_the_preflight_fails_each_gpu_line_by_name() -> None:
    lines = node_checks()
    assert [line.name for line in lines] == ["ctranslate2 sees the device", "float16 supported", "a tiny encode works",
                                             "torch sees CUDA", "NVML attributes this process's memory"]
    assert not any(line.ok for line in lines), lines
    assert "finds no CUDA device" in lines[0].detail


def test_auto_runs_on_a_gpu_only_where_ctranslate2_sees_one() -> None:
    assert on_gpu("cuda") and not on_gpu("cpu")
    assert not on_gpu("auto"), "this machine has no CUDA device"
