"""The downloader's resolver without Ray: captions first, real yt-dlp over loopback, uploads, cleanup.

The resolver's methods are generators (a header, then audio windows and their end), so every call is
consumed, through ``gathered`` or ``list``, and errors are raised while iterating.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from benchmarks.support.fake_youtube import FakeYouTube
from deployments.audio import decode
from deployments.downloader import SourceResolver
from deployments.errors import InvalidRequest, PayloadTooLarge, SourceFailed, UnsupportedAudio
from deployments.schemas import Resolved
from deployments.settings import DownloaderSettings
from tests.conftest import BOT_CHECK_ID, CAPTIONED_ID, UNCAPTIONED_ID, gathered


@pytest.fixture()
def resolver(fake_youtube: FakeYouTube) -> SourceResolver:
    return SourceResolver(DownloaderSettings(youtube_base_url=fake_youtube.base_url, allow_private_networks=True))


@pytest.fixture(autouse=True)
def own_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's downloads go to a temp dir of its own: another test run beside it (a pytest-xdist worker)
    downloads into the system one, which would make ``scratch_dirs`` see folders this test never made."""
    (tmp_path / "temp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))


def scratch_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("transcribe-serve-*")}


def seconds(path: Path) -> float:
    return len(decode(path)) / 16000


def test_captions_come_first_and_no_audio_is_downloaded(resolver: SourceResolver, fake_youtube: FakeYouTube) -> None:
    got = gathered(resolver.resolve(f"https://youtu.be/{CAPTIONED_ID}"))
    resolved = got.header
    assert resolved.kind == "captions" and got.windows == [] and got.duration is None
    assert resolved.captions and resolved.duration == pytest.approx(resolved.captions[-1].end)
    assert resolved.key == f"youtube:{CAPTIONED_ID}"
    assert resolved.url == f"https://www.youtube.com/watch?v={CAPTIONED_ID}"
    assert not any(r.startswith("GET /media/") for r in fake_youtube.requests if CAPTIONED_ID in r)


def test_video_without_captions_falls_back_to_yt_dlp_audio(resolver: SourceResolver,
                                                          speech: dict[str, Path]) -> None:
    before = scratch_dirs()
    got = gathered(resolver.resolve(UNCAPTIONED_ID))
    resolved = got.header
    assert resolved.kind == "audio" and resolved.captions is None
    assert got.duration == pytest.approx(seconds(speech["lecture"]), abs=0.05)
    assert resolved.duration == 0 or resolved.duration == pytest.approx(got.duration, abs=1)
    assert got.windows, "the lecture's speech gave no windows"
    assert all(w.samples.dtype.name == "float32" and w.samples.ndim == 1 for w in got.windows)
    assert sum(w.samples.size for w in got.windows) / 16000 > 0.6 * got.duration
    assert resolved.title and "water cycle" in resolved.title.lower()
    assert scratch_dirs() == before


def test_the_download_lives_only_while_its_windows_are_read(resolver: SourceResolver) -> None:
    """The file yt-dlp wrote stays while the stream is open, and goes when it is closed half read."""
    before = scratch_dirs()
    items = resolver.resolve(UNCAPTIONED_ID)
    header = next(items)
    assert isinstance(header, Resolved) and header.kind == "audio"
    assert scratch_dirs() - before, "the download was removed before its audio was decoded"
    items.close()
    assert scratch_dirs() == before


def test_asr_can_be_asked_for_even_with_captions(resolver: SourceResolver) -> None:
    got = gathered(resolver.resolve(CAPTIONED_ID, source="asr"))
    assert got.header.kind == "audio" and got.header.captions is None
    assert got.windows and got.duration


def test_captions_only_requests_fail_without_captions(resolver: SourceResolver) -> None:
    with pytest.raises(SourceFailed) as error:
        list(resolver.resolve(UNCAPTIONED_ID, source="captions"))
    assert error.value.code == "no_captions"


def test_disabled_asr_fallback_is_reported(fake_youtube: FakeYouTube) -> None:
    resolver = SourceResolver(DownloaderSettings(youtube_base_url=fake_youtube.base_url, allow_asr_fallback=False,
                                                 allow_private_networks=True))
    with pytest.raises(SourceFailed, match="allow_asr_fallback"):
        list(resolver.resolve(UNCAPTIONED_ID))


def test_bot_check_says_to_configure_a_cookies_file(resolver: SourceResolver) -> None:
    with pytest.raises(SourceFailed) as error:
        list(resolver.resolve(BOT_CHECK_ID))
    assert error.value.code == "bot_check"
    assert "cookies_file" in error.value.message


def test_plain_media_url_is_fetched_with_yt_dlp(resolver: SourceResolver, media_server: str,
                                                speech: dict[str, Path]) -> None:
    before = scratch_dirs()
    got = gathered(resolver.resolve(f"{media_server}/cooking.wav"))
    resolved = got.header
    assert resolved.kind == "audio" and resolved.key.startswith("url:")
    assert resolved.url == f"{media_server}/cooking.wav"
    assert got.duration == pytest.approx(seconds(speech["cooking"]), abs=0.05)
    assert got.windows
    assert gathered(resolver.resolve(f"{media_server}/cooking.wav")).header.key == resolved.key
    assert scratch_dirs() == before


