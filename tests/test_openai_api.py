"""The OpenAI-compatible API, driven by the official ``openai`` client against the real Serve app."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import srt
import webvtt

from benchmarks.support.speech import SCRIPTS, word_error_rate
from tests.conftest import TEST_UPLOAD_LIMIT, UNCAPTIONED_ID, Service

pytestmark = pytest.mark.serve


@pytest.fixture(scope="module")
def client(service: Service) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{service.url}/v1", api_key="unused", max_retries=0, timeout=300)


def transcribe(client: openai.OpenAI, path: Path, **kwargs):
    with path.open("rb") as audio:
        return client.audio.transcriptions.create(model="whisper-1", file=audio, **kwargs)


def test_json_and_text_formats(client: openai.OpenAI, speech: dict[str, Path]) -> None:
    as_json = transcribe(client, speech["history"])
    as_text = transcribe(client, speech["history"], response_format="text")
    assert word_error_rate(SCRIPTS["history"], as_json.text) <= 0.35
    assert as_text.strip() == as_json.text


def test_verbose_json_has_segments_with_decoder_scores(client: openai.OpenAI, speech: dict[str, Path]) -> None:
    result = transcribe(client, speech["lecture"], response_format="verbose_json")
    with wave.open(str(speech["lecture"])) as spoken:
        seconds = spoken.getnframes() / spoken.getframerate()
    assert result.language == "en" and result.duration == pytest.approx(seconds, abs=0.05)
    assert result.segments and result.segments[-1].end <= result.duration + 0.05
    for segment in result.segments:
        assert segment.avg_logprob < 0 and 0 <= segment.no_speech_prob <= 1 and segment.compression_ratio > 0
        assert segment.tokens
    assert " ".join(s.text for s in result.segments) == result.text


def test_word_timestamps_increase_inside_the_audio(client: openai.OpenAI, speech: dict[str, Path]) -> None:
    result = transcribe(client, speech["cooking"], response_format="verbose_json",
                        timestamp_granularities=["word", "segment"])
    words = result.words
    assert len(words) >= 15 and result.segments
    assert [w.start for w in words] == sorted(w.start for w in words)
    assert all(0 <= w.start <= w.end <= result.duration + 0.05 for w in words)
    only_words = transcribe(client, speech["cooking"], response_format="verbose_json", timestamp_granularities=["word"])
    assert only_words.words and not getattr(only_words, "segments", None)


def test_srt_is_a_valid_subrip_file(client: openai.OpenAI, speech: dict[str, Path]) -> None:
    body = transcribe(client, speech["lecture"], response_format="srt")
    cues = list(srt.parse(body))
    assert len(cues) >= 2 and [c.index for c in cues] == list(range(1, len(cues) + 1))
    assert all(c.start < c.end for c in cues)
    assert word_error_rate(SCRIPTS["lecture"], " ".join(c.content for c in cues)) <= 0.35


def test_vtt_is_a_valid_webvtt_file(client: openai.OpenAI, speech: dict[str, Path]) -> None:
    body = transcribe(client, speech["lecture"], response_format="vtt")
    cues = webvtt.from_buffer(io.StringIO(body)).captions
    assert len(cues) >= 2 and all(c.start_in_seconds < c.end_in_seconds for c in cues)
    assert word_error_rate(SCRIPTS["lecture"], " ".join(c.text for c in cues)) <= 0.35


def test_stream_events_arrive_in_order_with_the_same_final_text(client: openai.OpenAI,
                                                               speech: dict[str, Path]) -> None:
    with speech["lecture"].open("rb") as audio:
        events = list(client.audio.transcriptions.create(model="whisper-1", file=audio, stream=True))
    types = [e.type for e in events]
    assert types[-1] == "transcript.text.done" and set(types[:-1]) == {"transcript.text.delta"}
    assert len(types) >= 3, "each decoded segment should arrive as its own delta"
    assert "".join(e.delta for e in events[:-1]) == events[-1].text
    assert events[-1].text == transcribe(client, speech["lecture"]).text


def test_translation_to_english(client: openai.OpenAI, speech: dict[str, Path]) -> None:
    with speech["cooking"].open("rb") as audio:
        result = client.audio.translations.create(model="whisper-1", file=audio)
    assert word_error_rate(SCRIPTS["cooking"], result.text) <= 0.35


def test_models_are_listed_in_openai_shape(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"whisper-1", "tiny.en", "all-MiniLM-L6-v2"} <= ids
    assert client.models.retrieve("whisper-1").owned_by == "transcribe-serve"


def test_embeddings_single_batched_and_base64(client: openai.OpenAI) -> None:
    single = client.embeddings.create(model="all-MiniLM-L6-v2", input="rain falls on the river",
                                      encoding_format="float")
    assert len(single.data) == 1 and len(single.data[0].embedding) == 384
    assert single.usage.prompt_tokens == single.usage.total_tokens > 0
    texts = ["rain falls on the river", "the river floods after rain", "cut the onions"]
    batched = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)  # the client asks for base64
    vectors = np.array([d.embedding for d in batched.data])
    assert [d.index for d in batched.data] == [0, 1, 2]
    assert np.allclose(vectors[0], single.data[0].embedding, atol=1e-5)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_url_field_runs_through_the_downloader(service: Service, media_server: str) -> None:
    response = httpx.post(f"{service.url}/v1/audio/transcriptions", timeout=300,
                          data={"url": f"{media_server}/history.wav", "response_format": "json"})
    assert response.status_code == 200, response.text
    assert word_error_rate(SCRIPTS["history"], response.json()["text"]) <= 0.35


def test_errors_raise_the_clients_exception_classes(client: openai.OpenAI, speech: dict[str, Path]) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        transcribe(client, speech["cooking"], response_format="docx")
    assert bad.value.body["param"] == "response_format"
    with pytest.raises(openai.NotFoundError), speech["cooking"].open("rb") as audio:
        client.audio.transcriptions.create(model="large-v9", file=audio)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("large-v9")
    with pytest.raises(openai.BadRequestError, match="384"):
        client.embeddings.create(model="all-MiniLM-L6-v2", input="x", dimensions=128)
    with pytest.raises(openai.APIStatusError) as too_large:
        client.audio.transcriptions.create(model="whisper-1", file=("big.wav", b"\0" * (TEST_UPLOAD_LIMIT + 1)))
    assert too_large.value.status_code == 413
    with pytest.raises(openai.APIStatusError) as undecodable:
        client.audio.transcriptions.create(model="whisper-1", file=("notes.wav", b"plain text, not audio"))
    assert undecodable.value.status_code == 415


def test_audio_without_samples_is_422(client: openai.OpenAI, service: Service) -> None:
    empty = io.BytesIO()
    with wave.open(empty, "wb") as wav:
        wav.setnchannels(1), wav.setsampwidth(2), wav.setframerate(16000)
    with pytest.raises(openai.UnprocessableEntityError) as error:
        client.audio.transcriptions.create(model="whisper-1", file=("empty.wav", empty.getvalue()))
    assert error.value.body["code"] == "no_audio_stream"
    by_url = httpx.post(f"{service.url}/v1/audio/transcriptions", timeout=300,
                        data={"url": UNCAPTIONED_ID, "source": "captions"})
    assert by_url.status_code == 422 and by_url.json()["error"]["code"] == "no_captions"
