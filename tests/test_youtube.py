"""YouTube ids and captions, through youtube-transcript-api against the local YouTube double."""

from __future__ import annotations

import pytest

from benchmarks.support.fake_youtube import FakeVideo, FakeYouTube
from deployments.errors import SourceFailed
from deployments.youtube import CaptionsBlocked, NoCaptions, fetch_captions, video_id
from tests.conftest import BOT_CHECK_ID, CAPTIONED_ID, GENERATED_ID, UNCAPTIONED_ID


@pytest.mark.parametrize("source", [
    "dQw4w9WgXcQ",
    "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
    "https://youtube.com/watch?feature=share&v=dQw4w9WgXcQ&t=42s",
    "https://m.youtube.com/watch?v=dQw4w9WgXcQ",
    "https://youtu.be/dQw4w9WgXcQ?si=abc",
    "https://www.youtube.com/shorts/dQw4w9WgXcQ",
    "https://www.youtube.com/embed/dQw4w9WgXcQ",
    "https://www.youtube.com/live/dQw4w9WgXcQ",
])
def test_video_ids_are_found_in_every_url_shape(source: str) -> None:
    assert video_id(source) == "dQw4w9WgXcQ"


@pytest.mark.parametrize("source", [
    "https://example.org/watch?v=dQw4w9WgXcQ", "https://www.youtube.com/watch?v=short",
    "ftp://youtu.be/dQw4w9WgXcQ", "https://www.youtube.com/playlist?list=PL123", "not a url at all",
])
def test_other_sources_are_not_youtube(source: str) -> None:
    assert video_id(source) is None


def test_manual_captions_become_timed_segments(fake_youtube: FakeYouTube) -> None:
    language, segments, translated_from = fetch_captions(CAPTIONED_ID, ["en"], fake_youtube.base_url)
    assert (language, translated_from) == ("en", None)
    assert [(s.start, s.end) for s in segments] == [(0.0, 3.2), (3.2, pytest.approx(6.1))]
    assert segments[1].text == "more than one hundred years ago."


def test_manual_captions_are_preferred_to_generated_ones() -> None:
    with FakeYouTube() as fake:
        fake.videos["bothKinds01"] = FakeVideo("both", captions=[(0, 1, "manual words")],
                                               auto_captions=[(0, 1, "generated words")])
        assert fetch_captions("bothKinds01", ["en"], fake.base_url).segments[0].text == "manual words"


def test_generated_captions_are_used_when_there_are_no_manual_ones(fake_youtube: FakeYouTube) -> None:
    track = fetch_captions(GENERATED_ID, ["en"], fake_youtube.base_url)
    assert track.segments[0].text == "cut the onions and the carrots"


def test_language_preference_is_respected(fake_youtube: FakeYouTube) -> None:
    with pytest.raises(NoCaptions):
        fetch_captions(GENERATED_ID, ["de"], fake_youtube.base_url)
    assert fetch_captions(GENERATED_ID, ["de", "en"], fake_youtube.base_url).language == "en"


GERMAN = [(0.0, 3.0, "Wasser fällt als Regen vom Himmel."), (3.0, 2.5, "Die Sonne wärmt das Meer.")]
TRANSLATED = [(0.0, 3.0, "Water falls from the sky as rain."), (3.0, 2.5, "The sun warms the sea.")]


def test_a_language_asked_for_takes_youtubes_translation_when_no_track_is_in_it() -> None:
    with FakeYouTube() as fake:
        fake.videos["germanOnly1"] = FakeVideo("Wasser", captions=GERMAN, language="de",
                                               translations={"en": TRANSLATED})
        fake.videos["notTransl01"] = FakeVideo("Wasser", captions=GERMAN, language="de")
        fake.videos["bothTracks1"] = FakeVideo("Water", captions=[(0, 1, "the English track")],
                                               translations={"fr": [(0, 1, "la traduction")]})
        with pytest.raises(NoCaptions):  # no language asked for: no translation stands in for the original
            fetch_captions("germanOnly1", ["en"], fake.base_url)
        translated = fetch_captions("germanOnly1", ["en"], fake.base_url, translate_to="en")
        assert (translated.language, translated.translated_from) == ("en", "de"), "marked as YouTube's translation"
        assert [s.text for s in translated.segments] == [line for _, _, line in TRANSLATED]
        assert any("tlang=en" in request for request in fake.requests)
        own = fetch_captions("germanOnly1", ["de", "en"], fake.base_url, translate_to="de")
        assert (own.language, own.translated_from) == ("de", None)
        with pytest.raises(NoCaptions):  # a track YouTube does not translate
            fetch_captions("notTransl01", ["en"], fake.base_url, translate_to="en")
        english = fetch_captions("bothTracks1", ["en"], fake.base_url, translate_to="en")
        assert english.segments[0].text == "the English track", "a track in the language comes before a translation"
        assert english.translated_from is None
        french = fetch_captions("bothTracks1", ["fr", "en"], fake.base_url, translate_to="fr")
        assert french.segments[0].text == "la traduction", "the language asked for comes first"
        assert (french.language, french.translated_from) == ("fr", "en")


def test_failures_are_typed(fake_youtube: FakeYouTube) -> None:
    with pytest.raises(NoCaptions):
        fetch_captions(UNCAPTIONED_ID, ["en"], fake_youtube.base_url)
    with pytest.raises(CaptionsBlocked) as blocked:
        fetch_captions(BOT_CHECK_ID, ["en"], fake_youtube.base_url)
    assert blocked.value.code == "bot_check"
    with pytest.raises(SourceFailed) as missing:
        fetch_captions("neverExists", ["en"], fake_youtube.base_url)
    assert missing.value.code == "video_unavailable"
