"""What the running app's ``/stats`` says during a throughput run: seconds by stage, batches, audio by source."""

from __future__ import annotations

from typing import Any

import httpx


def stage_figures(url: str) -> dict[str, dict[str, Any]]:
    """Each model deployment's seconds and runs by stage so far, and the Transcriber's batches by size."""
    stats = httpx.get(f"{url}/stats", timeout=60).raise_for_status().json()
    return {name: {"seconds": stats[name].get("stage_seconds", {}), "counts": stats[name].get("stage_counts", {}),
                   "batches": stats[name].get("batch_sizes", {})} for name in ("Downloader", "Transcriber")}


def stages_since(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What each stage took during a run: total seconds and runs, by deployment; and the batches decoded."""
    found: dict[str, Any] = {}
    for name, figures in after.items():
        for stage, seconds in figures["seconds"].items():
            runs = figures["counts"][stage] - before[name]["counts"].get(stage, 0)
            if runs:
                found[f"{name}/{stage}"] = {"seconds": round(seconds - before[name]["seconds"].get(stage, 0.0), 3),
                                            "runs": runs}
    batches = {size: count - before["Transcriber"]["batches"].get(size, 0)
               for size, count in after["Transcriber"]["batches"].items()}
    found["batch_sizes"] = {size: count for size, count in sorted(batches.items(), key=lambda x: int(x[0])) if count}
    return found


def downloaded_audio(url: str) -> dict[str, float]:
    """The Downloader's audio seconds so far by how they were answered: ``asr`` (decoded) or ``captions``."""
    stats = httpx.get(f"{url}/stats", timeout=60).raise_for_status().json()["Downloader"]
    return stats["audio_seconds_by_model"]
