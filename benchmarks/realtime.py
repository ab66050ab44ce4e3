"""Live transcription latency and accuracy: the official client streaming held-out speech at real-time pace.

    python -m benchmarks.realtime               # make bench: 1, 4 and 8 sessions, alone and beside 8 file clients
    python -m benchmarks.realtime --quick       # a smoke run: 1 session, alone and loaded, beside short clips
    python -m benchmarks.realtime --url URL     # against an app already running at URL, not one started here

Each session streams its own turns (sentences read by flite and festival voices, a silence after each) in
100-ms appends paced to the clock, with server VAD. Measured per turn: ``speech_stopped`` to ``completed``
(what a caption waits once the speaker pauses) and the speech's start to its first ``delta``. The same
runs with the throughput benchmark's 8 file clients sending its clips meanwhile, so live turns share the
Transcriber's batches with a lecture's windows. Last, each session's audio is sent as a file, and the WER of
the live transcripts is set beside the file path's. Writes ``realtime-<machine>-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import itertools
import json
import os
import platform
import tempfile
import time
import wave
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from benchmarks.support.harness import benchmark_config, benchmark_parser, local_app
from benchmarks.support.load import clients
from benchmarks.support.speech import VOICES, clip_set, missing_tools, realtime_pcm, sentences, speak, word_error_rate
from benchmarks.throughput.report import percentile
from benchmarks.throughput.workload import FULL_CLIPS, FULL_PER_LENGTH, QUICK_CLIPS, QUICK_PER_LENGTH, workload

CHUNK_S = 0.1
PAUSE_S = 1.2
"""Silence after each turn: over the 500-ms server VAD silence, as between a lecturer's sentences."""
TURNS, QUICK_TURNS = 5, 2
FILE_CLIENTS = 8
ITEM = "conversation.item.input_audio_transcription"
TARGET_P95_S, TARGET_WER_POINTS = 1.5, 2.0


@dataclass(frozen=True)
class Script:
    """One session's audio: 24-kHz PCM16 for the socket, the same at 16 kHz as a WAV file, and what is said."""

    pcm: bytes
    wav: bytes
    text: str


@dataclass
class Timings:
    """Per turn, seconds from ``speech_stopped`` to ``completed`` and from speech to the first ``delta``."""

    completed_s: list[float] = field(default_factory=list)
    first_delta_s: list[float] = field(default_factory=list)
    transcripts: list[str] = field(default_factory=list)
    failed: int = 0


def script(voice_sentences: list[tuple[str, str]]) -> Script:
    """Each sentence read by its voice, a pause after each, as one stream."""
    pause16, pause24 = b"\0\0" * int(16000 * PAUSE_S), b"\0\0" * int(24000 * PAUSE_S)
    wavs = [speak(text, voice) for voice, text in voice_sentences]
    pcm16 = b"".join(pause16 + _frames(wav) for wav in wavs) + pause16
    pcm24 = b"".join(pause24 + realtime_pcm(wav) for wav in wavs) + pause24
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(16000)
        out.writeframes(pcm16)
    return Script(pcm24, buffer.getvalue(), " ".join(text for _, text in voice_sentences))


def _frames(wav: bytes) -> bytes:
    with wave.open(io.BytesIO(wav)) as audio:
        return audio.readframes(audio.getnframes())


def scripts(sessions: int, turns: int) -> list[Script]:
    source, voices = sentences(), itertools.cycle(VOICES)
    return [script([(next(voices), next(source)) for _ in range(turns)]) for _ in range(sessions)]


async def live_session(url: str, audio: Script) -> Timings:
    """One session with the official async client; its turns' timings and transcripts."""
    from openai import AsyncOpenAI

    timings, stopped, spoke, prefix_s, ended = Timings(), {}, {}, 0.3, False
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="benchmark", max_retries=0)
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
        await connection.send({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "transcription": {"language": "en"}, "turn_detection": {
                "type": "server_vad", "prefix_padding_ms": int(prefix_s * 1000), "silence_duration_ms": 500}}}}})
        started = time.perf_counter()
        sender = asyncio.create_task(paced(connection, audio.pcm, started))
        async for event in connection:
            now, item = time.perf_counter(), getattr(event, "item_id", None)
            if event.type == "input_audio_buffer.speech_started":
                spoke[item] = started + event.audio_start_ms / 1000 + prefix_s
            elif event.type == "input_audio_buffer.speech_stopped":
                stopped[item] = now
            elif event.type == f"{ITEM}.delta" and item in spoke:
                timings.first_delta_s.append(now - spoke.pop(item))
            elif event.type in (f"{ITEM}.completed", f"{ITEM}.failed"):
                timings.completed_s.append(now - stopped.pop(item))
                if event.type.endswith("failed"):
                    timings.failed += 1
                else:
                    timings.transcripts.append(event.transcript)
            ended = ended or event.type == "input_audio_buffer.cleared"
            if ended and not stopped:
                break
        await sender
    return timings


async def paced(connection: Any, pcm: bytes, started: float) -> None:
    """Appends of CHUNK_S of audio, each sent when that much has been 'spoken' (real-time pace); then a clear,
    whose ``cleared`` tells the reader the stream is over."""
    step = int(24000 * CHUNK_S) * 2
    for index, offset in enumerate(range(0, len(pcm), step)):
        await asyncio.sleep(max(0.0, started + index * CHUNK_S - time.perf_counter()))
        await connection.send({"type": "input_audio_buffer.append",
                               "audio": base64.b64encode(pcm[offset:offset + step]).decode()})
    await connection.send({"type": "input_audio_buffer.clear"})