def test_broken_urls_are_typed_and_leave_no_files(resolver: SourceResolver, media_server: str) -> None:
    before = scratch_dirs()
    with pytest.raises(UnsupportedAudio):
        list(resolver.resolve(f"{media_server}/not-audio.wav"))
    with pytest.raises(SourceFailed) as missing:
        list(resolver.resolve(f"{media_server}/missing.wav"))
    assert missing.value.status == 422
    assert scratch_dirs() == before


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/a.wav", "javascript:alert(1)", "http://"])
def test_non_http_sources_are_refused(resolver: SourceResolver, url: str) -> None:
    with pytest.raises(InvalidRequest):
        list(resolver.resolve(url))


def test_uploads_decode_or_fail_clearly(resolver: SourceResolver, speech: dict[str, Path]) -> None:
    data = speech["cooking"].read_bytes()
    got = gathered(resolver.from_upload(data, "cooking.wav"))
    resolved = got.header
    assert resolved.kind == "audio" and resolved.title == "cooking.wav"
    assert resolved.key == gathered(resolver.from_upload(data)).header.key
    assert resolved.key.startswith("upload:") and resolved.duration == 0.0
    assert got.duration > 3 and got.duration == pytest.approx(seconds(speech["cooking"]))
    assert got.windows
    with pytest.raises(InvalidRequest):
        list(resolver.from_upload(b""))
    with pytest.raises(UnsupportedAudio):
        list(resolver.from_upload(b"RIFF\x00\x00\x00\x00WAVEfmt garbage"))


def test_uploads_without_vad_are_cut_into_fixed_windows_of_all_the_audio(resolver: SourceResolver,
                                                                         speech: dict[str, Path]) -> None:
    data = speech["lecture"].read_bytes()
    got = gathered(resolver.from_upload(data, vad=False))
    assert [w.start for w in got.windows] == [0.0]
    assert got.samples.size == round(got.duration * 16000)
    assert (got.samples == decode(data)).all()
    small = SourceResolver(DownloaderSettings(window_s=4, decode_block_s=4))
    cut = gathered(small.from_upload(data, vad=False))
    assert [w.start for w in cut.windows] == [0.0, 4.0, 8.0]
    assert (cut.samples == got.samples).all()


def limited(fake_youtube: FakeYouTube, **limits: float) -> SourceResolver:
    return SourceResolver(DownloaderSettings(youtube_base_url=fake_youtube.base_url, allow_private_networks=True,
                                             **limits))


def test_download_past_the_byte_limit_stops_early(fake_youtube: FakeYouTube, media_server: str) -> None:
    before = scratch_dirs()
    with pytest.raises(PayloadTooLarge) as error:
        list(limited(fake_youtube, max_download_bytes=500_000).resolve(f"{media_server}/tone-60s.wav"))
    assert error.value.status == 413 and error.value.code == "download_too_large"
    assert scratch_dirs() == before


def test_audio_past_the_duration_limit_is_refused(fake_youtube: FakeYouTube, media_server: str,
                                                 speech: dict[str, Path]) -> None:
    resolver = limited(fake_youtube, max_audio_seconds=30)
    with pytest.raises(PayloadTooLarge, match="60 s long; the limit is 30 s") as by_url:
        list(resolver.resolve(f"{media_server}/tone-60s.wav"))
    assert by_url.value.code == "audio_too_long"
    with pytest.raises(PayloadTooLarge, match="the limit is 5 s"):
        list(limited(fake_youtube, max_audio_seconds=5).from_upload(speech["lecture"].read_bytes()))
    assert 5 < gathered(resolver.from_upload(speech["lecture"].read_bytes())).duration < 30


def test_download_past_the_time_limit_is_refused(fake_youtube: FakeYouTube, media_server: str) -> None:
    with pytest.raises(SourceFailed) as error:
        list(limited(fake_youtube, download_timeout_s=1e-6).resolve(f"{media_server}/tone-60s.wav"))
    assert error.value.code == "download_timeout"


def test_playlists_are_refused_before_anything_downloads(resolver: SourceResolver, media_server: str) -> None:
    with pytest.raises(SourceFailed) as error:
        list(resolver.resolve(f"{media_server}/two-clips.html"))
    assert error.value.code == "playlist_not_allowed"


class Canary:
    """A loopback server that counts every connection it accepts; it must see none when the guard is on."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.hits: list[str] = []
        canary = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                canary.hits.append(self.path)
                self.send_response(404)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture()
def canary() -> Canary:
    server = Canary()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.1", "2130706433", "0x7f000001", "0177.0.0.1",
                                  "[::ffff:127.0.0.1]", "[::1]"])
def test_default_settings_refuse_loopback_in_every_spelling(canary: Canary, host: str) -> None:
    resolver = SourceResolver(DownloaderSettings())
    with pytest.raises(InvalidRequest) as error:
        list(resolver.resolve(f"http://{host}:{canary.port}/lecture.wav"))
    assert error.value.code == "forbidden_address" and "resolves to" in error.value.message
    assert canary.hits == []


def test_youtube_mirror_on_a_private_address_is_refused_too(fake_youtube: FakeYouTube) -> None:
    before = len(fake_youtube.requests)
    with pytest.raises(InvalidRequest) as error:
        list(SourceResolver(DownloaderSettings(youtube_base_url=fake_youtube.base_url)).resolve(UNCAPTIONED_ID))
    assert error.value.code == "forbidden_address"
    assert len(fake_youtube.requests) == before


def test_allowed_hosts_open_one_internal_server(media_server: str) -> None:
    resolver = SourceResolver(DownloaderSettings(allowed_hosts=["127.0.0.1"]))
    assert gathered(resolver.resolve(f"{media_server}/cooking.wav")).header.kind == "audio"
    with pytest.raises(InvalidRequest):
        list(resolver.resolve(media_server.replace("127.0.0.1", "localhost") + "/cooking.wav"))
