"""The routing rules as plain functions of the settings (no model loaded): which name a request resolves to, and
the 400s and 404 it gets before any download."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deployments.errors import InvalidRequest, UnknownModel
from deployments.language_routing import check_request, resolved, unnamed
from deployments.languages import whisper_languages
from deployments.pipeline import TranscriptPipeline
from deployments.schemas import TranscribeOptions
from deployments.settings import EMBEDDED, TranscriberSettings
from tests.conftest import local_config

BASE = "Systran/faster-whisper-base"


@pytest.fixture(scope="module")
def settings() -> TranscriberSettings:
    return TranscriberSettings.model_validate(local_config()["applications"][0]["args"]["transcriber"])


def test_a_request_naming_no_model_is_routed_and_a_named_one_is_kept(settings: TranscriberSettings) -> None:
    assert unnamed(settings, None) == "auto" and unnamed(settings, "whisper-1") == "whisper-1"
    assert unnamed(TranscriberSettings(), None) is None, "without routing, no model means the default"
    assert resolved(settings, TranscribeOptions()).model == "auto", "no language: detection decides"
    assert resolved(settings, TranscribeOptions(language="de")).model == BASE
    assert resolved(settings, TranscribeOptions(language="en")).model == "tiny.en"
    assert resolved(settings, TranscribeOptions(model="base", language="en")).model == BASE, "the alias, honoured"
    assert resolved(settings, TranscribeOptions(model="whisper-1")).model == "tiny.en"


def test_a_language_the_model_cannot_do_is_a_400_naming_both(settings: TranscriberSettings) -> None:
    with pytest.raises(InvalidRequest, match=r"model 'tiny\.en' cannot transcribe language 'de'.*\['en'\]") as refused:
        check_request(settings, "tiny.en", "de")
    assert (refused.value.status, refused.value.param, refused.value.code) == (400, "language", "unsupported_language")


def test_an_unknown_language_code_is_a_400_naming_it(settings: TranscriberSettings) -> None:
    for model in (None, "auto", "base", "tiny.en"):
        with pytest.raises(InvalidRequest, match="unknown language code 'xx'"):
            resolved(settings, TranscribeOptions(model=model, language="xx"))


def test_an_unknown_model_is_a_404_listing_the_routed_name_too(settings: TranscriberSettings) -> None:
    with pytest.raises(UnknownModel, match="'auto'"):
        check_request(settings, "large-v9", None)


def test_languages_of_models_aliases_and_the_routed_name(settings: TranscriberSettings) -> None:
    assert settings.languages_of("tiny.en") == ["en"]
    assert settings.languages_of(BASE) == list(whisper_languages()) and {"de", "fr", "ru", "ja"} <= set(
        whisper_languages())
    assert settings.languages_of("auto")[0] == "en" and set(settings.languages_of("auto")) == set(whisper_languages())


def test_routing_must_name_served_models_and_a_detector_that_can_detect() -> None:
    models = {"tiny.en": EMBEDDED, BASE: "assembled:whisper-base"}
    with pytest.raises(ValidationError, match="routing: 'large-v3' is not a key of models"):
        TranscriberSettings(models=models, routing={"detector": BASE, "models": ["tiny.en", "large-v3"]})
    with pytest.raises(ValidationError, match="cannot detect"):
        TranscriberSettings(models=models, languages={"tiny.en": ["en"]},
                            routing={"detector": "tiny.en", "models": ["tiny.en"]})
    with pytest.raises(ValidationError, match="also a key of models"):
        TranscriberSettings(models=models, routing={"name": "tiny.en", "detector": BASE, "models": [BASE]})
    routed = TranscriberSettings(models=models, aliases={"whisper-1": "auto"},
                                 routing={"detector": BASE, "models": ["tiny.en", BASE]})
    assert routed.resolve("whisper-1") == "auto", "an alias may point at the routed name"


def test_a_source_or_a_live_session_naming_no_model_is_routed(settings: TranscriberSettings) -> None:
    pipeline = TranscriptPipeline(None, None, settings)  # the checks touch no deployment
    assert pipeline.check_source_model(None) == "auto" and pipeline.check_model(None) == "auto"
    assert TranscriptPipeline(None, None, TranscriberSettings()).check_model(None) == "tiny.en", "no routing"
    assert pipeline.models_for(None, None) == ["tiny.en", BASE], "a job skips a source stored by either"
    assert pipeline.models_for("base", None) == [BASE]


def test_a_live_session_giving_a_language_gets_that_languages_model_without_detection(
        settings: TranscriberSettings) -> None:
    """The language a realtime session gives picks its model as a source's does, with no detection."""
    pipeline = TranscriptPipeline(None, None, settings)
    assert pipeline.check_model(None, "de") == BASE and pipeline.check_model(None, "en") == "tiny.en"
    assert pipeline.check_model("whisper-1", "en") == "tiny.en", "a model named is kept"
    with pytest.raises(InvalidRequest, match="model 'tiny.en' cannot transcribe language 'de'") as refused:
        pipeline.check_model("whisper-1", "de")
    assert refused.value.param == "language"
    with pytest.raises(InvalidRequest, match="'xx'"):
        pipeline.check_model(None, "xx")
    assert TranscriptPipeline(None, None, TranscriberSettings()).check_model(None, "en") == "tiny.en"
