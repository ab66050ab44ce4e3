"""The throughput benchmark's report: each mode's row, the comparisons and targets, the markdown table and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.support.load import Run
from benchmarks.support.processes import MIB
from benchmarks.support.speech import word_error_rate


def loads_text(loads: dict[str, int]) -> str:
    """A row's model loads as the table shows them: each model's count."""
    return ", ".join(f"{name} {count}" for name, count in loads.items())


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def row(kind: str, label: str, clients: int, run: Run, peaks: dict[str, int],
        model_loads: dict[str, int]) -> dict[str, Any]:
    """The figures of one mode; ``model_loads`` counts each model's loads (a routed service loads its detector too)."""
    audio = sum(run.audio_s)
    return {
        "kind": kind, "label": label, "clients": clients, "requests": len(run.latency_s) + run.failed,
        "failed": run.failed, "retries_503": run.retries, "audio_s": round(audio, 2), "wall_s": round(run.wall_s, 2),
        "audio_hours_per_hour": round(audio / run.wall_s, 3) if run.wall_s else 0.0,
        "rtf": round(sum(run.latency_s) / audio, 4) if audio else None,
        "latency_p50_s": percentile(run.latency_s, 50), "latency_p95_s": percentile(run.latency_s, 95),
        "wer": round(word_error_rate(run.references, run.texts), 4) if run.texts else None,
        "model_loads": model_loads, "peak_rss_mib": {key: round(rss / MIB) for key, rss in sorted(peaks.items())},
        "by_length": by_length(run),
    }


def by_length(run: Run) -> dict[str, dict[str, float]]:
    """Per clip length (the clip name's prefix): audio seconds per processing second as each request saw it, and
    WER. For one client at a time that is the mode's speed on that length; under concurrency, its latency."""
    lengths: dict[str, list[int]] = {}
    for index, name in enumerate(run.names):
        lengths.setdefault(name.rsplit("-", 1)[0], []).append(index)
    figures = {}
    for length, found in lengths.items():
        speed = sum(run.audio_s[i] for i in found) / sum(run.latency_s[i] for i in found)
        wer = word_error_rate([run.references[i] for i in found], [run.texts[i] for i in found])
        figures[length] = {"x_realtime": round(speed, 2), "wer": round(wer, 4)}
    return figures


def compare(rows: list[dict[str, Any]]) -> None:
    """Each row's throughput against both references on the same audio (short set or long file): the library
    sequential (``x_direct``) and its batched pipeline one clip at a time (``x_batched``); WER against the first."""
    reference = {(kind, length): next(r for r in rows if r["kind"] == ("long_" if length == "long" else "") + kind)
                 for kind in ("direct", "batched") for length in ("short", "long")}
    for r in rows:
        length = "long" if r["kind"].startswith("long") else "short"
        for kind in ("direct", "batched"):
            r[f"x_{kind}"] = round(r["audio_hours_per_hour"] / reference[kind, length]["audio_hours_per_hour"], 3)
        base = reference["direct", length]
        both = r["wer"] is not None and base["wer"] is not None
        r["wer_delta_points"] = round(100 * (r["wer"] - base["wer"]), 2) if both else None


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets of issue #12 on a 2-core CPU, with what this run reached."""
    by = {(r["kind"], r["clients"]): r for r in rows}
    found = []
    one, eight, sixteen = by.get(("service", 1)), by.get(("service", 8)), by.get(("service", 16))
    if one:
        found.append({"target": "service, one client at a time >= 0.95x the library's batched pipeline",
                      "reached": f"{one['x_batched']}x", "met": one["x_batched"] >= 0.95})
    if eight:
        found.append({"target": "service, 8 clients >= 1.5x sequential and >= 1.3x batched",
                      "reached": f"{eight['x_direct']}x and {eight['x_batched']}x",
                      "met": eight["x_direct"] >= 1.5 and eight["x_batched"] >= 1.3})
    if eight and sixteen:
        found.append({"target": "service, 16 clients no worse than 8",
                      "reached": f"{sixteen['audio_hours_per_hour']} against {eight['audio_hours_per_hour']} "
                                 f"audio h/h, p95 {sixteen['latency_p95_s']} s",
                      "met": sixteen["audio_hours_per_hour"] >= 0.95 * eight["audio_hours_per_hour"]})
    service = [r for r in rows if r["kind"] == "service" and r["wer_delta_points"] is not None]
    if service:
        worst = max(r["wer_delta_points"] for r in service)
        found.append({"target": "service WER within 0.5 points of the sequential library",
                      "reached": f"{worst:+} points", "met": worst <= 0.5})
    return found


