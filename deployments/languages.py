"""The language codes Whisper knows, checked at the edge so that an unknown one is a 400 naming it, never a 500."""

from __future__ import annotations

import functools

from deployments.errors import InvalidRequest


@functools.cache
def whisper_languages() -> tuple[str, ...]:
    """Every code of Whisper's tokenizer (faster-whisper's list, in its order); imported on first use, since
    faster-whisper pulls in CTranslate2, which the Ingress has no other use for."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return tuple(_LANGUAGE_CODES)


def check_language(code: str | None) -> None:
    """Refuse a requested language that is not one of Whisper's codes, naming it (None: detect it, always fine)."""
    if code is not None and code not in whisper_languages():
        raise InvalidRequest(f"unknown language code {code!r}: give an ISO 639-1 code Whisper knows, such as 'en', "
                             "'de' or 'fr', or leave language out to detect it", param="language",
                             code="unsupported_language")
