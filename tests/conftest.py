"""Shared fixtures: speech made with espeak-ng, loopback HTTP servers, and the real Serve app.

What the benchmarks use too (the app's harness, speech and WER, the YouTube double) is in benchmarks/support.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import io
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.support.fake_youtube import FakeVideo, FakeYouTube
from benchmarks.support.harness import BIN, ROOT, LaunchError, LocalApp, deployments, load_config, local_app
from benchmarks.support.speech import ESPEAK, SCRIPTS, Conversation, dialogue, missing_tools, sentences
from benchmarks.support.speech import speak as synthesise
from deployments.schemas import AudioEnd, AudioWindow, Resolved
from serve_app.access import key_hash

SERVE_BIN = BIN / "serve"


_OWN_RAY_TMPDIR = pytest.StashKey[str]()
"""The Ray temp root this run made (absent when ``RAY_TMPDIR`` was given)."""
QUIETER_SERVE = {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5", "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000"}
"""The test clusters' Serve controller loop and replicas' metrics flush, 5 and 10 times slower than Ray's defaults.

Idle, the app cost 26 CPU-s a minute with Ray's and 19 with these, on a 2-core machine that runs two apps at
once for the whole suite; neither interval is what a test waits on, and a value given in the environment is kept.
"""


def pytest_configure(config: pytest.Config) -> None:
    """Give this run a Ray temp root of its own, so no test depends on what an earlier run left in /tmp/ray, and
    its clusters ``QUIETER_SERVE``.

    Ray keeps its sessions and the "current cluster" record under ``$RAY_TMPDIR/ray``; the folder starts
    empty, as on a machine where Ray never ran, and a stale record elsewhere is never read. A path given in
    ``RAY_TMPDIR`` is kept. The folder's path is short: Ray's socket paths live under it. Each pytest-xdist
    worker has a folder of its own inside it, so that one worker's clusters never overwrite the other's record.
    """
    if "RAY_TMPDIR" not in os.environ:
        os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray-tests-")
        config.stash[_OWN_RAY_TMPDIR] = os.environ["RAY_TMPDIR"]
    if worker := os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix=worker, dir=os.environ["RAY_TMPDIR"])
    for name, value in QUIETER_SERVE.items():
        os.environ.setdefault(name, value)


SHARED_APPS = ("service", "keyed_service")
"""The session's apps, each started once and used by several modules, and stopped after the last of them."""
AFTER_APP = {"tests/test_throughput_bench.py": "service"}
"""Modules that run after a shared app's modules, on their worker, though they do not use the app (stopped by then).

The throughput benchmark's quick run (about two minutes, two apps of its own) has three tests, so xdist hands it out
late, to whichever worker comes free, which then runs it alone: the session app's in r32 (workers done at 724 and
784 s), the other one in r45 (from 727 to 876 s; the app's worker was done at 772 s). After the app's modules it
starts while the other worker still runs. One day's runs did not settle which is faster (pytest 842 and 945 s after
the app's modules, r44 and r47; 890 s as a group of its own, r45), so it stays where it was.
"""
_RUNNING_APPS = pytest.StashKey[dict[str, contextlib.ExitStack]]()
"""What stops each of the ``SHARED_APPS`` this process started, by fixture name."""
_LAST_USE = pytest.StashKey[dict[str, pytest.Item]]()
"""The last test to use each of the ``SHARED_APPS``, in this process's run order."""
_STOPPING = pytest.StashKey[list[threading.Thread]]()
"""Shared apps being stopped beside the tests that follow them; the session's end waits for each."""


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep each module on one pytest-xdist worker (``--dist loadgroup``), and the modules that use one of the
    ``SHARED_APPS`` on the same one, so that each app starts once per run and module fixtures once per module.

    A group's tests are put side by side, as xdist's workers run them, the ``AFTER_APP`` modules last, so that a run
    without xdist also keeps a shared app for no longer than its modules take.
    """
    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::")[0]

    app = {module(item): name for item in items for name in shared_apps(item)}
    groups = {module(item): app.get(module(item)) or AFTER_APP.get(module(item), module(item)) for item in items}
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        item.add_marker(pytest.mark.xdist_group(groups[module(item)]))
        first.setdefault(groups[module(item)], index)
    items.sort(key=lambda item: (first[groups[module(item)]], module(item) in AFTER_APP))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Note the last test to use each shared app. A pytest-xdist worker runs a group whole, in this order
    (``--dist loadgroup``); a run without xdist runs ``session.items`` as they are, whatever reordered them
    (``--ff``)."""
    session.config.stash[_LAST_USE] = {name: item for item in session.items for name in shared_apps(item)}


