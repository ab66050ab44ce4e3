"""Faults in the running app: a replica killed mid-request, a replica whose constructor fails."""

from __future__ import annotations

import os
import subprocess
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import ray
from ray import serve

from benchmarks.support.harness import wait_until_running
from deployments.settings import TranscriberSettings
from deployments.transcriber import Transcriber
from tests.conftest import SERVE_BIN, TEST_UPLOAD_LIMIT, Service, ffmpeg, until

pytestmark = pytest.mark.serve


@pytest.fixture(scope="module")
def driver(service: Service):
    """This test process connected to the app's Ray cluster as a driver."""
    ray.init(address=service.ray_address, namespace="serve", logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def replica_names(deployment: str) -> set[str]:
    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith("SERVE_REPLICA::") and f"#{deployment}#" in a["name"]}


def transcriber_stats(service: Service) -> dict:
    return httpx.get(f"{service.url}/stats", timeout=60).raise_for_status().json()["Transcriber"]


LONG_SPEECH_REPEATS = 20
"""The speech fixtures said this many times over: about 8 minutes, which the Transcriber takes well over ten
seconds to decode on 2 cores, so a poll of ``/stats`` finds the request there. 45 s of WAV (the test upload limit
takes 65 s at most) was two windows in one batch, decoded in a few seconds, and once finished before any poll."""


def long_speech(speech: dict[str, Path], tmp_path: Path) -> bytes:
    """The speech fixtures ``LONG_SPEECH_REPEATS`` times as 32 kb/s MP3, under the test upload limit."""
    from deployments.audio import decode

    clips = [decode(p) for p in speech.values()] * LONG_SPEECH_REPEATS
    samples = (np.concatenate(clips) * 32767).astype("<i2")
    wav, mp3 = tmp_path / "long.wav", tmp_path / "long.mp3"
    with wave.open(str(wav), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(16000)
        out.writeframes(samples.tobytes())
    ffmpeg("-i", wav, "-c:a", "libmp3lame", "-b:a", "32k", mp3)
    data = mp3.read_bytes()
    assert len(data) < TEST_UPLOAD_LIMIT and len(samples) / 16000 > 300
    return data


def test_a_killed_transcriber_replica_fails_its_request_cleanly_and_is_replaced(
        driver, service: Service, speech: dict[str, Path], tmp_path: Path) -> None:
    audio = long_speech(speech, tmp_path)
    (victim,) = replica_names("Transcriber")
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, f"{service.url}/v1/audio/transcriptions",
                              files={"file": ("long.mp3", audio)}, timeout=300)
        def reached_replica() -> bool:
            if pending.done():
                pytest.fail(f"the request ended before the kill: {pending.result().text[:300]}")
            return transcriber_stats(service)["in_flight"] >= 1

        until(reached_replica, 60, "the request to reach the replica")
        ray.kill(ray.get_actor(victim, namespace="serve"))
        response = pending.result()
    assert response.status_code in (200, 503), response.text
    if response.status_code == 503:
        assert response.json()["error"]["code"] == "overloaded" and response.headers["retry-after"]
    until(lambda: replica_names("Transcriber") - {victim}, 120, "a replacement replica")
    until(lambda: httpx.get(f"{service.url}/healthz", timeout=10).json()["deployments"]["Transcriber"] == "HEALTHY",
          180, "the replacement to be healthy")
    after = httpx.post(f"{service.url}/v1/audio/transcriptions",
                       files={"file": ("c.wav", speech["cooking"].read_bytes())}, timeout=300)
    assert after.status_code == 200 and "onions" in after.json()["text"].lower()
    loads = transcriber_stats(service)["model_loads"]
    assert loads and set(loads.values()) == {1}, f"the new replica loads each model once: {loads}"


def test_a_constructor_that_raises_leaves_a_clear_message(driver, service: Service) -> None:
    settings = TranscriberSettings(models={"tiny.en": "/models/that/are/missing"})
    broken = Transcriber.options(name="BrokenTranscriber", max_constructor_retry_count=1,
                                 ray_actor_options={"num_cpus": 0}).bind(settings)
    with pytest.raises(RuntimeError, match="Deploying application broken failed"):
        serve.run(broken, name="broken", route_prefix="/broken")
    expected = "transcriber.models.tiny.en: model directory /models/that/are/missing does not exist"
    status = serve.status().applications["broken"]
    assert status.status.value == "DEPLOY_FAILED"
    assert expected in status.deployments["BrokenTranscriber"].message
    cli = subprocess.run([str(SERVE_BIN), "status", f"--address={service.dashboard_url}"], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert cli.returncode == 0, cli.stderr
    assert "DEPLOY_FAILED" in cli.stdout and expected in cli.stdout.replace("\n    ", " ")
    serve.delete("broken")
    wait_until_running(service.url, None, service.log, timeout_s=60)

