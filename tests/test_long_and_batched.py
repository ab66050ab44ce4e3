"""Long inputs cut into windows and stitched back, and windows of concurrent requests batched, on the real app."""

from __future__ import annotations

import itertools
import subprocess
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks.support.speech import SCRIPTS, word_error_rate
from deployments.audio import decode
from tests.conftest import Service

pytestmark = pytest.mark.serve

GAP_S = 4.0
"""Silence between two spoken scripts: longer than a window may bridge, so each script gets its own window."""
ORDER = ["lecture", "history", "cooking"] * 3
KEYWORDS = {"lecture": "water", "history": "town", "cooking": "onions"}
"""A word of each script's first sentence that tiny.en hears reliably (a window's first word it may not)."""


@pytest.fixture(scope="module")
def lecture(speech: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float]]:
    """Nine scripts spoken one after another with 4 s of silence between (about 90 s), as FLAC, and their starts."""
    gap = np.zeros(int(GAP_S * 16000), dtype=np.float32)
    parts, starts, at = [], [], 0
    for name in ORDER:
        samples = decode(speech[name])
        starts.append(at / 16000)
        parts += [samples, gap]
        at += samples.size + gap.size
    folder = tmp_path_factory.mktemp("lecture")
    pcm = (np.concatenate(parts) * 32767).astype("<i2")
    with wave.open(str(folder / "lecture.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(pcm.tobytes())
    flac = folder / "lecture.flac"  # lossless and under the tests' 2 MiB upload limit
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(folder / "lecture.wav"), str(flac)], check=True)
    return flac, starts


def post(service: Service, path: Path, **form: str) -> dict:
    response = httpx.post(f"{service.url}/v1/audio/transcriptions", files={"file": (path.name, path.read_bytes())},
                          data=form, timeout=600)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_long_input_is_stitched_in_order_with_each_window_at_its_place(
        service: Service, lecture: tuple[Path, list[float]]) -> None:
    path, starts = lecture
    result = post(service, path, response_format="verbose_json")
    segments = result["segments"]
    assert result["duration"] == pytest.approx(starts[-1] + GAP_S + 9, abs=10)
    assert [s["id"] for s in segments] == list(range(len(segments)))
    assert all(a["end"] <= b["start"] + 0.05 for a, b in itertools.pairwise(segments)), "segments out of order"
    assert word_error_rate(" ".join(SCRIPTS[n] for n in ORDER), result["text"]) <= 0.25, result["text"]
    for name, start in zip(ORDER, starts, strict=True):
        assert any(abs(s["start"] - start) <= 1.0 for s in segments), \
            f"no segment starts near {start:.1f} s, where '{name}' begins: {[s['start'] for s in segments]}"
        heard = " ".join(s["text"].lower() for s in segments if start - 1.0 <= s["start"] <= start + 6.0)
        assert KEYWORDS[name] in heard, (name, start, heard)


def test_word_timestamps_of_a_long_input_are_in_source_time(service: Service,
                                                            lecture: tuple[Path, list[float]]) -> None:
    path, starts = lecture
    result = post(service, path, response_format="verbose_json", **{"timestamp_granularities[]": "word"})
    words = result["words"]
    assert len(words) >= 150
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)
    assert all(0 <= w["start"] <= w["end"] <= result["duration"] + 0.05 for w in words)
    for name, start in zip(ORDER, starts, strict=True):
        assert any(abs(w["start"] - start) <= 1.0 for w in words), f"no word starts near {start:.1f} s"
        near = [w["word"].lower().strip(".,") for w in words if start - 1.0 <= w["start"] <= start + 6.0]
        assert KEYWORDS[name] in near, (name, start, near)


def test_concurrent_requests_share_batches_and_each_keeps_its_own_text(service: Service,
                                                                       speech: dict[str, Path]) -> None:
    def batch_sizes() -> dict[int, int]:
        stats = httpx.get(f"{service.url}/stats", timeout=60).raise_for_status().json()["Transcriber"]
        return {int(size): count for size, count in stats["batch_sizes"].items()}

    before = batch_sizes()
    names = ["lecture", "history", "cooking"] * 2
    with ThreadPoolExecutor(len(names)) as pool:
        results = list(pool.map(lambda name: post(service, speech[name]), names))
    for name, result in zip(names, results, strict=True):
        assert word_error_rate(SCRIPTS[name], result["text"]) <= 0.35, (name, result["text"])
    after = batch_sizes()
    grown = {size: after.get(size, 0) - before.get(size, 0) for size in after}
    assert sum(size * count for size, count in grown.items()) == len(names), grown
    assert any(size > 1 and count > 0 for size, count in grown.items()), f"no batch held two windows: {grown}"
