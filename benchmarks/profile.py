"""Where one client's time goes: py-spy on every process of the app while one client sends clips in turn.

    python -m benchmarks.profile                 # 60 s of one client sending the ~30 s clip

The service's throughput is compared with faster-whisper called directly in one process; on a machine
whose cores the decoder already fills, whatever else the service runs per request (decoding the upload,
Silero VAD, Serve's hops, the HTTP proxy) comes out of the decoder's time. This measures it: the CPU
seconds each process spent while the clients ran (from the kernel, all threads, native code included)
against the audio seconds transcribed, and, from py-spy sampling whichever thread holds the GIL, where
each process's Python time went. Writes ``profile-<machine>-<date>-<n>-client(s).md`` and ``.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import tempfile
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from benchmarks.support.harness import BIN, benchmark_config, benchmark_parser, local_app
from benchmarks.support.load import Run, clients
from benchmarks.support.processes import service_processes
from benchmarks.support.speech import VOICES, Clip, clip, sentences

RATE = 100
"""py-spy samples a second."""


def record(pid: int, seconds: float, path: Path) -> subprocess.Popen:
    """Start py-spy on ``pid`` for ``seconds``, writing the GIL holder's collapsed stacks to ``path``."""
    return subprocess.Popen([str(BIN / "py-spy"), "record", "--pid", str(pid), "--duration", str(int(seconds)),
                             "--rate", str(RATE), "--format", "raw", "--gil", "--nonblocking", "--output", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarise(path: Path, top: int = 8) -> dict[str, Any]:
    """Seconds with the GIL in a collapsed-stacks file, and the functions most often on top of the stack."""
    leaves: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines() if path.exists() else []:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        leaves[stack.split(";")[-1].split(" (")[0]] += int(count)
    return {"gil_s": round(total / RATE, 1),
            "top": [{"function": name, "gil_s": round(n / RATE, 1)} for name, n in leaves.most_common(top)]}


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User and system CPU seconds each process has used so far, all its threads included."""
    import psutil

    found = {}
    for key, pid in pids.items():
        times = psutil.Process(pid).cpu_times()
        found[key] = times.user + times.system
    return found


def profile(config: dict[str, Any], folder: Path, seconds: float, count: int) -> dict[str, Any]:
    """Run the app, warm it up, then record every process while ``count`` clients send clips for ``seconds``."""
    spoken = clip("30s", 30.0, VOICES[0], sentences())
    with local_app(config, folder / "app") as app:
        asyncio.run(clients(app.url, [spoken], 1))
        pids = {key: int(key.split("/")[1]) for key in service_processes(app.head_pid)}
        recorders = [record(pid, seconds, folder / f"{key.replace('/', '-')}.txt") for key, pid in pids.items()]
        started, before = time.perf_counter(), cpu_seconds(pids)
        run = asyncio.run(keep_busy(app.url, spoken, seconds, count))
        wall, after = time.perf_counter() - started, cpu_seconds(pids)
        for recorder in recorders:
            recorder.wait()
        batches = httpx.get(f"{app.url}/stats", timeout=60).json()["Transcriber"]["batch_sizes"]
    audio = sum(run.audio_s)
    return {"cores": os.cpu_count(), "clients": count, "clip_s": spoken.seconds, "requests": len(run.audio_s),
            "batch_sizes": batches, "audio_s": round(audio, 1), "wall_s": round(wall, 1),
            "audio_hours_per_hour": round(audio / wall, 2),
            "processes": {key: {"cpu_s": round(after[key] - before[key], 1),
                                **summarise(folder / f"{key.replace('/', '-')}.txt")} for key in pids}}


async def keep_busy(url: str, clip: Clip, seconds: float, count: int) -> Run:
    """``count`` clients sending ``clip`` again and again until ``seconds`` have passed (the last requests finish)."""
    deadline, run = time.monotonic() + seconds, Run()
    while time.monotonic() < deadline:
        run.audio_s += (await clients(url, [clip] * count, count)).audio_s
    return run


def table(result: dict[str, Any]) -> str:
    lines = [f"### Where {result['clients']} client(s)' time goes ({result['machine']}, {result['date']})", "",
             f"{result['requests']} requests of a {result['clip_s']} s clip in {result['wall_s']} s "
             f"({result['audio_hours_per_hour']} audio h / wall h), {result['cores']} cores; Transcriber batches by "
             f"size: {result['batch_sizes']}. CPU s: the kernel's user + system time of the process; GIL s: "
             f"py-spy's samples of the thread holding the GIL ({RATE}/s).", "",
             "| process | CPU s | share of all CPU | GIL s | where the GIL time went (s) |",
             "| --- | ---: | ---: | ---: | --- |"]
    total = sum(figures["cpu_s"] for figures in result["processes"].values())
    for key, figures in sorted(result["processes"].items(), key=lambda kv: -kv[1]["cpu_s"]):
        busiest = ", ".join(f"`{t['function']}` {t['gil_s']}" for t in figures["top"][:4])
        lines.append(f"| {key.split('/')[0]} | {figures['cpu_s']} | {100 * figures['cpu_s'] / total:.0f}% | "
                     f"{figures['gil_s']} | {busiest} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser("benchmarks.profile", __doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        config = benchmark_config(args.config, Path(scratch))
        result = profile(config, Path(scratch), args.seconds, args.clients)
    result.update(machine=f"{platform.node() or 'host'}-cpu", date=date.today().isoformat())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"profile-{result['machine']}-{result['date']}-{args.clients}-client{'s' if args.clients > 1 else ''}"
    Path(f"{stem}.json").write_text(json.dumps(result, indent=1))
    Path(f"{stem}.md").write_text(table(result))
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
