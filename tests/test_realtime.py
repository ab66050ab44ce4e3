"""``/v1/realtime`` on the running app, driven by the official ``openai`` client: server VAD, manual commit
(in the beta form deployed clients send), hostile messages, the transcript kept at close and searchable.

Speech is made at test time (flite voices, texts of our own) and sent as 24-kHz PCM16, as the client would.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import ray
from openai import OpenAI

from benchmarks.support.speech import LANGUAGES, missing_tools, realtime_pcm, speak, word_error_rate
from tests.conftest import Service, until
from tests.test_faults import driver, replica_names, transcriber_stats  # noqa: F401 - driver is a fixture

pytestmark = pytest.mark.serve

TURNS = [
    ("flite:rms", "The train to the coast leaves from the second platform every hour."),
    ("flite:slt", "Our lecture on volcanoes begins after the short break."),
]
WER_BOUND = 0.35
CHUNK_BYTES = 9600
"""200 ms of 24-kHz PCM16 an append."""
ITEM = "conversation.item.input_audio_transcription"
LOST_TURNS = 4


@pytest.fixture(scope="module")
def turns_pcm() -> list[bytes]:
    """Each of TURNS as 24-kHz PCM16, with a second of silence after it."""
    if missing := missing_tools():
        pytest.fail(f"{missing} missing: run `make test`, which installs them")
    return [realtime_pcm(speak(text, voice)) + b"\0\0" * 24000 for voice, text in TURNS]


def client(service: Service) -> OpenAI:
    return OpenAI(base_url=f"{service.url}/v1", api_key="unused-locally", max_retries=0)


def append_all(connection: Any, pcm: bytes) -> None:
    for start in range(0, len(pcm), CHUNK_BYTES):
        connection.input_audio_buffer.append(audio=base64.b64encode(pcm[start:start + CHUNK_BYTES]).decode())


def events_until(connection: Any, done: str | tuple[str, ...], count: int = 1) -> Iterator[dict[str, Any]]:
    """Server events as dicts (parsed by the client first, as an application would), up to ``count`` of ``done``."""
    seen = 0
    while seen < count:
        event = connection.recv()
        seen += event.type in ((done,) if isinstance(done, str) else done)
        yield event.model_dump()


def test_server_vad_turns_arrive_as_events_and_the_transcript_is_kept(service: Service,
                                                                      turns_pcm: list[bytes]) -> None:
    with client(service).realtime.connect(extra_query={"intent": "transcription", "store": "true"}) as connection:
        created = connection.recv().model_dump()
        connection.send({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 24000}, "transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                               "silence_duration_ms": 500}}}}})
        append_all(connection, b"\0\0" * 12000 + b"".join(turns_pcm))
        events = list(events_until(connection, f"{ITEM}.completed", len(TURNS)))
    kinds = [e["type"] for e in events if e["type"] != f"{ITEM}.delta"]
    assert created["type"] == "session.created" and kinds[0] == "session.updated"
    assert kinds[1:5] == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                          "input_audio_buffer.committed", "input_audio_buffer.speech_started"], kinds
    completed = [e for e in events if e["type"] == f"{ITEM}.completed"]
    for (_, text), event in zip(TURNS, completed, strict=True):
        assert word_error_rate([text], [event["transcript"]]) < WER_BOUND, event["transcript"]
    updated = next(e for e in events if e["type"] == "session.updated")
    transcript_id = updated["session"]["transcript_id"]  # the model named decides it: whisper-1 is tiny.en here
    assert transcript_id == f"realtime:{created['session']['id']}|tiny.en", transcript_id

    def stored() -> dict[str, Any] | None:
        found = httpx.get(f"{service.url}/v1/transcripts/{transcript_id}", timeout=30)
        return found.json() if found.status_code == 200 else None

    kept = until(stored, 60, f"{transcript_id} in the store")
    assert [s["text"] for s in kept["segments"]] == [e["transcript"] for e in completed]
    assert 0 < kept["segments"][0]["start"] < kept["segments"][1]["start"]
    hits = httpx.get(f"{service.url}/v1/search", params={"q": "volcanoes lecture", "transcript_id": transcript_id},
                     timeout=60).json()["data"]
    assert hits and hits[0]["transcript_id"] == transcript_id


def test_the_client_commits_in_the_beta_form_and_bad_messages_leave_the_session_usable(
        service: Service, turns_pcm: list[bytes]) -> None:
    with client(service).realtime.connect(extra_query={"intent": "transcription"}) as connection:
        assert connection.recv().type == "session.created"
        connection.send({"type": "transcription_session.update", "session": {
            "input_audio_format": "pcm16", "input_audio_transcription": {"model": "whisper-1"},
            "turn_detection": None}})
        updated = json.loads(connection.recv_bytes())
        assert updated["type"] == "transcription_session.updated" and updated["session"]["turn_detection"] is None
        connection.send({"type": "input_audio_buffer.append", "audio": "%%% not base64", "event_id": "bad-audio"})
        connection.send({"type": "input_audio_buffer.append", "audio": "A" * (2 * 1024 * 1024)})
        connection.send({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "transcription": {"model": "large-v9"}}}}})
        connection.input_audio_buffer.commit()
        errors = [json.loads(connection.recv_bytes())["error"] for _ in range(4)]
        append_all(connection, turns_pcm[0])
        connection.input_audio_buffer.commit()
        events = list(events_until(connection, f"{ITEM}.completed"))
    assert [e["code"] for e in errors] == ["invalid_audio", "audio_too_large", "model_not_found",
                                           "input_audio_buffer_commit_empty"], errors
    assert errors[0]["event_id"] == "bad-audio"
    assert not any(e["type"].startswith("input_audio_buffer.speech") for e in events)
    (completed,) = [e for e in events if e["type"] == f"{ITEM}.completed"]
    assert word_error_rate([TURNS[0][1]], [completed["transcript"]]) < WER_BOUND, completed["transcript"]


def test_a_session_giving_a_language_is_decoded_by_that_languages_model(service: Service) -> None:
    """No model and ``language: de``: German turns go to the multilingual model routing gives German (tiny.en would
    hear English words); an English-only model named with it is refused, naming the language."""
    voice, text = LANGUAGES["de"]
    with client(service).realtime.connect(extra_query={"intent": "transcription"}) as connection:
        assert connection.recv().type == "session.created"
        connection.send({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "transcription": {"model": "whisper-1", "language": "de"}}}}})
        refused = json.loads(connection.recv_bytes())["error"]
        connection.send({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "transcription": {"language": "de"}, "turn_detection": None}}}})
        assert connection.recv().type == "session.updated"
        append_all(connection, realtime_pcm(speak(text, voice)))
        connection.input_audio_buffer.commit()
        (completed,) = [e for e in events_until(connection, f"{ITEM}.completed") if e["type"] == f"{ITEM}.completed"]
    assert (refused["code"], refused["param"]) == ("unsupported_language", "session.audio.input.transcription.language")
    assert "'tiny.en' cannot transcribe language 'de'" in refused["message"]
    assert word_error_rate([text], [completed["transcript"]]) <= 0.35, completed["transcript"]


def test_a_session_naming_neither_model_nor_language_is_routed_by_its_first_turn(service: Service) -> None:
    """Nothing named, as the page's live captions: the first turn's language (German) picks the multilingual model,
    which a ``session.updated`` names once; the next turn is decoded by it too (tests/test_realtime_session.py
    shows it is asked for by name, not detected again)."""
    voice, text = LANGUAGES["de"]
    german = realtime_pcm(speak(text, voice))
    with client(service).realtime.connect(extra_query={"intent": "transcription"}) as connection:
        assert connection.recv().type == "session.created"
        connection.send({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "turn_detection": None}}}})
        updated = connection.recv().model_dump()
        transcripts, models = [], [updated["session"]["audio"]["input"]["transcription"]["model"]]
        for _ in range(2):
            append_all(connection, german)
            connection.input_audio_buffer.commit()
            for event in events_until(connection, f"{ITEM}.completed"):
                if event["type"] == "session.updated":
                    models.append(event["session"]["audio"]["input"]["transcription"]["model"])
                elif event["type"] == f"{ITEM}.completed":
                    transcripts.append(event["transcript"])
    assert models == ["auto", "Systran/faster-whisper-base"], models
    assert all(word_error_rate([text], [said]) <= 0.35 for said in transcripts), transcripts


@pytest.mark.usefixtures("driver")
def test_turns_on_a_lost_transcriber_replica_fail_and_the_session_goes_on(service: Service,
                                                                         turns_pcm: list[bytes]) -> None:
    (victim,) = replica_names("Transcriber")
    long_turn = b"".join(turns_pcm * 3)  # about 25 s; four of them keep the replica busy for seconds
    with client(service).realtime.connect(extra_query={"intent": "transcription"}) as connection:
        connection.send({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "transcription": {"model": "whisper-1"}, "turn_detection": None}}}})
        for _ in range(LOST_TURNS):
            append_all(connection, long_turn)
            connection.input_audio_buffer.commit()
        until(lambda: transcriber_stats(service)["in_flight"] >= 2, 60, "the turns to reach the replica")
        ray.kill(ray.get_actor(victim, namespace="serve"))
        ends = (f"{ITEM}.failed", f"{ITEM}.completed")
        outcomes = [e for e in events_until(connection, ends, LOST_TURNS) if e["type"] in ends]

        def replaced() -> bool:
            connection.input_audio_buffer.clear()  # a live client keeps talking while the replica comes back
            deployments = httpx.get(f"{service.url}/healthz", timeout=10).json()["deployments"]
            return bool(replica_names("Transcriber") - {victim}) and deployments["Transcriber"] == "HEALTHY"

        until(replaced, 180, "a healthy replacement Transcriber", interval_s=2)
        append_all(connection, turns_pcm[1])
        connection.input_audio_buffer.commit()
        after = [e for e in events_until(connection, f"{ITEM}.completed") if e["type"] == f"{ITEM}.completed"]
    failed = [e for e in outcomes if e["type"] == f"{ITEM}.failed"]
    assert failed and all(e["error"]["code"] == "overloaded" for e in failed), outcomes
    assert len({e["item_id"] for e in outcomes}) == LOST_TURNS, "every turn is reported, failed or completed"
    assert word_error_rate([TURNS[1][1]], [after[0]["transcript"]]) < WER_BOUND, after[0]["transcript"]
