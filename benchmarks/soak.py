"""Soak: many requests against the real app while every replica's memory is sampled.

    python -m benchmarks.soak                 # configs/local.yaml on this machine (CPU)
    python -m benchmarks.soak --gpu           # four Whisper replicas and the embedder sharing one GPU

Writes ``benchmarks/results/soak-<machine>-<date>.json`` and a PNG of memory over requests, and prints
the figures the targets are stated in: every replica's RSS growth (Ingress, Downloader, Transcriber, Embedder,
JobRunner) between request 10 and the last sequential request (< 3% on CPU), model loads (one per replica),
and VRAM (flat, < 80% of the card).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

from benchmarks.support.harness import ROOT, gpu_config, load_config, local_app
from benchmarks.support.processes import replica_memory
from benchmarks.support.soak_loop import model_loads, soak
from benchmarks.support.speech import ESPEAK, SCRIPTS, speak


def plot(result: dict[str, Any], path: Path) -> None:
    """Memory of each replica over requests: RSS (and VRAM where present)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 5))
    keys = sorted({k for s in result["samples"] for k in s["replicas"]})
    for key in keys:
        points = [(s["request"], s["replicas"][key]) for s in result["samples"] if key in s["replicas"]]
        axes.plot([p[0] for p in points], [p[1]["rss"] / 2**20 for p in points], label=f"{key} RSS")
        if any(p[1]["vram"] for p in points):
            axes.plot([p[0] for p in points], [(p[1]["vram"] or 0) / 2**20 for p in points], "--",
                      label=f"{key} VRAM")
    sequential_end = result["sequential_requests"]
    axes.axvline(sequential_end, color="grey", linestyle=":", label="sequential | concurrent")
    axes.set_xlabel("requests completed")
    axes.set_ylabel("MiB")
    axes.set_title(f"transcribe-serve soak ({result['machine']})")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "local.yaml"))
    parser.add_argument("--requests", type=int, default=200, help="sequential requests")
    parser.add_argument("--concurrent-requests", type=int, default=100)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1, help="say the script this many times (~9 s each)")
    parser.add_argument("--gpu", action="store_true", help="the GPU layout (needs one GPU)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so a TERM still stops the cluster it started
    config = load_config(Path(args.config))
    if args.gpu:
        config = gpu_config(config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.node() or 'host'}-{'gpu' if args.gpu else 'cpu'}"
    with tempfile.TemporaryDirectory() as scratch:
        speech = speak(" ".join([SCRIPTS["lecture"]] * args.repeat), ESPEAK)
        # the GPU layout asks for about 3 CPUs: give the cluster the machine's cores
        cpus = os.cpu_count() or 2 if args.gpu else 2
        with local_app(config, Path(scratch) / "app", num_cpus=cpus, num_gpus=1 if args.gpu else None) as app:
            result = soak(app.url, speech, args.requests, args.concurrent_requests, args.clients,
                          read=lambda: replica_memory(app.head_pid))
            result["models"] = model_loads(app.url)
    result.update(machine=machine, date=date.today().isoformat(), config=args.config, repeat=args.repeat)
    stem = out / f"soak-{machine}-{result['date']}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    plot(result, stem.with_suffix(".png"))
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=1))
    print(f"wrote {stem}.json and {stem}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
