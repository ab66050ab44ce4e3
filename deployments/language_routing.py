"""Which model decodes a request: the name it gives, checked against its language, and the routed name resolved.

The routed name (``transcriber.routing.name``, ``auto``) stands for several models: the first of
``routing.models`` that serves the language decodes it, the language being the request's or, when it gives
none, the one ``routing.detector`` hears. These are plain functions of the settings, so the Ingress refuses
a request before any download and the Transcriber routes what reaches it unrouted, by one rule.
"""

from __future__ import annotations

from collections.abc import Callable

from deployments.errors import InvalidRequest, UnknownModel
from deployments.languages import check_language
from deployments.schemas import TranscribeOptions
from deployments.settings import TranscriberSettings

LISTED_LANGUAGES = 12
"""A refusal names a model's languages when it serves at most this many (tiny.en: en), else counts them."""


def served_text(languages: list[str]) -> str:
    """A model's languages as a refusal names them."""
    return str(languages) if len(languages) <= LISTED_LANGUAGES else f"{len(languages)} languages"


def check_request(settings: TranscriberSettings, requested: str | None, language: str | None) -> str:
    """The configured name (or routed name) of a request's model, refused before any work when the model is not
    served (404), the language is not a code Whisper knows, or the model does not serve it (400, naming both)."""
    name = settings.resolve(requested)
    if name is None:
        allowed = sorted({*settings.models, *settings.aliases, *([settings.routing.name] if settings.routing else [])})
        raise UnknownModel(f"model {requested!r} is not served here; choose one of {allowed}", param="model")
    check_language(language)
    served = settings.languages_of(name)
    if language is not None and language not in served:
        raise InvalidRequest(f"model {name!r} cannot transcribe language {language!r}: it is served for "
                             f"{served_text(served)}", param="language", code="unsupported_language")
    return name


def unnamed(settings: TranscriberSettings, requested: str | None) -> str | None:
    """What a source request (a file, a URL, a job) that names no model asks for: routing, when it is configured."""
    return requested if requested is not None or settings.routing is None else settings.routing.name


def unnamed_live(settings: TranscriberSettings, requested: str | None, language: str | None) -> str | None:
    """What a realtime session that names no model asks for: the routed model of the language it gives, which needs
    no detection, else the routed name (the session's first turn is detected, and picks the model of the rest)."""
    if requested is not None or settings.routing is None:
        return requested
    if language is None:
        return settings.routing.name
    return settings.routed(language)  # an unknown code routes nowhere, and check_request refuses it


def resolved(settings: TranscriberSettings, options: TranscribeOptions) -> TranscribeOptions:
    """A source request's ``options`` naming their model by its configured name, checked (``check_request``); the
    routed name with a language becomes that language's model at once, and without one stays, for the language
    heard to decide."""
    name = check_request(settings, unnamed(settings, options.model), options.language)
    if settings.is_routed(name) and options.language is not None:
        name = settings.routed(options.language) or name
    return options.model_copy(update={"model": name})


def routes_per_source(settings: TranscriberSettings) -> bool:
    """Whether a source's first window picks the model of all of it (``routing.detect: source``)."""
    return settings.routing is not None and settings.routing.detect == "source"


def routed(settings: TranscriberSettings, options: TranscribeOptions,
           detect: Callable[[], str]) -> TranscribeOptions:
    """``options`` with the routed name replaced by the model for their language (``detect()`` when they give none);
    other options unchanged. The language stays unset for a model serving many, so each window is still detected."""
    if settings.routing is None or not settings.is_routed(settings.resolve(options.model)):
        return options
    language = options.language or detect()
    model = settings.routed(language)
    if model is None:
        raise InvalidRequest(f"the speech is in {language!r}, which none of the routed models "
                             f"{settings.routing.models} serves", param="language", code="unsupported_language")
    return options.model_copy(update={"model": model})
