"""The Realtime transcription session without Ray: events, audio at 24 kHz, server VAD turns, deltas, failures.

Speech is made at test time (flite and festival voices, texts of our own) and decoded by the real
faster-whisper engine in this process; only the tests of the session's bookkeeping (deltas, failures)
give it a scripted decoder.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Awaitable, Iterator
from typing import Any

import numpy as np
import pytest

from benchmarks.support.speech import missing_tools, realtime_pcm, speak, word_error_rate
from deployments.audio import LivePcm
from deployments.errors import Overloaded
from deployments.schemas import TranscribeOptions, Transcription
from deployments.settings import TranscriberSettings
from deployments.transcriber import WhisperEngine
from deployments.turns import TurnDetector
from serve_app.realtime_protocol import ProtocolError, SessionConfig, parse_event
from serve_app.realtime_session import SessionLimits, Slots, TranscriptionSession, agreed

TURNS = [
    ("flite:slt", "The museum opens at nine in the morning and closes early on Sundays."),
    ("flite:awb", "Please bring a warm coat because the hall is cold in winter."),
]
SILENCE_S = 1.5
WER_BOUND = 0.35
"""tiny.en on these voices: 'the hall is cold' comes out as 'the hull is cooled' in file transcription too."""
CHUNK_BYTES = 4800
"""100 ms of 24-kHz PCM16, as a browser or the official client's examples send it."""


@pytest.fixture(scope="module")
def turns_pcm() -> bytes:
    """The TURNS read one after the other, each followed by SILENCE_S of silence, as 24-kHz PCM16."""
    if missing := missing_tools():
        pytest.fail(f"{missing} missing: run `make test`, which installs them")
    silence = b"\0\0" * int(24000 * SILENCE_S)
    return b"".join(silence + realtime_pcm(speak(text, voice)) for voice, text in TURNS) + silence


@pytest.fixture(scope="module")
def engine() -> WhisperEngine:
    return WhisperEngine(TranscriberSettings())


def chunks(pcm: bytes, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    for start in range(0, len(pcm), size):
        yield pcm[start:start + size]


def append(pcm: bytes) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})


