"""The Whisper engine without Ray, on the real tiny.en model and speech made with espeak-ng."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.audio import decode
from deployments.errors import InvalidRequest, UnknownModel
from deployments.schemas import TranscribeOptions
from deployments.transcriber import WhisperEngine
from serve_app.settings import EMBEDDED, TranscriberSettings
from tests.conftest import SCRIPTS, word_error_rate


@pytest.fixture(scope="module")
def engine() -> WhisperEngine:
    return WhisperEngine(TranscriberSettings(models={"tiny.en": EMBEDDED, "tiny-copy": EMBEDDED}, max_models=1))


def test_transcripts_are_close_to_the_spoken_text(engine: WhisperEngine, speech: dict[str, Path]) -> None:
    rates = {}
    for name, path in speech.items():
        result = engine.transcribe(decode(path), TranscribeOptions())
        assert result.model == "tiny.en" and result.language == "en"
        rates[name] = word_error_rate(SCRIPTS[name], result.text)
    assert max(rates.values()) <= 0.35, rates
    assert sum(rates.values()) / len(rates) <= 0.2, rates


def test_word_timestamps_increase_and_stay_inside_the_audio(engine: WhisperEngine, speech: dict[str, Path]) -> None:
    result = engine.transcribe(decode(speech["cooking"]), TranscribeOptions(word_timestamps=True))
    words = [w for s in result.segments for w in (s.words or [])]
    assert len(words) >= 15
    starts = [w.start for w in words]
    assert starts == sorted(starts)
    assert all(0 <= w.start <= w.end <= result.duration + 0.05 for w in words)
    assert words[0].word.lower().startswith("cut")


def test_the_loaded_model_is_kept_between_requests(engine: WhisperEngine, speech: dict[str, Path]) -> None:
    before = engine.cache.loads
    for _ in range(3):
        engine.transcribe(decode(speech["history"]), TranscribeOptions(model="whisper-1"))
    assert engine.cache.loads == before
    assert engine.stats()["models_resident"] == ["tiny.en"]


def test_another_model_loads_on_demand_and_evicts_past_the_bound(speech: dict[str, Path]) -> None:
    engine = WhisperEngine(TranscriberSettings(models={"tiny.en": EMBEDDED, "tiny-copy": EMBEDDED}, max_models=1))
    assert engine.cache.loads == 1
    engine.transcribe(decode(speech["cooking"]), TranscribeOptions(model="tiny-copy"))
    engine.transcribe(decode(speech["cooking"]), TranscribeOptions(model="tiny-copy"))
    assert engine.stats() == {"model_loads": 2, "model_evictions": 1, "models_resident": ["tiny-copy"]}


def test_unknown_model_and_impossible_options_are_refused(engine: WhisperEngine, speech: dict[str, Path]) -> None:
    audio = decode(speech["cooking"])
    with pytest.raises(UnknownModel):
        engine.transcribe(audio, TranscribeOptions(model="large-v3"))
    with pytest.raises(InvalidRequest, match="language 'de'"):
        engine.transcribe(audio, TranscribeOptions(language="de"))


def test_english_only_model_translates_english_speech_to_its_transcript(engine: WhisperEngine,
                                                                         speech: dict[str, Path]) -> None:
    audio = decode(speech["cooking"])
    translated = engine.transcribe(audio, TranscribeOptions(task="translate"))
    assert translated.text == engine.transcribe(audio, TranscribeOptions()).text


def test_streamed_segments_equal_the_whole_transcription(engine: WhisperEngine, speech: dict[str, Path]) -> None:
    audio = decode(speech["lecture"])
    _, info, segments = engine.stream(audio, TranscribeOptions())
    assert info.duration == pytest.approx(len(audio) / 16000)
    assert [s.text for s in segments] == [s.text for s in engine.transcribe(audio, TranscribeOptions()).segments]


def test_silence_gives_an_empty_transcript(engine: WhisperEngine) -> None:
    import numpy as np

    result = engine.transcribe(np.zeros(16000 * 3, dtype=np.float32), TranscribeOptions(vad_filter=True))
    assert result.text == ""
    assert result.duration == pytest.approx(3.0)


def test_rss_falls_back_after_an_idle_model_is_unloaded(speech: dict[str, Path]) -> None:
    from deployments.metrics import rss_bytes

    engine = WhisperEngine(TranscriberSettings(models={"tiny.en": EMBEDDED, "tiny-copy": EMBEDDED}, max_models=2,
                                               model_idle_ttl_s=1e-9))
    audio = decode(speech["cooking"])
    engine.transcribe(audio, TranscribeOptions())
    baseline = rss_bytes()
    engine.transcribe(audio, TranscribeOptions(model="tiny-copy"))
    loaded = rss_bytes()
    assert engine.cache.expire_idle() == [("tiny-copy", "cpu", "int8")]
    unloaded = rss_bytes()
    assert loaded - baseline > 20 * 2**20, (baseline, loaded)
    assert unloaded - baseline < (loaded - baseline) / 2, (baseline, loaded, unloaded)