def shared_apps(item: pytest.Item) -> list[str]:
    """The ``SHARED_APPS`` a test uses, directly or through another fixture."""
    return [name for name in SHARED_APPS if name in getattr(item, "fixturenames", ())]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """Stop a shared app once the last test to use it is done, module fixtures included, rather than at the end of
    the session: idle, an app costs about 9 CPU-s a minute, which the tests still running need on 2 cores.

    It stops in the background: the next test need not wait until every process of its cluster has ended (9 to 22 s
    after the soak, with the other worker busy).
    """
    try:
        yield
    finally:
        running = item.config.stash.get(_RUNNING_APPS, {})
        for name, last in item.config.stash.get(_LAST_USE, {}).items():
            if last is item and name in running:
                stopping = threading.Thread(target=running.pop(name).close, name=f"stop {name}")
                stopping.start()
                item.config.stash.setdefault(_STOPPING, []).append(stopping)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Wait for the shared apps still stopping, then remove this run's Ray temp root when every test passed; keep it
    (and say where) for a failure's logs."""
    for stopping in session.config.stash.get(_STOPPING, []):
        stopping.join()
    folder = session.config.stash.get(_OWN_RAY_TMPDIR, None)
    if folder is None:
        return
    if exitstatus == 0:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        print(f"\nRay's logs of this run: {folder}/ray")


def cyclic_garbage(call: Callable[[], Any]) -> list[str]:
    """The types of what ``call`` left in reference cycles, which only a garbage collection frees.

    The service runs no collection per request or batch (``deployments.model_cache.trim_heap``): what a request
    leaves in a cycle would hold its buffers until the collector ran. ``call`` runs once before, unwatched, so
    that first-use caches do not count.
    """
    call()
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        call()
        gc.collect()
        return [type(thing).__qualname__ for thing in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def until(condition: Callable[[], Any], timeout_s: float, what: Callable[[], str] | str,
          interval_s: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something truthy; fail saying ``what`` when it never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what() if callable(what) else what}")


def speak(text: str, path: Path, sentence_pause_ms: int = 0) -> Path:
    """Speak ``text`` to a WAV file with espeak-ng; the text is the reference transcript."""
    try:
        path.write_bytes(synthesise(text, ESPEAK, sentence_pause_ms))
    except RuntimeError as missing:
        pytest.fail(str(missing))
    return path


def ffmpeg(*args: str | Path) -> None:
    """Run the ffmpeg CLI quietly; a failure shows its stderr."""
    if shutil.which("ffmpeg") is None:
        pytest.fail("ffmpeg is missing: run `make test`, which installs it")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *map(str, args)], check=True,
                   capture_output=True)


