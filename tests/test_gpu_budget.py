"""The VRAM budget arithmetic (the GPU path itself runs only where a GPU is lent)."""

from __future__ import annotations

import pytest

from deployments.gpu_budget import GIB, assigned_gpu_share, check_vram_budget, replicas_per_gpu, this_process_on_gpu


@pytest.mark.parametrize(("share", "replicas"), [(0.25, 4), (0.2, 5), (0.3, 3), (0.5, 2), (1, 1), (0.1, 10), (0, 1)])
def test_replicas_per_gpu_follows_ray_packing(share: float, replicas: int) -> None:
    assert replicas_per_gpu(share) == replicas


def test_four_replicas_of_a_model_that_fits_start() -> None:
    check_vram_budget(footprint=int(3.5 * GIB), card_total=80 * GIB, gpu_share=0.25, ceiling=0.8)


def test_a_replica_refuses_to_start_past_the_ceiling_and_says_why() -> None:
    with pytest.raises(RuntimeError) as error:
        check_vram_budget(footprint=6 * GIB, card_total=24 * GIB, gpu_share=0.25, ceiling=0.8)
    message = str(error.value)
    assert "4 replicas per GPU (num_gpus 0.25) need 24.00 GiB" in message
    assert "past 80% of the card's 24.0 GiB (19.2 GiB)" in message


def test_on_this_cpu_machine_there_is_nothing_to_measure() -> None:
    assert this_process_on_gpu() is None
    assert assigned_gpu_share() == 0.0
