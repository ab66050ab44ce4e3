"""Hostile traffic against the running app: fuzzed requests never get a 500, load never gets past 503."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Service

pytestmark = pytest.mark.serve
ACCEPTABLE = {200, 400, 404, 413, 415, 422, 424, 503}
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))

# Text that cannot become a resolvable host name: no ':' or '/', so no URL reaches DNS, only the parsers.
words = st.text(st.characters(blacklist_characters=":/", blacklist_categories=("Cs",)), max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | words,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(words, children, max_size=4),
    max_leaves=12,
)


def assert_healthy(service: Service) -> None:
    body = httpx.get(f"{service.url}/healthz", timeout=30).json()
    assert body["status"] == "RUNNING" and set(body["deployments"].values()) == {"HEALTHY"}, body


@FUZZ
@given(body=st.one_of(
    json_values,
    st.fixed_dictionaries({"url": json_values}, optional={"source": json_values, "language": json_values,
                                                         "model": json_values, "embed": json_values}),
))
def test_fuzzed_json_transcript_requests_get_4xx(service: Service, body: object) -> None:
    response = httpx.post(f"{service.url}/v1/transcripts", content=json.dumps(body), timeout=120,
                          headers={"content-type": "application/json"})
    assert response.status_code in ACCEPTABLE, response.text
    if response.status_code != 200:
        assert response.json()["error"]["message"]


@FUZZ
@given(body=st.fixed_dictionaries({"input": json_values, "model": st.sampled_from(["all-MiniLM-L6-v2", "x"])},
                                  optional={"encoding_format": json_values, "dimensions": json_values}))
def test_fuzzed_embedding_requests_get_4xx(service: Service, body: dict) -> None:
    response = httpx.post(f"{service.url}/v1/embeddings", content=json.dumps(body), timeout=120,
                          headers={"content-type": "application/json"})
    assert response.status_code in ACCEPTABLE, response.text


@FUZZ
@given(fields=st.dictionaries(
    st.sampled_from(["model", "language", "prompt", "response_format", "temperature", "stream", "source",
                     "timestamp_granularities[]", "url"]),
    words, max_size=6),
    data=st.binary(max_size=2048))
def test_fuzzed_multipart_uploads_get_4xx(service: Service, fields: dict, data: bytes) -> None:
    response = httpx.post(f"{service.url}/v1/audio/transcriptions", data=fields,
                          files={"file": ("fuzz.wav", data)}, timeout=120)
    assert response.status_code in ACCEPTABLE, response.text


HOSTILE = [
    ("/v1/transcripts", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
    ("/v1/transcripts", {"json": {"url": {"nested": [None, 1e308]}, "embed": "sometimes"}}),
    ("/v1/embeddings", {"json": {"input": [[1, 2], None], "model": "all-MiniLM-L6-v2", "dimensions": -3}}),
    ("/v1/audio/transcriptions", {"data": {"temperature": "hot", "timestamp_granularities[]": "\x00"},
                                  "files": {"file": ("x.wav", b"RIFF\xff\xff\xff\xffWAVEfmt ")}}),
    ("/v1/audio/translations", {"data": {"response_format": "srt"}, "files": {"file": ("x.mp3", b"\xff\xfb" * 64)}}),
]


@pytest.mark.parametrize(("path", "request_args"), HOSTILE, ids=[p for p, _ in HOSTILE])
def test_hostile_requests_leave_every_replica_alive(service: Service, path: str, request_args: dict) -> None:
    """Each hostile request of its own gets a 4xx with a reason, and every deployment stays healthy after it."""
    response = httpx.post(f"{service.url}{path}", timeout=120, **request_args)
    assert 400 <= response.status_code < 500 and response.json()["error"]["message"], response.text
    assert_healthy(service)


@pytest.mark.slow
def test_fifty_clients_get_answers_or_503_and_memory_stays_bounded(service: Service, speech: dict[str, Path]) -> None:
    """50 clients on loopback for 20 s, each backing off as Retry-After says; bounded in count and time.

    The warm-up is the same load: the decoders' batches (two workers, up to four windows each) set the
    allocator's high-water mark, and the bound is that a second stretch of that load adds nothing to it.
    """
    audio = speech["cooking"].read_bytes()
    asyncio.run(_load(service.url, audio, clients=50, seconds=10))  # warm-up: allocator and queues settle
    before = transcriber_stats(service)
    statuses = asyncio.run(_load(service.url, audio, clients=50, seconds=20))
    after = transcriber_stats(service)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 10 and statuses.count(503) >= 1
    assert after["model_loads"] == before["model_loads"] and set(after["model_loads"].values()) == {1}
    assert after["rss_bytes"] < before["rss_bytes"] * 1.10, (before["rss_bytes"], after["rss_bytes"])
    assert_healthy(service)


def transcriber_stats(service: Service) -> dict:
    return httpx.get(f"{service.url}/stats", timeout=60).raise_for_status().json()["Transcriber"]


async def _load(url: str, audio: bytes, clients: int, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    statuses: list[int] = []
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=clients)) as http:

        async def client() -> None:
            while time.monotonic() < deadline:
                response = await http.post(f"{url}/v1/audio/transcriptions", files={"file": ("c.wav", audio)})
                statuses.append(response.status_code)
                if response.status_code == 503:
                    await asyncio.sleep(float(response.headers["retry-after"]))

        await asyncio.gather(*(client() for _ in range(clients)))
    return statuses
