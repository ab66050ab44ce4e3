"""Memory one long input adds: a lecture of N minutes through the running app, every process's RSS sampled.

    python -m benchmarks.long_input                      # a 120-minute lecture (about 6 minutes here)
    python -m benchmarks.long_input --minutes 10

The lecture is generated speech (espeak-ng sentences, so its script is exact), served over HTTP from
127.0.0.1 and sent by URL, as a user sends a recorded lecture; the downloader fetches it with yt-dlp,
decodes it a block at a time and streams its windows to the transcriber. Each process's peak RSS during
the request is compared with its RSS before it (the app warmed up on a short clip), so the figures are
what the request added. Ray's raylet holds the object store's shared memory, so it is sampled too.
Writes ``benchmarks/results/long-input-<minutes>min-<machine>-<date>.json`` and prints it.
"""

from __future__ import annotations

import functools
import json
import platform
import tempfile
import threading
import time
from datetime import date
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from benchmarks.support.harness import benchmark_config, benchmark_parser, local_app
from benchmarks.support.processes import MIB, PeakRss, service_processes
from benchmarks.support.speech import VOICES, Clip, clip, lecture, sentences, word_error_rate


def app_processes(head_pid: int) -> dict[str, int]:
    """RSS of every replica, Serve's proxy and the raylet (which maps the object store), by ``name/pid``."""
    import psutil

    found = service_processes(head_pid)
    for proc in psutil.Process(head_pid).children(recursive=True):
        try:
            if proc.name() == "raylet":
                found[f"raylet/{proc.pid}"] = proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *_: object) -> None:
        return


def serve_folder(folder: Path) -> ThreadingHTTPServer:
    """A static HTTP server for ``folder`` on a free 127.0.0.1 port, in a daemon thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def transcribe_url(url: str, media: str) -> tuple[str, float]:
    """The transcript of ``media`` (by URL) and how long the request took."""
    started = time.perf_counter()
    response = httpx.post(f"{url}/v1/audio/transcriptions", data={"url": media, "response_format": "json"},
                          timeout=httpx.Timeout(4 * 3600.0))
    response.raise_for_status()
    return response.json()["text"], time.perf_counter() - started


def added(before: dict[str, int], peaks: dict[str, int]) -> dict[str, dict[str, int]]:
    """Per process: RSS before, peak during, and the difference, in MiB."""
    return {key: {"before_mib": round(before.get(key, 0) / MIB), "peak_mib": round(peak / MIB),
                  "added_mib": round((peak - before.get(key, 0)) / MIB)} for key, peak in sorted(peaks.items())}


def measure(config: dict[str, Any], folder: Path, long: Clip, warm: Clip) -> dict[str, Any]:
    """Serve the clips, run the app, warm it up, then send the lecture while sampling memory."""
    (folder / "media").mkdir(parents=True)
    (folder / "media" / "lecture.wav").write_bytes(long.wav)
    (folder / "media" / "warm.wav").write_bytes(warm.wav)
    server = serve_folder(folder / "media")
    base = f"http://127.0.0.1:{server.server_address[1]}"
    downloader = config["applications"][0]["args"]["downloader"]
    downloader.update(allow_private_networks=True)  # the media server is on loopback
    try:
        with local_app(config, folder / "app") as app:
            transcribe_url(app.url, f"{base}/warm.wav")
            read = functools.partial(app_processes, app.head_pid)
            before = read()
            with PeakRss(read, interval_s=0.5) as peak:
                text, latency = transcribe_url(app.url, f"{base}/lecture.wav")
    finally:
        server.shutdown()
        server.server_close()
    return {"latency_s": round(latency, 1), "audio_hours_per_hour": round(long.seconds / latency, 2),
            "wer": round(word_error_rate([long.text], [text]), 4), "memory": added(before, peak.peaks)}


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser("benchmarks.long_input", __doc__)
    parser.add_argument("--minutes", type=float, default=120.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        config = benchmark_config(args.config, Path(scratch))
        long = lecture(f"lecture-{args.minutes:g}min", args.minutes * 60)
        warm = clip("warm-up", 10, VOICES[0], sentences())
        result = measure(config, Path(scratch), long, warm)
    args_section = config["applications"][0]["args"]
    result = {"machine": f"{platform.node() or 'host'}-cpu", "date": date.today().isoformat(), "config": args.config,
              "lecture_s": long.seconds, "lecture_wav_mib": round(len(long.wav) / MIB),
              "float32_samples_mib": round(long.seconds * 16000 * 4 / MIB),
              "settings": {"window_s": args_section["downloader"].get("window_s"),
                           "decode_block_s": args_section["downloader"].get("decode_block_s"),
                           "windows_in_flight": args_section["downloader"].get("windows_in_flight"),
                           "max_batch_size": args_section["transcriber"].get("max_batch_size")},
              **result}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"long-input-{args.minutes:g}min-{result['machine']}-{result['date']}.json"
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