class Recorder:
    """The session's outgoing events, in order."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    def kinds(self) -> list[str]:
        return [e["type"] for e in self.events]


def decoder(engine: WhisperEngine):
    async def transcribe(samples: np.ndarray, options: TranscribeOptions, committed: bool) -> Transcription:
        return (await asyncio.to_thread(engine.transcribe_batch, [samples], [options]))[0]
    return transcribe


async def stream(session: TranscriptionSession, pcm: bytes, *after: str) -> None:
    await session.start()
    for piece in chunks(pcm):
        await session.receive(append(piece))
    for message in after:
        await session.receive(message)
    await session.close()


def test_24_khz_pcm_becomes_16_khz_the_same_in_any_chunks() -> None:
    seconds = np.arange(48000) / 24000
    pcm = (np.sin(2 * np.pi * 1000 * seconds) * 12000).astype("<i2").tobytes()
    whole = LivePcm()(pcm)
    live, cuts = LivePcm(), [0, 2, 202, 4800, 4806, 60000, len(pcm)]
    pieces = np.concatenate([live(pcm[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)])
    assert abs(whole.size - 32000) < 32 and np.array_equal(whole, pieces)
    expected = np.sin(2 * np.pi * 1000 * np.arange(whole.size) / 16000) * 12000 / 32768
    assert np.abs(whole - expected)[32:].max() < 1e-3, "past the filter's reach into the silence before the stream"
    above_nyquist = (np.sin(2 * np.pi * 10000 * seconds) * 12000).astype("<i2").tobytes()
    assert np.abs(LivePcm()(above_nyquist)[32:]).max() < 1e-3, "a 10 kHz tone must not fold into the 16 kHz audio"


def test_the_current_and_the_beta_session_update_mean_the_same() -> None:
    current = parse_event(json.dumps({"type": "session.update", "session": {
        "type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 24000}, "noise_reduction": {"type": "near_field"},
            "transcription": {"model": "whisper-1", "language": "en", "prompt": "geology"},
            "turn_detection": None}}}}))
    beta = parse_event(json.dumps({"type": "transcription_session.update", "session": {
        "input_audio_format": "pcm16", "include": ["item.input_audio_transcription.logprobs"],
        "input_audio_transcription": {"model": "whisper-1", "language": "en", "prompt": "geology"},
        "turn_detection": None}}))
    assert isinstance(current, type(current)) and not isinstance(beta, type(current))
    config = SessionConfig()
    assert config.updated(current) == config.updated(beta)
    assert config.updated(current) == SessionConfig(model="whisper-1", language="en", prompt="geology",
                                                    turn_detection=None)
    only_language = parse_event('{"type": "session.update", "session": {"type": "transcription", '
                                '"audio": {"input": {"transcription": {"language": "fr"}}}}}')
    kept = config.updated(current).updated(only_language)
    assert kept.turn_detection is None and kept.prompt == "geology" and kept.language == "fr"


@pytest.mark.parametrize(("message", "code", "param"), [
    ("{not json", "invalid_json", None),
    ('{"type": "response.create"}', "invalid_event", None),
    ('{"type": "input_audio_buffer.append"}', "invalid_event", "input_audio_buffer.append.audio"),
    ('{"type": "session.update", "session": {"type": "transcription", "audio": {"input": {"turn_detection": '
     '{"type": "server_vad", "threshold": 7}}}}}', "invalid_event",
     "session.update.session.audio.input.turn_detection.threshold"),
    ('{"type": "session.update", "session": {"type": "transcription", "audio": {"input": {"format": '
     '{"type": "audio/pcm", "rate": 8000}}}}}', "invalid_event", "session.update.session.audio.input.format.rate"),
])
def test_a_malformed_event_is_refused_saying_where(message: str, code: str, param: str | None) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_event(message)
    assert refused.value.code == code
    if param is not None:
        assert refused.value.param == param


def test_silero_finds_each_turn_where_it_is(turns_pcm: bytes) -> None:
    detector, samples = TurnDetector(threshold=0.5, silence_ms=500), LivePcm()
    found = [b for piece in chunks(turns_pcm) for b in detector.feed(samples(piece))]
    assert [b.kind for b in found] == ["started", "stopped", "started", "stopped"], found
    first_start = found[0].sample / 16000
    assert SILENCE_S - 0.3 < first_start < SILENCE_S + 0.3, first_start


def test_server_vad_turns_are_transcribed(turns_pcm: bytes, engine: WhisperEngine) -> None:
    sent = Recorder()
    session = TranscriptionSession(decoder(engine), sent, SessionLimits(), SessionConfig())
    asyncio.run(stream(session, turns_pcm))
    kinds = [k for k in sent.kinds() if not k.endswith(".delta")]
    assert kinds[:4] == ["session.created", "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                         "input_audio_buffer.committed"], kinds
    completed = sent.of("conversation.item.input_audio_transcription.completed")
    committed = [e["item_id"] for e in sent.of("input_audio_buffer.committed")]
    assert [e["item_id"] for e in completed] == committed and len(committed) == len(TURNS)
    for (_, text), event in zip(TURNS, completed, strict=True):
        assert word_error_rate([text], [event["transcript"]]) < WER_BOUND, event["transcript"]
        assert event["usage"]["type"] == "duration" and 2 < event["usage"]["seconds"] < 10
    stops = [e["audio_end_ms"] for e in sent.of("input_audio_buffer.speech_stopped")]
    starts = [e["audio_start_ms"] for e in sent.of("input_audio_buffer.speech_started")]
    assert starts[0] < stops[0] < starts[1] < stops[1]
    assert [s.start for s in session.segments] == sorted(s.start for s in session.segments)


def test_a_turn_is_decoded_at_its_pause_and_that_decoding_is_its_transcript(
        turns_pcm: bytes, engine: WhisperEngine) -> None:
    """With server VAD the committed decoding starts once a pause has lasted TAIL_MS, before ``speech_stopped``
    (500 ms into it): no decoding of the turn starts after its stop, and its transcript is that decoding's."""
    timeline: list[tuple[str, Any]] = []
    transcribe = decoder(engine)

    def recorded(samples: np.ndarray, options: TranscribeOptions, committed: bool) -> Awaitable[Transcription]:
        timeline.append(("decode", (committed, samples.size)))  # when asked for, not when its task first runs
        return transcribe(samples, options, committed)

    async def send(event: dict[str, Any]) -> None:
        timeline.append((event["type"], event))

    session = TranscriptionSession(recorded, send, SessionLimits(delta_interval_s=60), SessionConfig())
    asyncio.run(stream(session, turns_pcm))
    kinds = [kind for kind, _ in timeline]
    stops = [i for i, kind in enumerate(kinds) if kind == "input_audio_buffer.speech_stopped"]
    done = [i for i, kind in enumerate(kinds) if kind.endswith(".completed")]
    assert len(stops) == len(done) == len(TURNS), kinds
    for stop, completed in zip(stops, done, strict=True):
        following = [i for i, kind in enumerate(kinds) if kind == "input_audio_buffer.speech_started" and i > stop]
        assert "decode" not in kinds[stop:min([completed, *following])], kinds
        seconds = timeline[completed][1]["usage"]["seconds"]
        at_pause = [detail for kind, detail in timeline[:stop] if kind == "decode" and detail[0]]
        assert at_pause and abs(at_pause[-1][1] / 16000 - seconds) < 1e-3, (at_pause, seconds)
    transcripts = [timeline[i][1]["transcript"] for i in done]
    assert word_error_rate([text for _, text in TURNS], transcripts) < WER_BOUND, transcripts