def notes(rows: list[dict[str, Any]]) -> list[str]:
    """What the fan-out and the captions bought, in words."""
    by = {r["kind"]: r for r in rows}
    found = []
    one, many = by.get("long_service"), by.get("long_fanout")
    if one and many and one["latency_p50_s"] and many["latency_p50_s"]:
        found.append(f"long file latency: {one['latency_p50_s']} s through 1 Transcriber replica, "
                     f"{many['latency_p50_s']} s fanned out ({many['label'].split(': ')[1]}), "
                     f"{one['latency_p50_s'] / many['latency_p50_s']:.2f}x")
    mix = by.get("youtube_mix")
    if mix and mix.get("audio_s_by_source"):
        sources = mix["audio_s_by_source"]
        total = sum(sources.values())
        captions = sources.get("captions", 0.0)
        found.append(f"YouTube mix: {captions:.0f} of {total:.0f} audio seconds ({100 * captions / total:.0f}%) came "
                     "from captions, never downloaded, decoded or transcribed")
    return found


def rss_summary(peaks: dict[str, int]) -> str:
    """Peak RSS by process, named by its deployment (with the pid only when a name repeats)."""
    names = [key.split("/")[0] for key in peaks]
    return ", ".join(f"{key if names.count(key.split('/')[0]) > 1 else key.split('/')[0]} {mib}"
                     for key, mib in peaks.items())


def shown_argv(argv: list[str]) -> list[str]:
    """The command line without ``--out`` and its folder."""
    shown, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--out="):
            skip = False
            continue
        skip = arg == "--out"
        if not skip:
            shown.append(arg)
    return shown


