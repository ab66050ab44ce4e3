"""The browser page, driven in headless Chromium against the real app with API keys on.

Debian's ``chromium`` (the Makefile's SYSTEM_TOOLS) is driven by Playwright through its executable path;
Playwright's own browser download is not used. Screenshots of each view go to the folder named by
``TRANSCRIBE_SERVE_SCREENSHOTS`` (``docs/web`` regenerates the README's), else to a temporary folder.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import wave
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, Route, expect, sync_playwright

from benchmarks.support.fake_youtube import FakeVideo, FakeYouTube
from benchmarks.support.speech import LANGUAGES, speak, word_error_rate
from tests.conftest import API_KEY, BOT_CHECK_ID, CAPTIONED_ID, KEYED_HEADERS, Service, until

pytestmark = pytest.mark.serve

LIVE_TURNS = [("flite:slt", "The museum opens at nine in the morning and closes early on Sundays."),
              ("flite:awb", "Please bring a warm coat because the hall is cold in winter.")]
JOB_TIMEOUT_S = 240
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


def launch(playwright: Playwright, *args: str) -> Browser:
    """Headless Debian Chromium; as root in a container it needs ``--no-sandbox``."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is missing: run `make test`, which installs it (apt-get install chromium)")
    sandbox = ["--no-sandbox"] if os.geteuid() == 0 else []
    return playwright.chromium.launch(executable_path=executable, headless=True, args=[*sandbox, *args])


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = launch(playwright)
    yield browser
    browser.close()


def logged_errors(tab: Page) -> list[str]:
    """The console errors and page errors ``tab`` will log, as they come."""
    errors: list[str] = []
    tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    tab.on("pageerror", lambda error: errors.append(str(error)))
    return errors


