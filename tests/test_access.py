"""API keys and rate limits: the policy on values, and the real middleware in front of a FastAPI app."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from deployments.errors import RateLimited, Unauthorized
from serve_app import access
from serve_app.access import AccessControl, RateLimiter, key_hash
from serve_app.settings import IngressSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_keys_from_hashes_env_and_file_are_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "keys"
    secret.write_text("# one key a line\nfile-key\n" + key_hash("hashed-in-file") + "\n")
    monkeypatch.setenv("TS_KEYS", "env-key-1, env-key-2")
    control = AccessControl(IngressSettings(api_key_hashes=[key_hash("config-key")], api_keys_env="TS_KEYS",
                                            api_keys_file=str(secret)))
    for key in ("config-key", "env-key-1", "env-key-2", "file-key", "hashed-in-file"):
        assert control.identity(f"Bearer {key}", "127.0.0.1") == key_hash(key)


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic c2VjcmV0", "Bearer wrong", "secret"])
def test_missing_or_wrong_keys_are_refused(header: str | None) -> None:
    control = AccessControl(IngressSettings(api_key_hashes=[key_hash("secret")]))
    with pytest.raises(Unauthorized):
        control.check("/v1/models", header, "127.0.0.1")


def test_health_stays_open_with_keys_on() -> None:
    AccessControl(IngressSettings(api_key_hashes=[key_hash("secret")])).check("/healthz", None, "127.0.0.1")


def test_the_page_and_its_static_files_stay_open_with_keys_on() -> None:
    control = AccessControl(IngressSettings(api_key_hashes=[key_hash("secret")]))
    for path in ("/", "/static/app.js", "/static/style.css"):
        control.check(path, None, "127.0.0.1")
    for path in ("/static", "/staticky/app.js", "/docs", "/v1/transcripts", "/index.html"):
        with pytest.raises(Unauthorized):
            control.check(path, None, "127.0.0.1")


def test_a_configured_key_source_that_is_missing_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        AccessControl(IngressSettings(api_keys_file=str(tmp_path / "absent")))
    with pytest.raises(ValueError, match="is not set"):
        AccessControl(IngressSettings(api_keys_env="TS_SURELY_UNSET_VARIABLE"))
    (tmp_path / "empty").write_text("# nothing here\n")
    with pytest.raises(ValueError, match="refusing to start open"):
        AccessControl(IngressSettings(api_keys_file=str(tmp_path / "empty")))


def test_rate_limit_allows_a_burst_then_says_when_to_retry() -> None:
    clock = Clock()
    limiter = RateLimiter(per_minute=3, clock=clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.acquire("a") == pytest.approx(20.0)
    assert limiter.acquire("b") == 0, "buckets are per client"
    clock.now += 20
    assert limiter.acquire("a") == 0
    assert limiter.acquire("a") > 0


@pytest.fixture()
def client() -> TestClient:
    app = FastAPI()
    access.install(app, AccessControl(IngressSettings(api_key_hashes=[key_hash("secret")], rate_limit_per_minute=2)))

    @app.get("/healthz")
    @app.get("/health")
    def health() -> dict:
        return {"ok": True}

    @app.get("/v1/models")
    def models() -> dict:
        return {"data": []}

    return TestClient(app)


def test_middleware_answers_401_429_in_openai_shape(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/health").status_code == 200, "the original backend's health route is open too"
    anonymous = client.get("/v1/models")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "invalid_api_key"
    headers = {"Authorization": "Bearer secret"}
    assert [client.get("/v1/models", headers=headers).status_code for _ in range(2)] == [200, 200]
    limited = client.get("/v1/models", headers=headers)
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == RateLimited.code
    assert int(limited.headers["retry-after"]) >= 1


def test_each_app_keeps_its_own_policy() -> None:
    """The policy lives on the app's state: a second app with keys does not close the first one."""
    apps = [FastAPI(), FastAPI()]
    access.install(apps[0], AccessControl(IngressSettings()))
    access.install(apps[1], AccessControl(IngressSettings(api_key_hashes=[key_hash("secret")])))
    for app in apps:
        app.get("/v1/models")(lambda: {"data": []})
    assert [TestClient(app).get("/v1/models").status_code for app in apps] == [200, 401]