SENTENCE_PAUSE_MS = 600
"""The pause after each sentence of the ``speech`` fixture's files."""
TRUNCATED_MP3_BYTES = 3000
"""The served ``truncated.mp3`` is ``whole.mp3`` cut after this many bytes (its header still declares the whole)."""


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A WAV file per script in SCRIPTS, read with a pause after each sentence.

    The pauses make segment ends that tests can count on: read without them, tiny.en may run the lecture's
    three sentences into one segment.
    """
    folder = tmp_path_factory.mktemp("speech")
    return {name: speak(text, folder / f"{name}.wav", SENTENCE_PAUSE_MS) for name, text in SCRIPTS.items()}


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


@dataclass
class Gathered:
    """All that a resolver's stream yielded: its header, its audio windows, and AudioEnd's duration.

    ``duration`` is None for captions, whose stream is the header alone.
    """

    header: Resolved
    windows: list[AudioWindow]
    duration: float | None

    @property
    def samples(self) -> np.ndarray:
        """The windows' samples end to end (the whole decoded audio when the stream was cut without VAD)."""
        return np.concatenate([w.samples for w in self.windows]) if self.windows else np.empty(0, np.float32)


def gathered(items: Iterable[object], rate: int = 16000) -> Gathered:
    """Consume a ``SourceResolver.resolve``/``from_upload`` stream, checking its shape on the way.

    The stream is one ``Resolved`` header, then for audio the windows (16 kHz mono float32, in order,
    none overlapping the one before, all inside the decoded audio) and one ``AudioEnd``; captions stop
    after the header. The typed errors a stream raises pass through.
    """
    iterator = iter(items)
    header = next(iterator)
    assert isinstance(header, Resolved), f"the stream began with {type(header).__name__}, not Resolved"
    rest = list(iterator)
    if header.kind == "captions":
        assert rest == [], f"captions were followed by {[type(item).__name__ for item in rest]}"
        return Gathered(header, [], None)
    assert rest and isinstance(rest[-1], AudioEnd), "an audio stream must end with AudioEnd"
    windows = rest[:-1]
    assert all(isinstance(w, AudioWindow) for w in windows), [type(w).__name__ for w in windows]
    duration = rest[-1].duration
    end = 0.0
    for window in windows:
        samples = window.samples
        assert isinstance(samples, np.ndarray) and samples.dtype == np.float32 and samples.ndim == 1
        assert samples.size > 0
        assert window.start >= end - 1 / rate, f"window at {window.start} s overlaps the one ending at {end} s"
        end = window.start + samples.size / rate
        assert end <= duration + 1 / rate, f"a window ends at {end} s, past the decoded {duration} s"
    return Gathered(header, windows, duration)


@pytest.fixture(scope="session")
def two_voices() -> Conversation:
    """flite's rms and slt taking turns, three lines each (voices espeak-ng cannot tell apart)."""
    if missing := missing_tools():
        pytest.fail(f"{missing} missing: run `make test`, which installs them")
    return dialogue(["flite:rms", "flite:slt"], lines=6, source=sentences())