def test_the_client_commits_without_turn_detection(turns_pcm: bytes, engine: WhisperEngine) -> None:
    sent = Recorder()
    session = TranscriptionSession(decoder(engine), sent, SessionLimits(), SessionConfig(turn_detection=None))
    first_turn = turns_pcm[:len(turns_pcm) // 2]
    asyncio.run(stream(session, first_turn, '{"type": "input_audio_buffer.commit", "event_id": "c1"}',
                       '{"type": "input_audio_buffer.commit", "event_id": "c2"}'))
    assert not sent.of("input_audio_buffer.speech_started")
    (completed,) = sent.of("conversation.item.input_audio_transcription.completed")
    assert word_error_rate([TURNS[0][1]], [completed["transcript"]]) < WER_BOUND, completed["transcript"]
    (error,) = sent.of("error")
    assert error["error"]["code"] == "input_audio_buffer_commit_empty" and error["error"]["event_id"] == "c2"


def test_hostile_messages_get_an_error_and_the_session_goes_on(turns_pcm: bytes, engine: WhisperEngine) -> None:
    sent = Recorder()
    limits = SessionLimits(max_append_bytes=CHUNK_BYTES)
    session = TranscriptionSession(decoder(engine), sent, limits, SessionConfig(turn_detection=None))

    async def scenario() -> None:
        await session.start()
        await session.receive('{"type": "input_audio_buffer.append", "audio": "not base64!", "event_id": "b"}')
        await session.receive(append(b"\0" * (CHUNK_BYTES * 2)))
        await session.receive(append(b"\0\0\0"))
        await session.receive(b"\x00\x01")
        await session.receive("[1, 2]")
        await stream(session, turns_pcm[:len(turns_pcm) // 2], '{"type": "input_audio_buffer.commit"}')

    asyncio.run(scenario())
    codes = [e["error"]["code"] for e in sent.of("error")]
    assert codes == ["invalid_audio", "audio_too_large", "invalid_audio", "invalid_event", "invalid_event"]
    assert sent.of("error")[0]["error"]["event_id"] == "b"
    (completed,) = sent.of("conversation.item.input_audio_transcription.completed")
    assert word_error_rate([TURNS[0][1]], [completed["transcript"]]) < WER_BOUND


class Scripted:
    """A decoder that answers each call with the next text, or fails on ``None``."""

    def __init__(self, texts: list[str | None]) -> None:
        self.texts = iter(texts)

    async def __call__(self, samples: np.ndarray, options: TranscribeOptions, committed: bool) -> Transcription:
        text = next(self.texts)
        if text is None:
            raise Overloaded("the Transcriber replica was lost")
        return Transcription(model="tiny.en", language="en", duration=samples.size / 16000, text=text, segments=[])


class Lengths(Scripted):
    """A scripted decoder that notes the length of each committed turn it is sent."""

    def __init__(self, texts: list[str | None]) -> None:
        super().__init__(texts)
        self.committed: list[int] = []

    async def __call__(self, samples: np.ndarray, options: TranscribeOptions, committed: bool) -> Transcription:
        if committed:
            self.committed.append(samples.size)
        return await super().__call__(samples, options, committed)


@pytest.mark.parametrize("piece_s", [0.1, 1.5], ids=["100-ms appends", "1.5-s appends"])
def test_a_turn_that_runs_past_the_limit_is_cut_there_and_its_rest_starts_the_next(piece_s: float) -> None:
    """Whisper hears at most 30 s (here a 2-s limit): the committed turn is exactly that long, nothing is lost."""
    sent = Recorder()
    lengths = Lengths([f"turn {n}" for n in range(4)])
    session = TranscriptionSession(lengths, sent, SessionLimits(max_turn_s=2, delta_interval_s=60),
                                   SessionConfig(turn_detection=None))
    pcm = b"\1\0" * int(24000 * 4.5)

    async def scenario() -> None:
        await session.start()
        for piece in chunks(pcm, int(48000 * piece_s)):
            await session.receive(append(piece))
        await session.receive('{"type": "input_audio_buffer.commit"}')
        await session.close()

    asyncio.run(scenario())
    assert lengths.committed[:2] == [2 * 16000] * 2, lengths.committed
    assert sum(lengths.committed) == session.heard, "every sample heard is in a committed turn"
    assert len(sent.of("conversation.item.input_audio_transcription.completed")) == len(lengths.committed) == 3


def test_deltas_send_what_two_decodings_agree_on_and_never_take_it_back() -> None:
    assert agreed(["the", "cat", "sat"], ["The", "cat,", "sat", "on"]) == 3
    sent = Recorder()
    scripted = Scripted(["the cat", "the cat sat", "the cat sat in", "the cat sat on the mat"])
    limits = SessionLimits(delta_interval_s=0.1)
    session = TranscriptionSession(scripted, sent, limits, SessionConfig(turn_detection=None))

    async def scenario() -> None:
        for _ in range(5):  # the first 100 ms fall short of it by the resampler's look-ahead: four partials
            await session.receive(append(b"\1\0" * 2400))
            while session._decoding():
                await asyncio.sleep(0)  # the partial decoding runs (turns of the event loop, not time)
        await session.receive('{"type": "input_audio_buffer.commit"}')
        await session.close()

    asyncio.run(scenario())
    deltas = [e["delta"] for e in sent.of("conversation.item.input_audio_transcription.delta")]
    assert deltas == ["the cat", " sat"], "words are sent once two decodings agree on them, never retracted"
    (completed,) = sent.of("conversation.item.input_audio_transcription.completed")
    assert completed["transcript"] == "the cat sat on the mat", "the last partial covered the turn: no new decoding"


class Routing:
    """A decoder that routes as the Transcriber does: the routed name is decoded by base, heard as German."""

    def __init__(self) -> None:
        self.asked: list[tuple[str | None, bool]] = []

    async def __call__(self, samples: np.ndarray, options: TranscribeOptions, committed: bool) -> Transcription:
        self.asked.append((options.model, committed))
        model = "Systran/faster-whisper-base" if options.model == "auto" else options.model
        return Transcription(model=model or "tiny.en", language="de", duration=samples.size / 16000,
                             text="das Wasser fällt", segments=[])


def test_a_session_naming_no_model_keeps_the_model_its_first_turn_was_routed_to() -> None:
    """No deltas before the first turn (each would pay a detection); that turn picks the model, a
    ``session.updated`` names it, and the later turns and their deltas go to it directly."""
    sent, routing = Recorder(), Routing()
    session = TranscriptionSession(routing, sent, SessionLimits(delta_interval_s=0.1),
                                   SessionConfig(turn_detection=None), check_model=lambda model, _: model or "auto",
                                   routed="auto")

    async def turn() -> None:
        for _ in range(5):
            await session.receive(append(b"\1\0" * 2400))
            while session._decoding():
                await asyncio.sleep(0)  # a partial decoding runs (turns of the event loop, not time)
        await session.receive('{"type": "input_audio_buffer.commit"}')
        while session._finals:
            await asyncio.sleep(0)

    async def scenario() -> None:
        await session.start()
        await turn()
        await session.receive('{"type": "session.update", "session": {"type": "transcription", "audio": {"input": '
                              '{"turn_detection": null}}}}')  # changes no model or language: the choice stays
        await turn()
        await session.close()

    asyncio.run(scenario())
    first_commit = routing.asked.index(("auto", True))
    assert first_commit == 0, f"no partial was decoded before the first turn: {routing.asked}"
    assert all(model == "Systran/faster-whisper-base" for model, _ in routing.asked[1:]), routing.asked
    assert any(not committed for _, committed in routing.asked[1:]), "the second turn has its deltas"
    (created,) = sent.of("session.created")
    assert created["session"]["audio"]["input"]["transcription"]["model"] == "auto"
    models = [e["session"]["audio"]["input"]["transcription"]["model"] for e in sent.of("session.updated")]
    assert models == ["Systran/faster-whisper-base"] * 2, "named when chosen, and kept by a later update"
    assert session.language == "de", "the language the turns were heard in"


def test_a_failed_turn_is_reported_and_the_next_one_completes() -> None:
    sent = Recorder()
    session = TranscriptionSession(Scripted([None, "second turn"]), sent, SessionLimits(delta_interval_s=60),
                                   SessionConfig(turn_detection=None))

    async def scenario() -> None:
        for _ in range(2):
            await session.receive(append(b"\1\0" * 4800))
            await session.receive('{"type": "input_audio_buffer.commit"}')
        await session.close()

    asyncio.run(scenario())
    (failed,) = sent.of("conversation.item.input_audio_transcription.failed")
    assert failed["error"]["code"] == "overloaded" and "lost" in failed["error"]["message"]
    (completed,) = sent.of("conversation.item.input_audio_transcription.completed")
    assert completed["transcript"] == "second turn" and completed["item_id"] != failed["item_id"]


def test_deltas_wait_while_the_replica_s_partials_or_the_session_s_own_turn_are_decoding(
        turns_pcm: bytes, engine: WhisperEngine) -> None:
    """Two sessions share one partial slot: while one's turn in progress is decoding, the other's waits, and a
    session whose committed turn is still decoding starts no partial; so under load turns keep the decoders."""
    partials, release = Slots(1), asyncio.Event()

    def gated(transcribe: Any) -> Any:
        async def wait_then(samples: np.ndarray, options: TranscribeOptions, committed: bool) -> Transcription:
            await release.wait()
            return await transcribe(samples, options, committed)
        return wait_then

    speech = [piece for piece in chunks(turns_pcm) if any(piece)][:20]  # 2 s of the first turn's speech

    async def scenario() -> None:
        first, second = (TranscriptionSession(gated(decoder(engine)), Recorder(), SessionLimits(),
                                              SessionConfig(turn_detection=None), partials=partials)
                         for _ in range(2))
        for session in (first, second):
            await session.start()
        for piece in speech:
            await first.receive(append(piece))
            await second.receive(append(piece))
        dropped = first._partial
        assert dropped is not None and second._partial is None and partials.open == 1
        await first.receive('{"type": "input_audio_buffer.commit"}')
        with contextlib.suppress(asyncio.CancelledError):
            await dropped.result  # the commit cancelled it: its slot is free once it has ended
        assert first._partial is None and partials.open == 0 and first._finals
        for piece in speech:
            await first.receive(append(piece))
        assert first._partial is None, "no delta decoding while the session's committed turn is decoding"
        await second.receive(append(speech[0]))
        assert second._partial is not None and partials.open == 1
        release.set()
        await second.close()
        await first.close()
        assert partials.open == 0

    asyncio.run(scenario())
