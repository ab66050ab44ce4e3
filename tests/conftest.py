"""Shared fixtures: speech made with espeak-ng, loopback HTTP servers, and the real Serve app."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import jiwer
import pytest
import yaml

from tests.fake_youtube import FakeVideo, FakeYouTube

ROOT = Path(__file__).resolve().parent.parent
SERVE_BIN = Path(sys.executable).parent / "serve"

SCRIPTS = {
    "lecture": "Today we talk about the water cycle. Water falls from the sky as rain and flows into the "
    "rivers. The sun warms the sea and the water rises into the air again.",
    "history": "The library opened in the old town more than one hundred years ago. People came from "
    "every village to read the books and newspapers.",
    "cooking": "Cut the onions and the carrots into small pieces. Cook them slowly in a large pan with "
    "a little oil and some salt.",
}


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER after lower-casing and dropping punctuation, so that only words count."""
    normalise = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(),
                               jiwer.Strip(), jiwer.ReduceToListOfListOfWords()])
    return jiwer.wer(reference, hypothesis, reference_transform=normalise, hypothesis_transform=normalise)


def speak(text: str, path: Path) -> Path:
    """Speak ``text`` to a WAV file with espeak-ng; the text is the reference transcript."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: run `make test`, which installs it")
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    return path


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A WAV file per script in SCRIPTS."""
    folder = tmp_path_factory.mktemp("speech")
    return {name: speak(text, folder / f"{name}.wav") for name, text in SCRIPTS.items()}


def write_tone(path: Path, seconds: float, rate: int = 16000) -> Path:
    """A 440 Hz tone as 16-bit mono WAV: a large, valid audio file that costs nothing to make."""
    import wave

    import numpy as np

    samples = (np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate) * 8000).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


@pytest.fixture(scope="session")
def media_server(speech: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A static HTTP server on 127.0.0.1 serving the speech files and a few broken ones."""
    folder = tmp_path_factory.mktemp("media")
    for name, path in speech.items():
        shutil.copy(path, folder / f"{name}.wav")
    (folder / "not-audio.wav").write_text("this is plain text, not audio\n")
    write_tone(folder / "tone-60s.wav", seconds=60)
    (folder / "two-clips.html").write_text(
        '<html><head><title>Two clips</title></head><body>'
        '<audio src="/history.wav"></audio><audio src="/cooking.wav"></audio></body></html>'
    )
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *_: object) -> None:
        return


CAPTIONED_ID = "captioned01"
GENERATED_ID = "generated01"
UNCAPTIONED_ID = "noCaptions1"
BOT_CHECK_ID = "botCheck001"


@pytest.fixture(scope="session")
def fake_youtube(speech: dict[str, Path]) -> Iterator[FakeYouTube]:
    """YouTube's caption and watch endpoints on 127.0.0.1, with four kinds of video."""
    with FakeYouTube() as fake:
        fake.videos[CAPTIONED_ID] = FakeVideo(
            "Manual captions", audio=speech["history"],
            captions=[(0.0, 3.2, "The library opened in the old town"), (3.2, 2.9, "more than one hundred years ago.")],
        )
        fake.videos[GENERATED_ID] = FakeVideo(
            "Generated captions", audio=speech["history"],
            auto_captions=[(0.0, 2.5, "cut the onions and the carrots")],
        )
        fake.videos[UNCAPTIONED_ID] = FakeVideo("The water cycle", audio=speech["lecture"])
        fake.videos[BOT_CHECK_ID] = FakeVideo(
            "Blocked", playability={"status": "LOGIN_REQUIRED", "reason": "Sign in to confirm you\u2019re not a bot"},
        )
        yield fake


TEST_UPLOAD_LIMIT = 2 * 1024 * 1024
"""The test copy of the config lowers the upload limit so that a 413 costs a small request."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Service:
    """The running Serve app: its base URL, its Ray cluster's addresses, and its log file."""

    url: str
    ray_address: str
    dashboard_url: str
    log: Path


def local_config() -> dict:
    return yaml.safe_load((ROOT / "configs" / "local.yaml").read_text())


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    """Until something accepts connections on 127.0.0.1:``port``; fail with the log if ``proc`` dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[:2]} exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    pytest.fail(f"nothing listened on port {port} after {timeout_s}s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory, fake_youtube: FakeYouTube) -> Iterator[Service]:
    """A Ray head (``ray start --block``) and ``serve run`` of a copy of configs/local.yaml on free ports.

    The copy differs from the file only in its HTTP port, the fake YouTube's address, private networks
    allowed (the test servers are on loopback) and a lower upload limit. Tests can connect to the cluster
    as a Ray driver (``ray_address``), e.g. to kill a replica.
    """
    folder = tmp_path_factory.mktemp("serve")
    config = local_config()
    port, gcs_port, dashboard_port = free_port(), free_port(), free_port()
    config["http_options"]["port"] = port
    args = config["applications"][0]["args"]
    args["downloader"]["youtube_base_url"] = fake_youtube.base_url
    args["downloader"]["allow_private_networks"] = True  # the media and the fake YouTube are on 127.0.0.1
    args["ingress"]["max_upload_bytes"] = TEST_UPLOAD_LIMIT
    config_path = folder / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    ray_log, log = folder / "ray.log", folder / "serve.log"
    head = _spawn([str(SERVE_BIN.parent / "ray"), "start", "--head", "--block", f"--port={gcs_port}",
                   f"--dashboard-port={dashboard_port}", "--dashboard-host=127.0.0.1", "--num-cpus=2"], ray_log, env)
    try:
        wait_for_port(gcs_port, head, ray_log, timeout_s=120)
        ray_address = f"127.0.0.1:{gcs_port}"
        proc = _spawn([str(SERVE_BIN), "run", f"--address={ray_address}", str(config_path)], log, env)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_running(url, proc, log, timeout_s=420)
            yield Service(url=url, ray_address=ray_address, dashboard_url=f"http://127.0.0.1:{dashboard_port}",
                          log=log)
        finally:
            stop(proc)
    finally:
        stop(head)


def _spawn(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def wait_until_running(url: str, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    """Poll /healthz until every deployment is up; fail with the log if the process dies first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve run exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).json().get("status") == "RUNNING":
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(1)
    pytest.fail(f"the app was not RUNNING after {timeout_s}s:\n{log.read_text()[-4000:]}")


def stop(proc: subprocess.Popen) -> None:
    """TERM a process group (a backgrounded ``serve run`` ignores SIGINT), KILL it if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
