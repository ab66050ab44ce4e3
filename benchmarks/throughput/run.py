"""The throughput benchmark's command line and run: every mode on the same clips, then the JSON, table and plots."""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import throughput
from benchmarks.support.harness import ROOT, gpu_config, load_config
from benchmarks.support.processes import PeakRss, gpu_figures, gpu_summary
from benchmarks.support.speech import Clip, clip_set, lecture, missing_tools
from benchmarks.throughput.report import compare, plot, plot_gpu, table, targets
from benchmarks.throughput.workload import (
    FULL_CLIPS,
    FULL_PER_LENGTH,
    QUICK_CLIPS,
    QUICK_PER_LENGTH,
    decoding,
    direct_rows,
    fanout_row,
    naive_row,
    service_rows,
    transcriber_settings,
    youtube_double,
)

if TYPE_CHECKING:
    from deployments.settings import TranscriberSettings


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput",
                                     description=(throughput.__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two short clips, one repetition, a 0.5-minute long file")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--long-minutes", type=float, default=None, help="length of the long file (10; quick 0.5)")
    parser.add_argument("--concurrency", default="2,4,8,16", help="concurrent clients, comma-separated")
    parser.add_argument("--repetitions", type=int, default=None, help="times each clip is sent (3; quick 1)")
    parser.add_argument("--fanout-replicas", type=int, default=None,
                        help="Transcriber replicas of the second long-file app (2 sharing the cores; --gpu: 1)")
    parser.add_argument("--gpu", action="store_true",
                        help="the GPU layout of benchmarks.soak --gpu (four Whisper replicas on one card)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "local.yaml"))
    args = parser.parse_args(argv)
    args.long_minutes = args.long_minutes or (0.5 if args.quick else 10.0)
    args.repetitions = args.repetitions or (1 if args.quick else 3)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.fanout_replicas = args.fanout_replicas or (1 if args.gpu else 2)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if missing := missing_tools():
        raise SystemExit(f"the held-out voices need {', '.join(missing)}: run `make test`, which installs them")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so a TERM still stops the cluster it started
    config = load_config(Path(args.config))
    config, gpus = (gpu_config(config), 1) if args.gpu else (config, None)
    with tempfile.TemporaryDirectory() as scratch:
        config["applications"][0]["args"]["store"]["uri"] = str(Path(scratch) / "store")
        settings = transcriber_settings(config)
        lengths, per_length = (QUICK_CLIPS, QUICK_PER_LENGTH) if args.quick else (FULL_CLIPS, FULL_PER_LENGTH)
        clips = clip_set(lengths, per_length)
        long = lecture(f"long-{args.long_minutes:g}min", args.long_minutes * 60)
        fake, videos = youtube_double(clips, Path(scratch))
        downloader = config["applications"][0]["args"]["downloader"]
        downloader.update(youtube_base_url=fake.base_url, allow_private_networks=True)  # the double is on loopback
        started, load_start = time.perf_counter(), [round(x, 1) for x in os.getloadavg()]
        rows = direct_rows(settings, clips, long, args.repetitions)
        rows.append(naive_row(settings, clips, args.repetitions))
        with fake, PeakRss(gpu_figures, interval_s=0.5, timeline=True) as gpu:
            rows += service_rows(config, Path(scratch) / "app", clips, long, videos, args.repetitions,
                                 args.concurrency, gpus)
            rows.append(fanout_row(config, Path(scratch) / "fanout", clips, long, args.fanout_replicas, gpus))
    compare(rows)
    result = write(args, argv, settings, clips + [long], rows, started, load_start, gpu_summary(gpu) if gpus else None)
    print(table(result))
    return 0


def write(args: argparse.Namespace, argv: list[str] | None, settings: TranscriberSettings, clips: list[Clip],
          rows: list[dict], started: float, load_start: list[float], gpu: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON, the markdown table and the PNG under ``--out``; returns the result."""
    import ctranslate2
    import faster_whisper
    import ray

    machine = f"{platform.node() or 'host'}-{'gpu' if gpu else f'{os.cpu_count()}cpu'}"
    result = {
        "machine": machine, "date": date.today().isoformat(), "quick": args.quick, "argv": list(argv or sys.argv[1:]),
        "config": args.config, "model": settings.default_model,
        "decoding": {"compute_type": settings.compute_type, "cpu_threads": settings.cpu_threads,
                     "num_workers": settings.num_workers, "device": settings.device, **decoding(settings)},
        "versions": {"faster_whisper": faster_whisper.__version__, "ctranslate2": ctranslate2.__version__,
                     "ray": ray.__version__, "python": platform.python_version()},
        "clips": [{"name": c.name, "seconds": c.seconds, "words": len(c.text.split()), "voice": c.voice}
                  for c in clips],
        "repetitions": args.repetitions, "concurrency": args.concurrency,
        "load_average_start": load_start, "load_average_end": [round(x, 1) for x in os.getloadavg()],
        "total_wall_s": round(time.perf_counter() - started, 1), "rows": rows, "targets": targets(rows),
        "gpu": gpu,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{machine}-{result['date']}{'-quick' if args.quick else ''}"
    Path(f"{stem}.json").write_text(json.dumps(result, indent=1))
    Path(f"{stem}.md").write_text(table(result))
    plot(result, Path(f"{stem}.png"))
    if gpu:
        plot_gpu(gpu, Path(f"{stem}-gpu.png"))
    print(f"wrote {stem}.json, .md and .png")
    return result


if __name__ == "__main__":
    raise SystemExit(main())
