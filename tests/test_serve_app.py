"""The real Serve app started from configs/local.yaml, exercised over HTTP on loopback."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import CAPTIONED_ID, SCRIPTS, UNCAPTIONED_ID, Service, word_error_rate

pytestmark = pytest.mark.serve
TIMEOUT = 300


def post_json(service: Service, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{service.url}{path}", json=body, timeout=TIMEOUT)


def test_health_lists_every_deployment(service: Service) -> None:
    body = httpx.get(f"{service.url}/healthz", timeout=30).json()
    assert body["status"] == "RUNNING"
    assert body["deployments"] == {name: "HEALTHY" for name in ("Ingress", "Downloader", "Transcriber", "Embedder",
                                                                 "JobRunner")}


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