async def sessions_row(url: str, audio: list[Script], loaded: bool, load_work: list) -> dict[str, Any]:
    """``len(audio)`` sessions at once, alone or beside FILE_CLIENTS file clients."""
    load = asyncio.create_task(clients(url, load_work, FILE_CLIENTS)) if loaded else None
    try:
        if load is not None:
            await busy_transcriber(url)
        results = await asyncio.gather(*(live_session(url, a) for a in audio))
    finally:
        if load is not None:
            load.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await load
    completed = [s for r in results for s in r.completed_s]
    deltas = [s for r in results for s in r.first_delta_s]
    return {"sessions": len(audio), "file_clients": FILE_CLIENTS if loaded else 0, "turns": len(completed),
            "failed": sum(r.failed for r in results),
            "completed_p50_s": percentile(completed, 50), "completed_p95_s": percentile(completed, 95),
            "first_delta_p50_s": percentile(deltas, 50), "first_delta_p95_s": percentile(deltas, 95),
            "wer": round(word_error_rate([a.text for a in audio], [" ".join(r.transcripts) for r in results]), 4)}


async def busy_transcriber(url: str) -> None:
    """Wait until the file clients' windows are at the Transcriber, so the live turns meet a queue."""
    async with httpx.AsyncClient(timeout=60) as http:
        for _ in range(600):
            stats = (await http.get(f"{url}/stats")).json()["Transcriber"]
            if stats["in_flight"] >= 4:
                return
            await asyncio.sleep(0.2)
    raise RuntimeError("the file clients never reached the Transcriber")


def file_wer(url: str, audio: list[Script]) -> float:
    """The same sessions' audio sent as files, one at a time: the file path's WER."""
    texts = [httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("session.wav", a.wav, "audio/wav")},
                        data={"language": "en"}, timeout=600).raise_for_status().json()["text"] for a in audio]
    return round(word_error_rate([a.text for a in audio], texts), 4)


def table(result: dict[str, Any]) -> str:
    lines = [f"# Realtime transcription, {result['machine']}, {result['date']}", "", result["note"], "",
             "| sessions | file clients | turns | failed | completed p50 / p95 s | first delta p50 / p95 s | WER |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['sessions']} | {r['file_clients']} | {r['turns']} | {r['failed']} | {r['completed_p50_s']} / "
              f"{r['completed_p95_s']} | {r['first_delta_p50_s']} / {r['first_delta_p95_s']} | {r['wer']} |"
              for r in result["rows"]]
    lines += ["", f"File path WER on the same audio: {result['file_wer']}; live WER of the widest row alone: "
              f"{result['live_wer']} ({result['wer_points_above_file']:+.1f} points).", ""]
    lines += [f"- {t['target']}: {t['measured']} -> {'met' if t['met'] else 'NOT met'}" for t in result["targets"]]
    return "\n".join(lines) + "\n"


def app_url(stack: contextlib.ExitStack, config: str) -> str:
    """Start ``config`` on a local cluster for this run (stopped when ``stack`` closes); its URL."""
    scratch = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    return stack.enter_context(local_app(benchmark_config(config, scratch), scratch / "serve")).url


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser("benchmarks.realtime", __doc__ or "")
    parser.add_argument("--quick", action="store_true", help="1 session, 2 turns, the file clients on short clips")
    parser.add_argument("--url", help="measure the app running at this URL instead of starting --config's")
    parser.add_argument("--note", default="", help="what else ran on the machine")
    args = parser.parse_args(argv)
    if missing := missing_tools():
        parser.error(f"{missing} missing: run `make install-test`")
    counts, turns = ([1], QUICK_TURNS) if args.quick else ([1, 4, 8], TURNS)
    audio = scripts(max(counts), turns)
    lengths, per_length = (QUICK_CLIPS, QUICK_PER_LENGTH) if args.quick else (FULL_CLIPS, FULL_PER_LENGTH)
    load_work = workload(clip_set(lengths, per_length), 4, FILE_CLIENTS)
    with contextlib.ExitStack() as stack:
        url = args.url or app_url(stack, args.config)
        rows = [asyncio.run(sessions_row(url, audio[:n], loaded, load_work))
                for loaded in (False, True) for n in counts]  # alone first: cancelled file work lingers a while
        by_file = file_wer(url, audio)
    widest = max((r for r in rows if not r["file_clients"]), key=lambda r: r["sessions"])
    four = next((r for r in rows if r["sessions"] == 4 and not r["file_clients"]), widest)
    points = round(100 * (widest["wer"] - by_file), 2)
    result = {"machine": f"{platform.machine()}-{len(os.sched_getaffinity(0))}cpu",
              "date": date.today().isoformat(), "config": None if args.url else args.config, "url": args.url,
              "quick": args.quick, "turns_per_session": turns,
              "note": args.note or "A quiet machine.", "rows": rows, "file_wer": by_file, "live_wer": widest["wer"],
              "wer_points_above_file": points, "targets": [
                  {"target": f"completed p95 under {TARGET_P95_S} s with {four['sessions']} sessions",
                   "measured": four["completed_p95_s"], "met": (four["completed_p95_s"] or 1e9) < TARGET_P95_S},
                  {"target": f"live WER within {TARGET_WER_POINTS} points of the file path", "measured": points,
                   "met": points <= TARGET_WER_POINTS}]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"realtime-{'quick-' if args.quick else ''}{result['machine']}-{result['date']}"
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(table(result))
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