@pytest.fixture()
def page(browser: Browser, keyed_service: Service) -> Iterator[Page]:
    """A fresh tab (its own session storage) on the page; no console error or page error may happen in it."""
    context = browser.new_context(base_url=keyed_service.url, viewport={"width": 1100, "height": 800},
                                  accept_downloads=True)
    tab = context.new_page()
    errors = logged_errors(tab)
    yield tab
    context.close()
    assert errors == [], f"the page logged errors: {errors}"


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("TRANSCRIBE_SERVE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def authorised(service: Service) -> httpx.Client:
    return httpx.Client(base_url=service.url, headers=KEYED_HEADERS, timeout=60)


@pytest.fixture(scope="module")
def stored(keyed_service: Service, media_server: str) -> dict[str, str]:
    """The lecture and cooking clips in the store (a job; already stored ones are skipped): name → transcript id."""
    urls = {name: f"{media_server}/{name}.wav" for name in ("lecture", "cooking")}
    with authorised(keyed_service) as client:
        job = client.post("/v1/jobs", json={"urls": list(urls.values()), "source": "asr"}).json()["job_id"]
        until(lambda: client.get(f"/v1/jobs/{job}").json()["status"] == "finished", JOB_TIMEOUT_S, "the job")
        rows = client.get("/v1/transcripts", params={"limit": 500}).json()["data"]
    keys = {row["url"]: row["key"] for row in rows}
    return {name: keys[url] for name, url in urls.items()}


def reader(transcript_id: str) -> str:
    """The page's link to a stored transcript (the id encoded as encodeURIComponent does)."""
    return f"#/read/{quote(transcript_id, safe='')}"


def sign_in(page: Page) -> None:
    """Open the page, which asks for the key first, and give it."""
    page.goto("/")
    key = page.get_by_role("textbox", name="API key")
    expect(key).to_be_visible()
    key.fill(API_KEY)
    key.press("Enter")
    expect(page.locator("#add-view")).to_be_visible()


def drop_file(page: Page, path: Path) -> None:
    """Drop ``path`` on the page's drop zone, as a file dragged from the desktop arrives."""
    transfer = page.evaluate_handle("""([name, data]) => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([Uint8Array.from(atob(data), c => c.charCodeAt(0))], name, {type: "audio/wav"}));
        return transfer;
    }""", [path.name, base64.b64encode(path.read_bytes()).decode()])
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    assert page.evaluate("() => [...document.getElementById('files').files].map(f => f.name)") == [path.name]


def audio_time(page: Page) -> float:
    return page.eval_on_selector("#player audio", "audio => audio.currentTime")


def test_page_and_its_files_are_open_while_the_api_needs_the_key(keyed_service: Service) -> None:
    with httpx.Client(base_url=keyed_service.url, timeout=30) as anonymous:
        page = anonymous.get("/")
        assert page.status_code == 200 and "<title>transcribe-serve</title>" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for path in ("/static/app.js", "/static/style.css"):
            assert anonymous.get(path).status_code == 200, path
        assert anonymous.get("/healthz").json()["api_key_required"] is True
        for path in ("/v1/transcripts", "/v1/search?q=rain", "/docs", "/static-not/app.js"):
            assert anonymous.get(path).status_code == 401, path
    with authorised(keyed_service) as client:
        assert client.get("/v1/transcripts").status_code == 200


def test_two_sources_finish_and_a_broken_one_fails_with_its_reason(page: Page, media_server: str,
                                                                    speech: dict[str, Path], screenshots: Path) -> None:
    sign_in(page)
    assert page.locator("#diarize-row").is_visible(), "local.yaml runs a Diarizer, so the page offers diarization"
    drop_file(page, speech["history"])
    page.get_by_label("Links").fill(f"{media_server}/lecture.wav\n{media_server}/not-audio.wav")
    page.get_by_label("speech recognition only").check()
    page.get_by_role("button", name="Add").click()
    items = page.locator("#items li")
    expect(items).to_have_count(3)
    for index, status in enumerate(["done", "done", "failed"]):  # the file first, then the job's two links
        expect(items.nth(index)).to_have_attribute("data-status", status, timeout=JOB_TIMEOUT_S * 1000)
    expect(items.nth(2).locator(".reason")).to_contain_text("not audio or video that can be decoded")
    expect(items.nth(1).get_by_role("link", name=re.compile("^Read"))).to_be_visible()
    page.screenshot(path=screenshots / "add.png", full_page=True)
    items.nth(0).get_by_role("link", name=re.compile("^Read.*not stored")).click()
    expect(page.locator("#read-title")).to_have_text("history.wav")
    expect(page.locator("#segments")).to_contain_text(re.compile("library", re.IGNORECASE))
    expect(page.get_by_role("button", name="srt", exact=True)).to_be_hidden()


def test_library_reader_timestamps_and_downloads(page: Page, stored: dict[str, str], screenshots: Path) -> None:
    sign_in(page)
    page.get_by_role("link", name="Library").click()
    rows = page.locator("#library tbody tr")
    expect(rows.first).to_be_visible()
    expect(page.locator("#library")).to_contain_text("speech recognition (tiny.en)")
    page.screenshot(path=screenshots / "library.png", full_page=True)
    page.goto("/#/library?offset=1")  # a later page: the pager goes back to the newest
    expect(page.locator("#library caption")).to_have_text(re.compile(r"newest first: 2\u2013\d+ of \d+$"))
    page.get_by_role("button", name="Newer").click()
    expect(page.locator("#library caption")).to_have_text(re.compile(r"newest first: 1\u2013\d+ of \d+$"))
    expect(page.get_by_role("button", name="Newer")).to_be_disabled()
    page.locator(f'#library a[href="{reader(stored["lecture"])}"]').click()
    segments = page.locator("#segments li")
    expect(segments.nth(1)).to_be_visible()
    start = float(segments.nth(1).get_attribute("data-start"))
    assert start > 0
    segments.nth(1).get_by_role("button").click()
    until(lambda: start - 0.05 <= audio_time(page) < start + 3, 20,
          lambda: f"the audio at {start} s, not {audio_time(page)} s")
    page.screenshot(path=screenshots / "read.png", full_page=True)
    for button, marker in (("srt", " --> "), ("vtt", "WEBVTT"), ("txt", "water"), ("JSON", '"segments"')):
        with page.expect_download() as download:
            page.get_by_role("button", name=button, exact=True).click()
        assert marker in Path(download.value.path()).read_text(), button


def test_search_lands_on_the_passage(page: Page, stored: dict[str, str], screenshots: Path) -> None:
    sign_in(page)
    page.get_by_role("link", name="Search").click()
    box = page.get_by_label("Search the transcripts")
    box.fill("the sun warms the sea")
    box.press("Enter")
    first = page.locator("#results li").first
    expect(first.locator("mark").first).to_be_visible()
    passage = first.locator("p").inner_text()
    link = first.get_by_role("link")
    expect(link).to_have_attribute("href", re.compile(re.escape(reader(stored["lecture"])) + r"\?t="))
    at = float(link.get_attribute("href").split("?t=")[1])
    assert at > 0, "the passage about the sun is not the lecture's first sentence"
    page.screenshot(path=screenshots / "search.png", full_page=True)
    link.click()
    current = page.locator("#segments li.current")
    expect(current).to_have_count(1)
    assert float(current.get_attribute("data-start")) == pytest.approx(at)
    assert current.locator(".text").inner_text() in passage
    expect(current.get_by_role("button")).to_be_focused()
    until(lambda: abs(audio_time(page) - at) < 0.5, 20, lambda: f"the audio cued at {at} s, not {audio_time(page)}")


def test_youtube_sources_play_in_an_embed_and_a_bot_check_names_the_cookies(page: Page,
                                                                             keyed_service: Service) -> None:
    """The embed is made only on a click, at that second; the test answers for YouTube inside the browser."""
    embeds: list[str] = []
    page.route("https://www.youtube-nocookie.com/**",
               lambda route: (embeds.append(route.request.url), route.fulfill(body="<html></html>")))
    with authorised(keyed_service) as client:
        key = client.post("/v1/transcripts", json={"url": f"https://www.youtube.com/watch?v={CAPTIONED_ID}"},
                          timeout=120).json()["transcript_id"]
    sign_in(page)
    page.get_by_label("Links").fill(f"https://www.youtube.com/watch?v={BOT_CHECK_ID}")
    page.get_by_role("button", name="Add").click()
    blocked = page.locator("#items li").first
    expect(blocked).to_have_attribute("data-status", "failed", timeout=JOB_TIMEOUT_S * 1000)
    expect(blocked.locator(".reason")).to_contain_text("cookies file")
    page.goto(f"/{reader(key)}")
    expect(page.locator("#read-meta")).to_contain_text("captions")
    assert embeds == [] and page.locator("#player iframe").count() == 0, "nothing from YouTube before a click"
    page.get_by_role("button", name="Play from 0:03").click()
    expect(page.locator("#player iframe")).to_have_attribute("src", re.compile(f"/embed/{CAPTIONED_ID}\\?start=3&"))
    until(lambda: embeds, 10, "the embed's request")


def italian_clip(folder: Path, name: str) -> Path:
    """The Italian water-cycle text read by festival's Italian voice, as ``folder/name``."""
    voice, text = LANGUAGES["it"]
    audio = folder / name
    audio.write_bytes(speak(text, voice))
    return audio


def add_in_english_and_read(page: Page, read_link: str) -> None:
    """Add with "Also in English", then in the reader: the Italian original, its English version, and back."""
    page.get_by_label("Also in English").check()
    page.get_by_role("button", name="Add").click()
    item = page.locator("#items li").first
    expect(item).to_have_attribute("data-status", "done", timeout=JOB_TIMEOUT_S * 1000)
    item.get_by_role("link", name=re.compile(read_link)).click()
    expect(page.locator("#read-meta")).to_contain_text(re.compile("\u00b7 it \u00b7"))
    expect(page.locator("#segments")).to_contain_text("acqua")
    page.get_by_role("link", name="Read in English").click()
    expect(page.locator("#read-meta")).to_contain_text(re.compile("\u00b7 en \u00b7"))
    expect(page.locator("#segments")).to_contain_text(re.compile("water", re.IGNORECASE))
    page.get_by_role("link", name="Read the original").click()
    expect(page.locator("#segments")).to_contain_text("acqua")


def test_a_link_in_another_language_is_kept_with_its_english_version_and_the_reader_switches(
        page: Page, fake_youtube: FakeYouTube, tmp_path: Path) -> None:
    """Italian chosen in Add with "Also in English": the job stores both, and the reader links each to the other."""
    fake_youtube.videos["italianTalk"] = FakeVideo("Il ciclo dell'acqua", audio=italian_clip(tmp_path, "it.wav"))
    sign_in(page)
    page.get_by_label("Links").fill("https://www.youtube.com/watch?v=italianTalk")
    page.get_by_label("Language").select_option("it")
    add_in_english_and_read(page, "^Read")


def test_a_dropped_file_in_another_language_is_read_in_english_too(page: Page, tmp_path: Path) -> None:
    """"Also in English" on a dropped file, language automatic: its transcription and its translation (neither
    stored), each linking to the other in the reader."""
    sign_in(page)
    drop_file(page, italian_clip(tmp_path, "acqua.wav"))
    add_in_english_and_read(page, "^Read.*not stored")
    expect(page.locator("#read-title")).to_have_text("acqua.wav")
    page.get_by_role("link", name="Read in English").click()
    expect(page.locator("#read-title")).to_have_text("acqua.wav (English)")


def test_speakers_are_shown_when_segments_have_them(page: Page, stored: dict[str, str]) -> None:
    """Each diarized segment's ``speaker`` is shown: the stored answer gets speakers here, in the browser, and a second
    turn after its last segment (tiny.en may hear the two-sentence script as one segment)."""
    def with_speakers(route: Route) -> None:
        body = route.fetch().json()
        last = body["segments"][-1]
        body["segments"].append({**last, "start": last["end"], "end": last["end"] + 1.0, "text": "Agreed."})
        for n, segment in enumerate(body["segments"]):
            segment["speaker"] = f"SPEAKER_0{n % 2}"
        route.fulfill(json=body)

    page.route(re.compile(re.escape(quote(stored["cooking"], safe="")) + "$"), with_speakers)
    sign_in(page)
    page.goto(f"/{reader(stored['cooking'])}")
    speakers = page.locator("#segments .speaker")
    expect(speakers.first).to_have_text("SPEAKER_00:")
    expect(speakers.nth(1)).to_have_text("SPEAKER_01:")


def test_phone_width_labels_and_keyboard(page: Page, stored: dict[str, str], screenshots: Path) -> None:
    page.set_viewport_size(PHONE)
    sign_in(page)
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, textarea, select, button')]
        .filter(el => !(el.labels?.length || el.getAttribute('aria-label') || el.textContent.trim()))
        .map(el => el.outerHTML)""")
    assert unlabelled == []
    for view in ("#/add", "#/library", reader(stored["lecture"]), "#/search?q=water", "#/live"):
        page.goto(f"/{view}")
        expect(page.locator("main section:not([hidden]) h2")).to_be_focused()
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{view} scrolls sideways by {overflow} px at phone width"
    page.goto("/#/add")
    for _ in range(6):  # from the view's heading, Shift+Tab walks back to the navigation
        page.keyboard.press("Shift+Tab")
        if page.evaluate("() => document.activeElement.textContent") == "Library":
            break
    expect(page.get_by_role("link", name="Library")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#library-view")).to_be_visible()
    expect(page.locator("#status")).to_have_text("")  # the search answer that came late stayed in its view
    page.screenshot(path=screenshots / "library-phone.png", full_page=True)
    page.goto(f"/{reader(stored['lecture'])}")
    expect(page.locator("#segments li").nth(1)).to_be_visible()
    page.keyboard.press("Tab")
    start = 0.0
    for _ in range(25):  # past the player's controls and the download buttons
        focused = page.evaluate("() => document.activeElement.closest('#segments li')?.dataset.start ?? null")
        if focused is not None and float(focused) > 0:
            start = float(focused)
            break
        page.keyboard.press("Tab")
    assert start > 0, "Tab never reached a timestamp after the first"
    page.keyboard.press("Enter")
    until(lambda: start - 0.05 <= audio_time(page) < start + 3, 20, lambda: f"the audio at {start} s")


def live_speech(path: Path) -> Path:
    """LIVE_TURNS one after the other, 1.5 s of silence before each and 3 s after the last, as a 16-kHz WAV."""
    frames = []
    for voice, text in LIVE_TURNS:
        with wave.open(io.BytesIO(speak(text, voice))) as turn:
            frames += [b"\0\0" * 24000, turn.readframes(turn.getnframes())]
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(16000)
        out.writeframes(b"".join(frames) + b"\0\0" * 48000)
    return path


def test_live_captions_of_the_microphone_are_kept_in_the_library(playwright: Playwright, keyed_service: Service,
                                                                 tmp_path: Path, screenshots: Path) -> None:
    """Chromium's fake microphone plays two spoken turns: a caption line each, then the kept transcript."""
    audio = live_speech(tmp_path / "microphone.wav")
    browser = launch(playwright, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                     f"--use-file-for-fake-audio-capture={audio}%noloop", "--autoplay-policy=no-user-gesture-required")
    context = browser.new_context(base_url=keyed_service.url, viewport={"width": 1100, "height": 800})
    page = context.new_page()
    errors = logged_errors(page)
    try:
        sign_in(page)
        page.get_by_role("link", name="Live").click()
        page.get_by_label("Keep the transcript in the library").check()
        page.get_by_role("button", name="Start").click()
        captions = page.locator("#captions li:not(.pending)")
        expect(captions).to_have_count(len(LIVE_TURNS), timeout=90_000)
        said = captions.all_inner_texts()
        texts = [text for _, text in LIVE_TURNS]
        assert word_error_rate(texts, said) < 0.35, said
        page.screenshot(path=screenshots / "live.png", full_page=True)
        page.get_by_role("button", name="Stop").click()
        kept = page.get_by_role("link", name="read it")
        expect(kept).to_be_visible(timeout=30_000)
        expect(page.get_by_role("button", name="Start")).to_be_enabled()
        expect(page.locator("#live-error")).to_have_text("")
        kept.click()
        segments = page.locator("#segments li .text")
        expect(segments).to_have_count(len(LIVE_TURNS), timeout=30_000)
        assert segments.all_inner_texts() == said
    finally:
        context.close()
        browser.close()
    assert errors == [], f"the page logged errors: {errors}"
