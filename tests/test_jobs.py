"""Batch ingestion through the real app: jobs, the store, resumable runs, and search."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import ray

from deployments.downloader import source_identity
from deployments.errors import InvalidRequest, PayloadTooLarge, SourceFailed
from deployments.jobs import JobManager
from deployments.schemas import JobSpec, Transcript
from deployments.settings import JobSettings
from deployments.store import TranscriptStore, transcript_key
from tests.conftest import ROOT, Service, speak, until

pytestmark = pytest.mark.serve

TOPICS = [
    "The violin has four strings and is played with a bow made of horse hair.",
    "Volcanoes form where hot melted rock rises through cracks in the earth.",
    "Bees carry pollen from flower to flower and make honey in their hives.",
    "The train to the mountains leaves the station every morning at nine.",
    "Chess players plan many moves ahead before they touch a piece.",
    "Bread rises because yeast turns sugar into gas inside the dough.",
    "The moon pulls on the oceans and makes the tides go up and down.",
    "Penguins cannot fly but they swim very fast in cold water.",
    "A good bicycle needs air in the tyres and oil on the chain.",
    "Glaciers are rivers of ice that move slowly down the valleys.",
    "The museum shows old coins, maps and paintings from the city.",
    "Tomatoes grow best in warm sun with plenty of water.",
    "The heart pumps blood through the body many times each minute.",
    "Lighthouses warn ships about rocks near the coast at night.",
    "Coffee beans are roasted before they are ground and brewed.",
    "The football team trained in the rain for the final match.",
    "Owls hunt at night and can turn their heads almost all the way round.",
    "Solar panels turn sunlight into electricity for the house.",
    "The library lends books, films and music to everyone in town.",
    "Whales sing long songs that travel far through the sea.",
    "Paper is made from wood pulp pressed into thin sheets and dried.",
    "The clock tower rings its bell every hour in the square.",
    "Snow falls when the clouds are cold enough for ice crystals.",
    "Farmers plant wheat in autumn and harvest it in summer.",
    "The bridge was built from steel and stone over the wide river.",
    "Candles burn wax and give a soft yellow light.",
    "Foxes live in dens and come out to look for food at dusk.",
    "Kites fly high when the wind blows steadily across the field.",
]
FIRST_RUN, RESUMED, CLI_KILLED = TOPICS[:20], TOPICS[20:24], TOPICS[24:28]


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *_: object) -> None:
        return


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A loopback server with one spoken clip per topic, and broken entries (a 404 is simply absent)."""
    folder = tmp_path_factory.mktemp("clips")
    for index, text in enumerate(TOPICS):
        speak(text, folder / f"clip{index:02d}.wav")
    (folder / "not-audio.wav").write_text("<html>not audio</html>\n")
    whole = (folder / "clip00.wav").read_bytes()
    (folder / "truncated.wav").write_bytes(whole[:44])
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def urls(base: str, topics: list[str]) -> list[str]:
    return [f"{base}/clip{TOPICS.index(t):02d}.wav" for t in topics]


