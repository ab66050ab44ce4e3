"""The VRAM budget with fakes of NVML: the arithmetic, the warm-up and later-load checks, and their fallbacks."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from deployments.gpu_budget import (
    GIB,
    VramBudget,
    VramBudgetExceeded,
    VramReading,
    assigned_gpu_share,
    check_vram_budget,
    read_vram,
    replicas_per_gpu,
    visible_device,
)


@pytest.mark.parametrize(("share", "replicas"), [(0.25, 4), (0.2, 5), (0.3, 3), (0.5, 2), (1, 1), (0.1, 10), (0, 1)])
def test_replicas_per_gpu_follows_ray_packing(share: float, replicas: int) -> None:
    assert replicas_per_gpu(share) == replicas


def test_four_replicas_of_a_model_that_fits_start() -> None:
    check_vram_budget(footprint=int(3.5 * GIB), card_total=80 * GIB, gpu_share=0.25, ceiling=0.8)


def test_a_replica_refuses_to_start_past_the_ceiling_and_says_why() -> None:
    with pytest.raises(VramBudgetExceeded) as error:
        check_vram_budget(footprint=6 * GIB, card_total=24 * GIB, gpu_share=0.25, ceiling=0.8)
    message = str(error.value)
    assert "4 replicas per GPU (num_gpus 0.25) need 24.00 GiB" in message
    assert "past 80% of the card's 24.0 GiB (19.2 GiB)" in message


class NVMLError(Exception):
    pass


@dataclass
class FakeNvml:
    """The calls of pynvml that ``read_vram`` makes, answering from fixed figures."""

    processes: list[list[SimpleNamespace]]
    used: int
    total: int = 24 * GIB
    asked: list[object] = field(default_factory=list)
    available: bool = True

    def __post_init__(self) -> None:
        self.module = SimpleNamespace(
            NVMLError=NVMLError,
            nvmlDeviceGetHandleByIndex=lambda i: self.asked.append(i) or f"gpu{i}",
            nvmlDeviceGetHandleByUUID=lambda u: self.asked.append(u) or u,
            nvmlDeviceGetMemoryInfo=lambda handle: SimpleNamespace(used=self.used, total=self.total),
        )

    def processes_by_device(self) -> list[list[SimpleNamespace]]:
        return self.processes


def test_read_vram_takes_this_pid_and_its_visible_device(monkeypatch: pytest.MonkeyPatch) -> None:
    lib = FakeNvml([[SimpleNamespace(pid=7, usedGpuMemory=3 * GIB), SimpleNamespace(pid=8, usedGpuMemory=GIB)]],
                   used=5 * GIB)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert read_vram(lib, pid=7) == VramReading(process_bytes=3 * GIB, device_used=5 * GIB, device_total=24 * GIB)
    assert read_vram(lib, pid=9).process_bytes is None, "in another PID namespace NVML lists other numbers"
    assert lib.asked == [2, 2]
    assert visible_device(lib, "MIG-1234") == "MIG-1234" and visible_device(lib, None) == "gpu0"


def test_without_nvml_there_is_nothing_to_read() -> None:
    assert read_vram(SimpleNamespace(available=False)) is None
    assert assigned_gpu_share() == 0.0


class Readings:
    """A replica's successive NVML readings, one per call."""

    def __init__(self, *readings: VramReading | None) -> None:
        self.readings = list(readings)

    def __call__(self) -> VramReading | None:
        return self.readings.pop(0)


def reading(process: float | None, device: float, total: float = 24) -> VramReading:
    return VramReading(None if process is None else int(process * GIB), int(device * GIB), int(total * GIB))


def test_the_budget_counts_the_warm_up_batch_not_only_the_weights() -> None:
    """Weights of 3 GiB fit four times in 80% of 24 GiB; with a 16-window batch's 2 GiB they do not."""
    budget = VramBudget(0.25, 0.8, Readings(reading(0, 0), reading(5, 20)))
    with pytest.raises(VramBudgetExceeded, match="with a warm-up batch takes 5.00 GiB"):
        budget.after_warm_up(loaded=reading(3, 12))


def test_a_later_model_load_is_checked_with_the_batch_memory_on_top() -> None:
    budget = VramBudget(0.25, 0.8, Readings(reading(0, 0), reading(3.5, 14), reading(4.5, 18)))
    budget.after_warm_up(loaded=reading(3, 12))
    assert budget.batch_bytes == int(0.5 * GIB)
    with pytest.raises(VramBudgetExceeded, match=r"large-v3 loaded next to the resident models.* 5.00 GiB"):
        budget.after_load("large-v3")


def test_the_first_model_load_waits_for_the_warm_up_to_be_checked() -> None:
    budget = VramBudget(0.25, 0.8, Readings(reading(0, 0)))
    budget.after_load("distil-large-v3")  # no reading taken: it would raise IndexError
    assert not budget.settled


def test_without_attribution_the_whole_card_is_checked_and_the_reason_logged(caplog: pytest.LogCaptureFixture) -> None:
    """In a PID namespace four replicas starting together each see the others' growth: no false refusal."""
    budget = VramBudget(0.25, 0.8, Readings(reading(None, 1), reading(None, 17)))
    with caplog.at_level(logging.WARNING, logger="deployments.gpu_budget"):
        budget.after_warm_up(loaded=reading(None, 13))
    assert "NVML lists no memory for this process" in caplog.text
    assert "this replica grew it by up to 16.00 GiB" in caplog.text
    full = VramBudget(0.25, 0.8, Readings(reading(None, 1), reading(None, 20)))
    with pytest.raises(VramBudgetExceeded, match="the card holds 20.00 GiB"):
        full.after_warm_up(loaded=reading(None, 13))


def test_without_nvml_the_replica_says_loudly_that_nothing_was_checked(caplog: pytest.LogCaptureFixture) -> None:
    budget = VramBudget(0.25, 0.8, Readings(None, None, None))
    with caplog.at_level(logging.ERROR, logger="deployments.gpu_budget"):
        budget.after_warm_up(loaded=None)
        budget.after_load("large-v3")
    assert [r.levelno for r in caplog.records] == [logging.ERROR, logging.ERROR]
    assert "VRAM budget NOT checked" in caplog.records[0].getMessage()
