"""A short soak in the suite: sequential requests keep the Transcriber's memory flat and its model loaded once.

The full soak (``python -m benchmarks.soak``, 200 requests and a concurrent phase) is a benchmark; this
runs the same code for a few dozen requests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.soak import model_loads, replica_memory, soak
from tests.conftest import Service

pytestmark = pytest.mark.serve


def test_memory_stays_flat_and_the_model_loads_once(service: Service, speech: dict[str, Path]) -> None:
    result = soak(service.url, speech["cooking"].read_bytes(), sequential_requests=40, concurrent_requests=8,
                  clients=2, read=lambda: replica_memory(service.head_pid))
    growth = result["transcriber_rss_growth_pct"]
    assert len(growth) == 1, result["samples"][-1]
    assert all(pct < 3 for pct in growth.values()), growth
    assert set(result["samples"][-1]["replicas"]) >= {k for k in growth}
    assert result["concurrent_statuses"] == {200: 8}
    assert model_loads(service.url)["model_loads"] == 1
