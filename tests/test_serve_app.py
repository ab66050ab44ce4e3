"""The real Serve app started from configs/local.yaml, exercised over HTTP on loopback."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from benchmarks.support.speech import SCRIPTS, word_error_rate
from tests.conftest import CAPTIONED_ID, GENERATED_ID, TRUNCATED_MP3_BYTES, UNCAPTIONED_ID, Service, until

pytestmark = pytest.mark.serve
TIMEOUT = 300


def post_json(service: Service, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{service.url}{path}", json=body, timeout=TIMEOUT)


@pytest.mark.parametrize("path", ["/healthz", "/health"])
def test_health_lists_every_deployment(service: Service, path: str) -> None:
    body = httpx.get(f"{service.url}{path}", timeout=30).json()
    assert body["status"] == "RUNNING"
    assert body["deployments"] == {name: "HEALTHY" for name in ("Ingress", "Downloader", "Transcriber", "Embedder",
                                                                 "JobRunner", "Diarizer")}
    assert body["api_key_required"] is False, "local.yaml configures no keys, so the page asks for none"


@pytest.mark.parametrize("response_format", ["json", "verbose_json", "text"])
def test_upload_is_transcribed(service: Service, speech: dict[str, Path], response_format: str) -> None:
    response = httpx.post(
        f"{service.url}/v1/audio/transcriptions",
        files={"file": ("lecture.wav", speech["lecture"].read_bytes(), "audio/wav")},
        data={"model": "whisper-1", "response_format": response_format},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    text = response.text if response_format == "text" else response.json()["text"]
    assert word_error_rate(SCRIPTS["lecture"], text) <= 0.35
    if response_format == "verbose_json":
        body = response.json()
        assert body["language"] == "en" and body["duration"] > 5
        assert body["segments"] and body["segments"][-1]["end"] <= body["duration"] + 0.05


def test_media_url_on_loopback_goes_through_real_yt_dlp(service: Service, media_server: str) -> None:
    response = post_json(service, "/v1/transcripts", {"url": f"{media_server}/history.wav"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["source"] == "asr" and body["model"] == "tiny.en"
    assert word_error_rate(SCRIPTS["history"], body["text"]) <= 0.35
    assert body["embedding_dim"] == 384 and body["chunks"]
    assert body["chunks"][0]["start"] == body["segments"][0]["start"]


def test_youtube_captions_are_used_first(service: Service) -> None:
    response = post_json(service, "/v1/transcripts", {"url": f"https://www.youtube.com/watch?v={CAPTIONED_ID}"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["source"], body["model"], body["id"]) == ("captions", None, f"youtube:{CAPTIONED_ID}")
    assert body["text"] == "The library opened in the old town more than one hundred years ago."
    assert body["duration_s"] == pytest.approx(6.1)


def test_youtube_without_captions_falls_back_to_asr(service: Service) -> None:
    response = post_json(service, "/v1/transcripts", {"url": UNCAPTIONED_ID, "embed": False})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["source"] == "asr" and body["chunks"] == [] and body["embedding_dim"] is None
    assert word_error_rate(SCRIPTS["lecture"], body["text"]) <= 0.35


def test_compatibility_route_answers_like_v1_transcripts(service: Service) -> None:
    response = post_json(service, "/api/transcribe/youtube", {"youtube_url": f"https://youtu.be/{CAPTIONED_ID}"})
    assert response.status_code == 200, response.text
    assert response.json() == post_json(service, "/v1/transcripts", {"url": CAPTIONED_ID}).json()
    assert response.json()["transcript_id"] == f"youtube:{CAPTIONED_ID}|captions"
    assert f"youtube:{CAPTIONED_ID}|captions" in stored_keys(service)


def stored_keys(service: Service) -> set[str]:
    page = httpx.get(f"{service.url}/v1/transcripts", params={"limit": 500}, timeout=60).raise_for_status().json()
    return {row["key"] for row in page["data"]}


def search(service: Service, query: str, transcript_id: str) -> list[dict]:
    params = {"q": query, "k": 3, "transcript_id": transcript_id}
    return httpx.get(f"{service.url}/v1/search", params=params, timeout=60).raise_for_status().json()["data"]


def finished_job(service: Service, urls: list[str]) -> dict:
    created = post_json(service, "/v1/jobs", {"urls": urls})
    assert created.status_code == 202, created.text
    url = f"{service.url}/v1/jobs/{created.json()['job_id']}"
    return until(lambda: (s := httpx.get(url, timeout=60).json())["status"] == "finished" and s, 300,
                 "the job to finish")


def test_a_posted_transcript_is_stored_listed_searchable_and_skipped_by_a_job(service: Service,
                                                                             media_server: str) -> None:
    url = f"{media_server}/cooking.wav"
    body = post_json(service, "/v1/transcripts", {"url": url}).raise_for_status().json()
    key = body["transcript_id"]
    assert key and key.endswith("|tiny.en") and body["warning"] is None and body["chunks"]
    assert key in stored_keys(service)
    kept = httpx.get(f"{service.url}/v1/transcripts/{key}", timeout=60).json()
    assert (kept["url"], kept["text"]) == (url, body["text"])
    hits = search(service, "onions and carrots in a pan", key)
    assert hits and hits[0]["transcript_id"] == key and "onions" in hits[0]["text"].lower()
    job = finished_job(service, [url])
    assert job["counts"]["skipped"] == 1 and job["items"][0]["status"] == "skipped", job


def test_store_false_keeps_nothing_and_embed_false_is_stored_without_passages(service: Service) -> None:
    key = f"youtube:{GENERATED_ID}|captions"
    unkept = post_json(service, "/v1/transcripts", {"url": GENERATED_ID, "store": False}).raise_for_status().json()
    assert unkept["transcript_id"] is None and unkept["chunks"]
    assert key not in stored_keys(service)
    bare = post_json(service, "/v1/transcripts", {"url": GENERATED_ID, "embed": False}).raise_for_status().json()
    assert bare["transcript_id"] == key and bare["chunks"] == []
    assert "without passages" in bare["warning"] and "/v1/search" in bare["warning"]
    assert key in stored_keys(service) and search(service, "onions and carrots", key) == []


def test_a_truncated_mp3_is_422_and_a_job_counts_it_failed(service: Service, media_server: str) -> None:
    truncated = httpx.get(f"{media_server}/truncated.mp3", timeout=30).content
    assert len(truncated) == TRUNCATED_MP3_BYTES
    response = httpx.post(f"{service.url}/v1/audio/transcriptions", files={"file": ("cut.mp3", truncated)},
                          timeout=TIMEOUT)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "truncated_audio" and "declares" in error["message"], error
    job = finished_job(service, [f"{media_server}/whole.mp3", f"{media_server}/truncated.mp3"])
    assert (job["counts"]["done"], job["counts"]["failed"]) == (1, 1), job["counts"]
    failed = next(item for item in job["items"] if item["status"] == "failed")
    assert failed["url"].endswith("/truncated.mp3") and failed["error_type"] == "truncated_audio", failed


@pytest.mark.parametrize(("path", "body", "status", "code"), [
    ("/v1/transcripts", {"url": "ftp://127.0.0.1/a.wav"}, 400, "invalid_parameter"),
    ("/v1/transcripts", {"url": UNCAPTIONED_ID, "model": "large-v9"}, 404, "model_not_found"),
    ("/v1/transcripts", {"url": UNCAPTIONED_ID, "colour": "blue"}, 400, "invalid_parameter"),
    ("/v1/transcripts", {"url": UNCAPTIONED_ID, "source": "captions"}, 422, "no_captions"),
    ("/api/transcribe/youtube", {}, 400, "invalid_parameter"),
])
def test_bad_requests_get_a_4xx_with_a_reason(service: Service, path: str, body: dict, status: int,
                                              code: str) -> None:
    response = post_json(service, path, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]


def test_undecodable_upload_is_415_and_the_replica_survives(service: Service, speech: dict[str, Path]) -> None:
    bad = httpx.post(f"{service.url}/v1/audio/transcriptions", files={"file": ("x.wav", b"not audio at all")},
                     timeout=TIMEOUT)
    assert bad.status_code == 415, bad.text
    assert bad.json()["error"]["param"] == "file"
    good = httpx.post(f"{service.url}/v1/audio/transcriptions",
                      files={"file": ("c.wav", speech["cooking"].read_bytes())}, timeout=TIMEOUT)
    assert good.status_code == 200
