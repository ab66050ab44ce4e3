"""Languages through the real app (the session's ``service``, configs/local.yaml): models with their languages,
requests routed by the language heard, translations, the store, and the 400s, over HTTP on loopback."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import openai
import pytest

from benchmarks.support.fake_youtube import FakeVideo, FakeYouTube
from benchmarks.support.speech import LANGUAGES, speak, word_error_rate
from tests.conftest import Service

pytestmark = pytest.mark.serve
TIMEOUT = 300
BASE = "Systran/faster-whisper-base"
RUSSIAN_ID = "russianTalk"
GERMAN_ID = "deCaptions1"
GERMAN = [(0.0, 3.0, "Wasser fällt als Regen vom Himmel."), (3.0, 2.5, "Die Sonne wärmt das Meer.")]
TRANSLATED = [(0.0, 3.0, "Water falls from the sky as rain."), (3.0, 2.5, "The sun warms the sea.")]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("languages")
    paths = {}
    for code in ("en", "de", "it", "ru"):
        voice, text = LANGUAGES[code]
        paths[code] = folder / f"{code}.wav"
        paths[code].write_bytes(speak(text, voice))
    return paths


def post_audio(service: Service, route: str, path: Path, **data: str) -> httpx.Response:
    """A multipart upload as any HTTP client sends one; no ``model`` unless given."""
    return httpx.post(f"{service.url}/v1/audio/{route}", files={"file": (path.name, path.read_bytes(), "audio/wav")},
                      data=data, timeout=TIMEOUT)


def test_models_list_both_whisper_models_with_their_languages(service: Service) -> None:
    cards = {m["id"]: m for m in httpx.get(f"{service.url}/v1/models", timeout=30).json()["data"]}
    assert cards["tiny.en"]["languages"] == ["en"] and cards["whisper-1"]["languages"] == ["en"]
    assert {"en", "de", "fr", "ja"} <= set(cards[BASE]["languages"]) and cards["base"] == {**cards[BASE], "id": "base"}
    assert cards["auto"]["languages"][0] == "en" and len(cards["auto"]["languages"]) == len(cards[BASE]["languages"])
    assert "languages" not in cards["all-MiniLM-L6-v2"], "an embedding model transcribes no language"
    one = httpx.get(f"{service.url}/v1/models/{BASE}", timeout=30).json()
    assert one["object"] == "model" and one["languages"] == cards[BASE]["languages"]


@pytest.mark.parametrize("code", ["en", "de"])
def test_a_request_naming_no_model_is_routed_by_the_language_heard(service: Service, clips: dict[str, Path],
                                                                   code: str) -> None:
    response = post_audio(service, "transcriptions", clips[code], response_format="verbose_json")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["language"], body["model"]) == (code, "tiny.en" if code == "en" else BASE)
    assert {segment["language"] for segment in body["segments"]} == {code}
    assert word_error_rate(LANGUAGES[code][1], body["text"]) <= 0.35, body["text"]


def test_a_language_given_routes_without_detection_and_a_model_given_is_honoured(service: Service,
                                                                                 clips: dict[str, Path]) -> None:
    italian = post_audio(service, "transcriptions", clips["it"], language="it", response_format="verbose_json")
    assert italian.status_code == 200 and italian.json()["model"] == BASE, italian.text
    client = openai.OpenAI(base_url=f"{service.url}/v1", api_key="unused", max_retries=0, timeout=TIMEOUT)
    with clips["en"].open("rb") as audio:
        forced = client.audio.transcriptions.create(model="base", file=audio, response_format="verbose_json")
    assert forced.language == "en" and forced.model_extra["model"] == BASE


def test_bad_languages_are_400s_that_name_what_is_wrong(service: Service, clips: dict[str, Path]) -> None:
    wrong = post_audio(service, "transcriptions", clips["de"], model="tiny.en", language="de")
    assert wrong.status_code == 400, wrong.text
    error = wrong.json()["error"]
    assert "'tiny.en'" in error["message"] and "'de'" in error["message"] and error["param"] == "language"
    unknown = post_audio(service, "transcriptions", clips["de"], language="xx")
    assert unknown.status_code == 400 and "unknown language code 'xx'" in unknown.json()["error"]["message"]


def test_translation_gives_english_from_another_language(service: Service, clips: dict[str, Path]) -> None:
    response = post_audio(service, "translations", clips["it"], response_format="verbose_json")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task"] == "translate" and body["model"] == BASE
    assert {"water", "sky", "sea"} <= set(re.findall(r"[a-z]+", body["text"].lower())), body["text"]


def test_a_stored_transcript_says_its_language_and_model_keeps_an_english_version_and_a_wrong_one_is_never_stored(
        service: Service, clips: dict[str, Path], fake_youtube: FakeYouTube) -> None:
    """A Russian video without captions, asked with ``translate``: the Russian transcript and its English version
    stored side by side, and an English search finding the video at the moment of the passage."""
    fake_youtube.videos[RUSSIAN_ID] = FakeVideo("Круговорот воды", audio=clips["ru"])
    url = f"https://www.youtube.com/watch?v={RUSSIAN_ID}"
    refused = httpx.post(f"{service.url}/v1/transcripts", json={"url": url, "model": "tiny.en", "language": "ru"},
                         timeout=TIMEOUT)
    assert refused.status_code == 400 and "'ru'" in refused.json()["error"]["message"], refused.text
    response = httpx.post(f"{service.url}/v1/transcripts", json={"url": url, "translate": True}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["source"], body["language"], body["model"]) == ("asr", "ru", BASE)
    assert word_error_rate(LANGUAGES["ru"][1], body["text"]) <= 0.3, body["text"]
    kept = httpx.get(f"{service.url}/v1/transcripts/{body['transcript_id']}", timeout=30).json()
    assert (kept["language"], kept["model"]) == ("ru", BASE)
    english = body["translation"]
    assert english["transcript_id"] == f"youtube:{RUSSIAN_ID}+en|{BASE}" and english["language"] == "en"
    assert {"water", "sky", "sea"} <= set(re.findall(r"[a-z]+", english["text"].lower())), english["text"]
    hits = httpx.get(f"{service.url}/v1/search", timeout=60, params={
        "q": "rain falling from the sky", "k": 3, "transcript_id": english["transcript_id"]}).json()["data"]
    found = [h for h in hits if h["transcript_id"] == english["transcript_id"]]
    assert found, [h["transcript_id"] for h in hits]
    assert found[0]["url"] == url and 0 <= found[0]["start"] < body["duration_s"]
    assert found[0]["link"] == f"{url}&t={int(found[0]['start'])}s", "the link opens the video at the passage"
    srt = httpx.get(f"{service.url}/v1/transcripts/{english['transcript_id']}",
                    params={"response_format": "srt"}, timeout=30).text
    assert "-->" in srt and "water" in srt.lower(), "the English version downloads as subtitles too"
    keys = [row["key"] for row in httpx.get(f"{service.url}/v1/transcripts", params={"limit": 500},
                                            timeout=30).json()["data"]]
    assert keys.count(body["transcript_id"]) == 1 and f"youtube:{RUSSIAN_ID}|tiny.en" not in keys


def test_a_captioned_video_keeps_youtubes_english_translation_of_its_captions_without_fetching_audio(
        service: Service, fake_youtube: FakeYouTube) -> None:
    """German captions that YouTube translates, asked in German with ``translate``: the German captions and YouTube's
    English translation of them stored side by side, and no audio fetched (the video has none to fetch)."""
    fake_youtube.videos[GERMAN_ID] = FakeVideo("Der Wasserkreislauf", captions=GERMAN, language="de",
                                               translations={"en": TRANSLATED})
    url = f"https://www.youtube.com/watch?v={GERMAN_ID}"
    response = httpx.post(f"{service.url}/v1/transcripts", json={"url": url, "language": "de", "translate": True},
                          timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["source"], body["language"], body["text"]) == ("captions", "de", " ".join(t for *_, t in GERMAN))
    assert body["translated_from"] is None
    english = body["translation"]
    assert (english["source"], english["language"], english["translated_from"]) == ("captions", "en", "de"), english
    assert english["text"] == " ".join(t for *_, t in TRANSLATED)
    assert english["transcript_id"].startswith(f"youtube:{GERMAN_ID}+en")
    asked = [r for r in fake_youtube.requests if GERMAN_ID in r]
    assert any("tlang=en" in r for r in asked) and not any("/media/" in r for r in asked), asked
    srt = httpx.get(f"{service.url}/v1/transcripts/{english['transcript_id']}",
                    params={"response_format": "srt"}, timeout=30).text
    assert "00:00:03,000 --> 00:00:05,500" in srt and "The sun warms the sea." in srt
    stored = httpx.get(f"{service.url}/v1/transcripts/{english['transcript_id']}", timeout=30).json()
    assert stored["translated_from"] == "de", "the store keeps that YouTube translated it"
    listed = httpx.get(f"{service.url}/v1/transcripts", params={"limit": 500}, timeout=30).json()["data"]
    assert {row["key"]: row["translated_from"] for row in listed}[english["transcript_id"]] == "de"