@pytest.fixture(scope="session")
def media_server(speech: dict[str, Path], two_voices: Conversation,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A static HTTP server on 127.0.0.1 serving the speech files and a few broken ones.

    ``whole.mp3`` is the lecture as MP3; ``truncated.mp3`` its first 3 kB, whose header declares the whole;
    ``two-voices.wav`` is the ``two_voices`` conversation.
    """
    folder = tmp_path_factory.mktemp("media")
    for name, path in speech.items():
        shutil.copy(path, folder / f"{name}.wav")
    (folder / "two-voices.wav").write_bytes(two_voices.wav)
    (folder / "not-audio.wav").write_text("this is plain text, not audio\n")
    write_tone(folder / "tone-60s.wav", seconds=60)
    ffmpeg("-i", speech["lecture"], "-c:a", "libmp3lame", "-b:a", "64k", folder / "whole.mp3")
    (folder / "truncated.mp3").write_bytes((folder / "whole.mp3").read_bytes()[:TRUNCATED_MP3_BYTES])
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
    """Static files, quietly, with one byte range per request as media servers answer (a browser seeks by it)."""

    def log_message(self, *_: object) -> None:
        return

    def send_head(self) -> Any:
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "").strip())
        path = Path(self.translate_path(self.path))
        if wanted is None or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        start, end = int(wanted[1]), min(int(wanted[2] or size - 1), size - 1)
        if start >= size:
            self.send_error(416, "range not satisfiable")
            return None
        with path.open("rb") as media:
            media.seek(start)
            body = media.read(end - start + 1)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return io.BytesIO(body)


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


def local_config() -> dict:
    return load_config(ROOT / "configs" / "local.yaml")


Service = LocalApp


def serve_config(tmp_path_factory: pytest.TempPathFactory, fake_youtube: FakeYouTube) -> dict:
    """A copy of configs/local.yaml for tests.

    The copy differs from the file only in the fake YouTube's address, private networks allowed (the test
    servers are on loopback), a lower upload limit, a fresh store and short retry delays.
    """
    config = local_config()
    args = config["applications"][0]["args"]
    args["downloader"]["youtube_base_url"] = fake_youtube.base_url
    args["downloader"]["allow_private_networks"] = True  # the media and the fake YouTube are on 127.0.0.1
    args["ingress"]["max_upload_bytes"] = TEST_UPLOAD_LIMIT
    args["store"]["uri"] = str(tmp_path_factory.mktemp("store"))
    args["jobs"].update(backoff_s=0.2, backoff_cap_s=1)
    return config


@contextlib.contextmanager
def shared(request: pytest.FixtureRequest, config: dict, folder: Path) -> Iterator[Service]:
    """``config`` on a fresh local cluster (``benchmarks.support.harness.local_app``) for one of the ``SHARED_APPS``,
    which ``pytest_runtest_teardown`` stops after its last test; a failed start fails the test."""
    with contextlib.ExitStack() as stack:
        try:
            app = stack.enter_context(local_app(config, folder))
        except LaunchError as error:
            pytest.fail(str(error))
        request.config.stash.setdefault(_RUNNING_APPS, {})[request.fixturename] = stack
        yield app


@pytest.fixture(scope="session")
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            fake_youtube: FakeYouTube) -> Iterator[Service]:
    """The real app on a local cluster from ``serve_config`` (its HTTP port is a free one).

    Tests can connect to the cluster as a Ray driver (``ray_address``), e.g. to kill a replica.
    """
    with shared(request, serve_config(tmp_path_factory, fake_youtube), tmp_path_factory.mktemp("serve")) as app:
        yield app


API_KEY = "browser-test-key"
"""The one key ``keyed_service`` takes."""
KEYED_HEADERS = {"Authorization": f"Bearer {API_KEY}"}
"""What a client of ``keyed_service`` sends with each request."""
ADMITTED = {"max_ongoing_requests": 2, "max_queued_requests": 2}
"""The Downloader's bound in ``keyed_service``: two sources decoding, two queued."""


@pytest.fixture(scope="session")
def keyed_service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                  fake_youtube: FakeYouTube) -> Iterator[Service]:
    """The app with API keys on (``API_KEY``, configured as its hash), a passage per segment, and the Downloader
    admitting ``ADMITTED``: the page's app (tests/test_web_page.py) and the overload test's.

    Passages of one segment let a search of a short clip land past its start, on the segment it names. Serve
    counts its queue loosely while requests are being placed: with local.yaml's 8 + 32, a burst of 56 on a busy
    machine (the other pytest-xdist worker's tests) had none refused in two minutes, and 41 to 43 of 48 let in on
    a quiet one. A small bound and a burst of seven times it leave no doubt; the page sends three sources at most.
    """
    config = serve_config(tmp_path_factory, fake_youtube)
    app = config["applications"][0]
    app["args"]["ingress"]["api_key_hashes"] = [key_hash(API_KEY)]
    app["args"]["embedder"].update(chunk_words=1, chunk_overlap_words=0)
    deployments(config)["Downloader"].update(ADMITTED)
    with shared(request, config, tmp_path_factory.mktemp("serve-keyed")) as keyed:
        yield keyed
