"""A short soak in the suite: sequential requests keep every replica's memory flat and the model loaded once.

The full soak (``python -m benchmarks.soak``, 200 requests and a concurrent phase) is a benchmark; this
runs the same code for a few dozen uploads of ~40 s, as long as the test config's upload limit allows: it is
buffers of megabytes that grew the Ingress and the Downloader without the configs' malloc settings
(+3.8% each over these 40 uploads; see README, "Every replica").
"""

from __future__ import annotations

import pytest

from benchmarks.support.processes import replica_memory
from benchmarks.support.soak_loop import model_loads, soak
from benchmarks.support.speech import SCRIPTS
from tests.conftest import TEST_UPLOAD_LIMIT, Service, ffmpeg, speak

pytestmark = [pytest.mark.serve, pytest.mark.slow]
DEPLOYMENTS = ["Diarizer", "Downloader", "Embedder", "Ingress", "JobRunner", "Transcriber"]
"""One replica of each in configs/local.yaml: every one is measured, not only the Transcriber."""


@pytest.fixture(scope="module")
def lecture(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The lecture script said four times (~40 s), as 16 kHz mono WAV (~1.3 MB)."""
    folder = tmp_path_factory.mktemp("soak")
    spoken = speak(" ".join([SCRIPTS["lecture"]] * 4), folder / "spoken.wav")
    ffmpeg("-i", spoken, "-ar", "16000", "-ac", "1", folder / "lecture.wav")
    data = (folder / "lecture.wav").read_bytes()
    assert 1_000_000 < len(data) < TEST_UPLOAD_LIMIT
    return data


def test_every_replica_stays_flat_and_the_model_loads_once(service: Service, lecture: bytes) -> None:
    result = soak(service.url, lecture, sequential_requests=40, concurrent_requests=8, clients=2,
                  read=lambda: replica_memory(service.head_pid))
    growth = result["rss_growth_pct"]
    assert sorted(key.split("/")[0] for key in growth) == DEPLOYMENTS, result["samples"][-1]
    assert all(pct < 3 for pct in growth.values()), f"RSS growth in % per replica, all of them: {growth}"
    assert result["concurrent_statuses"] == {200: 8}
    loads = model_loads(service.url)["model_loads"]
    assert loads and set(loads.values()) == {1}, f"a model loaded again: {loads}"