def ingest(service: Service, sources: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "serve_app.cli", "ingest", str(sources), "--server", service.url,
                             "--poll-s", "0.3", *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def job_id_of(proc: subprocess.Popen) -> str:
    first = proc.stdout.readline()
    assert first.startswith("job "), first
    return first.split()[1].rstrip(":")


def status(service: Service, job_id: str) -> dict:
    return httpx.get(f"{service.url}/v1/jobs/{job_id}", timeout=60).raise_for_status().json()




def stored(service: Service) -> list[dict]:
    return httpx.get(f"{service.url}/v1/transcripts", params={"limit": 500}, timeout=60).json()["data"]


@pytest.fixture(scope="module")
def first_run(service: Service, clips: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """The CLI over 20 good clips and 3 broken entries; returns the input file, job id and output."""
    sources = tmp_path_factory.mktemp("input") / "lectures.txt"
    good = "\n".join(urls(clips, FIRST_RUN))
    sources.write_text(f"# a lecture list\n{good}\n{clips}/missing.wav  # a 404\n{clips}/not-audio.wav\n"
                       f"{clips}/truncated.wav\n")
    proc = ingest(service, sources)
    job_id = job_id_of(proc)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1, f"20/23 is under the default --min-success 0.9:\n{output}"
    return sources, job_id, output


def test_every_item_lands_or_fails_with_its_reason(service: Service, clips: str, first_run) -> None:
    _, job_id, output = first_run
    result = status(service, job_id)
    assert result["status"] == "finished"
    assert result["counts"] == {"queued": 0, "running": 0, "done": 20, "failed": 3, "skipped": 0}
    reasons = {i["url"].rsplit("/", 1)[1]: i["error_type"] for i in result["items"] if i["status"] == "failed"}
    assert reasons == {"missing.wav": "source_not_found", "not-audio.wav": "unsupported_audio",
                       "truncated.wav": "no_audio_stream"}
    assert all(i["source"] == "asr" and i["audio_seconds"] > 2 for i in result["items"] if i["status"] == "done")
    assert result["audio_hours_per_hour"] > 0
    assert "succeeded             20 (87.0%" in output and "source_not_found" in output
    assert len([t for t in stored(service) if t["url"].startswith(clips)]) == 20, "other tests may store too"


def test_a_second_run_stores_nothing_new(service: Service, first_run) -> None:
    sources, _, _ = first_run
    before = {t["key"]: t["created_at"] for t in stored(service)}
    proc = ingest(service, sources, "--min-success", "0.85")
    job_id = job_id_of(proc)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert status(service, job_id)["counts"] == {"queued": 0, "running": 0, "done": 0, "failed": 3, "skipped": 20}
    assert {t["key"]: t["created_at"] for t in stored(service)} == before
    progress = [line for line in output.splitlines() if line.startswith("[")]
    assert progress and "\r" not in output, "not a terminal: plain lines"
    assert progress[-1].startswith("[23/23] done 0  skipped 20  failed 3"), progress[-1]
    assert all(" elapsed " in line and " eta " in line and line.endswith(" items/s") for line in progress), progress


def on_a_terminal(command: list[str]) -> tuple[int, str]:
    """Run ``command`` with stdout and stderr on a pseudo-terminal 120 columns wide; its status and output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen(command, cwd=ROOT, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    with contextlib.suppress(OSError):  # EIO once the command has exited and closed the terminal
        while chunk := os.read(master, 4096):
            chunks.append(chunk)
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode(errors="replace")


def test_a_terminal_gets_a_progress_bar(service: Service, clips: str, first_run, tmp_path: Path) -> None:
    sources = tmp_path / "stored.txt"
    sources.write_text("\n".join(urls(clips, FIRST_RUN[:3])) + "\n")
    code, output = on_a_terminal([sys.executable, "-m", "serve_app.cli", "ingest", str(sources), "--server",
                                  service.url, "--poll-s", "0.3"])
    assert code == 0, output
    bars = [part for part in re.split(r"[\r\n]+", output) if "%|" in part]
    assert bars, f"no bar in {output!r}"
    bar = bars[-1]
    assert "100%|" in bar and " 3/3 [" in bar and "item/s" in bar, output
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d", bar), f"elapsed<ETA: {bar!r}"
    assert "skipped 3" in bar and "succeeded             3 (100.0%; 3 already stored)" in output


def test_a_query_finds_the_clip_it_paraphrases(service: Service, clips: str, first_run) -> None:
    response = httpx.get(f"{service.url}/v1/search", params={"q": "which insects make honey", "k": 3}, timeout=60)
    hits = response.raise_for_status().json()["data"]
    assert hits[0]["url"] == urls(clips, [TOPICS[2]])[0], hits
    assert hits[0]["start"] == 0 and "honey" in hits[0]["text"].lower()
    found = subprocess.run([sys.executable, "-m", "serve_app.cli", "search", "where do penguins swim", "-k", "1",
                            "--server", service.url], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert found.returncode == 0 and "clip07.wav" in found.stdout, found.stdout + found.stderr


def test_stored_transcripts_are_served_by_id(service: Service, clips: str, first_run) -> None:
    page = httpx.get(f"{service.url}/v1/transcripts", params={"offset": 5, "limit": 5}, timeout=60).json()
    assert page["total"] >= 20 and len(page["data"]) == 5
    key = next(t["key"] for t in stored(service) if t["url"].startswith(clips))
    transcript = httpx.get(f"{service.url}/v1/transcripts/{key}", timeout=60).json()
    assert transcript["key"] == key and transcript["segments"] and transcript["model"] == "tiny.en"
    assert httpx.get(f"{service.url}/v1/transcripts/url:nothing|tiny.en", timeout=60).status_code == 404
    assert httpx.get(f"{service.url}/v1/jobs/no-such-job", timeout=60).status_code == 404


def test_a_killed_run_restarted_stores_every_good_item_once(service: Service, clips: str, tmp_path: Path) -> None:
    sources = tmp_path / "more.txt"
    sources.write_text("\n".join(urls(clips, CLI_KILLED)) + "\n")
    first = ingest(service, sources)
    job_id = job_id_of(first)
    until(lambda: status(service, job_id)["counts"]["done"] >= 1, 300, "the first item to land")
    first.send_signal(signal.SIGKILL)
    first.wait()
    again = ingest(service, sources)
    output, _ = again.communicate(timeout=600)
    assert again.returncode == 0, output
    by_url = [t["url"] for t in stored(service) if t["url"] in urls(clips, CLI_KILLED)]
    assert sorted(by_url) == sorted(urls(clips, CLI_KILLED)), "each good item is stored exactly once"


def test_a_job_resumes_after_its_runner_is_restarted(service: Service, clips: str) -> None:
    long_clips = urls(clips, RESUMED)
    job = httpx.post(f"{service.url}/v1/jobs", json={"urls": long_clips}, timeout=60)
    assert job.status_code == 202, job.text
    job_id = job.json()["job_id"]
    ray.init(address=service.ray_address, namespace="serve", logging_level="ERROR", log_to_driver=False)
    try:
        until(lambda: status(service, job_id)["counts"]["done"] >= 1, 300, "the first item to land")
        counts = status(service, job_id)["counts"]
        assert counts["done"] < len(long_clips), "the job finished before the runner could be killed"
        (runner,) = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                     if a["name"].startswith("SERVE_REPLICA::") and "#JobRunner#" in a["name"]]
        ray.kill(ray.get_actor(runner, namespace="serve"))
    finally:
        ray.shutdown()
    until(lambda: status(service, job_id)["status"] == "finished", 300, "the resumed job to finish")
    result = status(service, job_id)
    assert result["counts"]["done"] == len(long_clips) and result["counts"]["failed"] == 0, result["counts"]
    assert sorted(t["url"] for t in stored(service) if t["url"] in long_clips) == sorted(long_clips)


def test_a_page_with_several_media_is_expanded_into_items(service: Service, media_server: str) -> None:
    job = httpx.post(f"{service.url}/v1/jobs", json={"playlist": f"{media_server}/two-clips.html"}, timeout=120)
    assert job.status_code == 202, job.text
    assert job.json()["items"] == 2
    bad = httpx.post(f"{service.url}/v1/jobs", json={"urls": []}, timeout=60)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "urls"


class Models:
    """The one piece of the graph a job asks for before it downloads anything: the models its transcripts may have."""

    @staticmethod
    def models_for(requested: str | None, language: str | None) -> list[str]:
        return ["tiny.en"]


def test_an_item_stored_before_its_runner_stopped_is_done_on_resume_and_one_stored_before_the_job_is_skipped(
        tmp_path: Path) -> None:
    """A runner killed between storing an item and recording it: on resume the item is this job's work (done,
    with its audio), not someone else's (skipped); the job's audio hours count it."""
    store = TranscriptStore(str(tmp_path / "store"), dimension=384)
    mine, earlier = "http://127.0.0.1:9/mine.wav", "http://127.0.0.1:9/earlier.wav"
    store.create_job("job", {"urls": [mine, earlier]}, [mine, earlier])
    for url in (mine, earlier):
        store.keep(Transcript(id=source_identity(url), url=url, title=None, duration_s=42.0, source="asr",
                              language="en", model="tiny.en", text="words", segments=[], chunks=[],
                              embedding_dim=None), [])
    (running,) = [item for item in store.job_items("job") if item["url"] == mine]
    store.update_item(running, status="running")
    asyncio.run(JobManager(store, Models(), JobSettings())._run("job"))
    by_url = {item["url"]: item for item in store.job_items("job")}
    assert by_url[mine]["status"] == "done" and by_url[mine]["audio_seconds"] == 42.0, by_url[mine]
    assert by_url[mine]["transcript_key"] == transcript_key(source_identity(mine), "tiny.en")
    assert by_url[earlier]["status"] == "skipped", by_url[earlier]


class Playlist(Models):
    """A pipeline whose playlist holds ``items`` and whose sources all fail for good (nothing is transcribed)."""

    def __init__(self, items: list[str]) -> None:
        self.items, self.expanded = items, []

    async def expand(self, url: str) -> list[str]:
        self.expanded.append(url)
        return self.items

    async def transcript_and_passages(self, spec: object) -> None:
        raise SourceFailed("this test serves no media", param="url")


def test_a_playlist_is_expanded_where_the_job_runs_and_the_size_limit_holds(tmp_path: Path) -> None:
    """The runner expands the playlist, adds it to the URLs given, and refuses an empty or oversize job."""
    store = TranscriptStore(str(tmp_path / "store"), dimension=384)
    listed = ["http://127.0.0.1:9/one.wav", "http://127.0.0.1:9/two.wav"]

    async def scenario() -> tuple[dict, dict | None]:
        pipeline = Playlist(listed)
        manager = JobManager(store, pipeline, JobSettings(max_urls=3))
        with pytest.raises(InvalidRequest) as empty:
            await manager.submit(JobSpec(), [" ", ""])
        assert empty.value.param == "urls"
        with pytest.raises(PayloadTooLarge) as large:
            await manager.submit(JobSpec(), ["http://127.0.0.1:9/a.wav", "http://127.0.0.1:9/b.wav"], "http://list")
        assert large.value.param == "urls" and "at most 3" in large.value.message
        created = await manager.submit(JobSpec(), [" http://127.0.0.1:9/a.wav "], "http://127.0.0.1:9/list")
        assert pipeline.expanded == ["http://list", "http://127.0.0.1:9/list"]
        await asyncio.gather(*(asyncio.all_tasks() - {asyncio.current_task()}))
        return created, await manager.status(created["job_id"])

    created, status = asyncio.run(scenario())
    assert created["items"] == 3 and status is not None and status["status"] == "finished"
    assert [item["url"] for item in status["items"]] == ["http://127.0.0.1:9/a.wav", *listed]
    assert {item["error_type"] for item in status["items"]} == {"source_failed"}