def table(result: dict[str, Any]) -> str:
    """The rows as a markdown table, with the targets and how to reproduce them."""
    lines = [f"### Throughput on {result['machine']}, {result['date']}{' (quick)' if result['quick'] else ''}", "",
             f"{result['model']} {result['decoding']['compute_type']}, beam {result['decoding']['beam_size']}, "
             f"VAD {result['decoding']['vad_filter']}, {result['decoding']['cpu_threads']} threads; clips "
             + ", ".join(f"{c['name']} ({c['seconds']} s, {c['voice']})" for c in result["clips"])
             + f"; {result['repetitions']} repetition(s); load average {result['load_average_start']} at the start.",
             "",
             "| mode | clients | requests | audio h / wall h | × sequential | × batched | RTF | p50 s | p95 s | WER % "
             "| Δ WER pts | model loads | 503 retries | peak RSS MiB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in result["rows"]:
        wer = "–" if r["wer"] is None else f"{100 * r['wer']:.1f}"
        delta = "–" if r["wer_delta_points"] is None else f"{r['wer_delta_points']:+.1f}"
        failed = f" ({r['failed']} failed)" if r["failed"] else ""
        lines.append(f"| {r['label']} | {r['clients']} | {r['requests']}{failed} | {r['audio_hours_per_hour']:.1f} | "
                     f"{r['x_direct']:.2f} | {r['x_batched']:.2f} | {r['rtf']} | {r['latency_p50_s']} | "
                     f"{r['latency_p95_s']} | {wer} | {delta} | {loads_text(r['model_loads'])} | {r['retries_503']} | "
                     f"{rss_summary(r['peak_rss_mib'])} |")
    lines += ["", "RTF: processing seconds per audio second as each request saw it (latency / audio), so under "
              "concurrency it rises while throughput grows. × sequential and × batched: throughput against the "
              "library called sequentially and against its batched pipeline one clip at a time, on the same audio "
              "(the long file against the long file). Δ WER: percentage points against the sequential library. "
              "Model loads: for the service, the Transcriber replica's loads of each model since it started.", ""]
    lines += length_table(result["rows"])
    lines += stage_table(result["rows"])
    lines += [f"- {t['target']}: {t['reached']} — {'met' if t['met'] else 'not met'}" for t in result["targets"]]
    lines += [f"- {note}" for note in notes(result["rows"])]
    command = " ".join(["python -m benchmarks.throughput", *shown_argv(result["argv"])])
    lines += ["", f"Reproduce: `make bench` for the full run; this one was `{command}`."]
    return "\n".join(lines) + "\n"


def length_table(rows: list[dict[str, Any]]) -> list[str]:
    """Speed (audio seconds per second of latency) and WER by clip length, for the modes sending one clip at a time."""
    shown = [r for r in rows if r["clients"] == 1 and r["kind"] in ("direct", "batched", "service")]
    lengths = list(shown[0]["by_length"]) if shown else []
    lines = ["By clip length, one clip at a time (× real time, WER %):", "",
             "| mode | " + " | ".join(lengths) + " |", "| --- |" + " ---: |" * len(lengths)]
    for r in shown:
        cells = [f"{r['by_length'][n]['x_realtime']}× ({100 * r['by_length'][n]['wer']:.1f})" for n in lengths]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return [*lines, ""]

STAGES = ["Downloader/audio_decode", "Downloader/vad", "Transcriber/queue_wait", "Transcriber/batch_decode",
          "Transcriber/features", "Transcriber/encode", "Transcriber/generate", "Transcriber/align"]
"""The stages in a window's order: decoding and VAD at the Downloader; at the Transcriber its wait for a
decoder, and the batch's decode (log-Mel features, encoder, search, alignment when times are asked for)."""


def column(r: dict[str, Any]) -> str:
    """A stage-table column's heading: the row's clients, and the response format when it asks for times."""
    return f"{r['clients']} client(s)" + (", verbose_json" if r["kind"] == "service_timed" else "")


def stage_table(rows: list[dict[str, Any]]) -> list[str]:
    """Where the service's time went, per stage, for each concurrency: seconds per minute of audio (mean per run)."""
    shown = [r for r in rows if r.get("stages")]
    if not shown:
        return []
    lines = ["Where the time goes: seconds per minute of audio (mean ms per run) by stage. Stages overlap across "
             "windows and requests, and a batch's stages count once for all its windows.", "",
             "| stage | " + " | ".join(column(r) for r in shown) + " |",
             "| --- |" + " ---: |" * len(shown)]
    for stage in STAGES:
        cells = []
        for r in shown:
            figure = r["stages"].get(stage)
            if figure is None:
                cells.append("–")
                continue
            mean_ms = 1000 * figure["seconds"] / figure["runs"]
            cells.append(f"{60 * figure['seconds'] / r['audio_s']:.2f} ({mean_ms:.0f})")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines.append("| batches by size | " + " | ".join(
        ", ".join(f"{size}: {count}" for size, count in r["stages"]["batch_sizes"].items()) for r in shown) + " |")
    return [*lines, ""]


def plot(result: dict[str, Any], path: Path) -> None:
    """Audio hours per wall hour against concurrent clients, with the library's sequential lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    service = sorted((r["clients"], r["audio_hours_per_hour"]) for r in rows if r["kind"] == "service")
    figure, axes = plt.subplots(figsize=(8, 5))
    axes.plot([c for c, _ in service], [t for _, t in service], "o-", label="service (short clips)")
    lines = [("direct", "--", "grey", "library sequential (short clips)"),
             ("batched", "-.", "black", "library batched pipeline, one clip at a time"),
             ("naive", ":", "red", "model per request")]
    for kind, style, color, label in lines:
        axes.axhline(next(r for r in rows if r["kind"] == kind)["audio_hours_per_hour"], linestyle=style,
                     color=color, label=label)
    for kind, marker in [("long_direct", "s"), ("long_batched", "v"), ("long_service", "^"), ("long_fanout", "D")]:
        r = next(r for r in rows if r["kind"] == kind)
        axes.plot([r["clients"]], [r["audio_hours_per_hour"]], marker, label=r["label"])
    ticks = sorted({1, *[c for c, _ in service], *[r["clients"] for r in rows]})
    axes.set_xscale("log", base=2)
    axes.set_xticks(ticks, labels=[str(c) for c in ticks])
    axes.set_xlabel("concurrent clients")
    axes.set_ylabel("audio hours per wall hour")
    axes.set_ylim(bottom=0)
    axes.set_title(f"transcribe-serve throughput ({result['machine']}, {result['model']})")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_gpu(gpu: dict[str, Any], path: Path) -> None:
    """GPU utilisation and VRAM over the service's part of the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = [t for t, _ in gpu["timeline"]]
    figure, (util, vram) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    util.plot(seconds, [f.get("gpu0/util", float("nan")) for _, f in gpu["timeline"]])
    util.set_ylabel("GPU utilisation %")
    vram.plot(seconds, [f.get("gpu0/vram", float("nan")) / MIB for _, f in gpu["timeline"]])
    if gpu["vram_total_mib"]:
        vram.axhline(0.8 * gpu["vram_total_mib"], linestyle="--", color="red", label="80% of the card")
    vram.set_ylabel("VRAM used MiB")
    vram.set_xlabel("seconds")
    vram.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
