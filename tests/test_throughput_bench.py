"""The throughput benchmark, in its smallest form: every mode runs and reports sane figures.

The full comparison (``make bench``: 10 s to 10 min of speech, 1 to 16 clients) is a benchmark; this runs
the same code on two short clips, one repetition, two clients and a half-minute long file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.support.processes import PeakRss, gpu_figures, gpu_summary
from benchmarks.throughput.report import STAGES, plot_gpu
from benchmarks.throughput.run import main

KINDS = {"direct", "batched", "naive", "service", "service_timed", "long_direct", "long_batched", "long_service",
         "youtube_mix", "long_fanout"}


@pytest.mark.serve
@pytest.mark.slow
def test_every_mode_is_measured_side_by_side(tmp_path: Path) -> None:
    assert main(["--quick", "--out", str(tmp_path), "--concurrency", "2", "--long-minutes", "0.3"]) == 0
    (path,) = tmp_path.glob("*.json")
    result = json.loads(path.read_text())
    rows = result["rows"]
    assert {row["kind"] for row in rows} == KINDS
    assert sorted(row["clients"] for row in rows if row["kind"] == "service") == [1, 2]
    for row in rows:
        assert row["failed"] == 0, row
        assert row["audio_hours_per_hour"] > 0, row
        assert 0 <= row["wer"] <= 1, row
        assert row["latency_p50_s"] <= row["latency_p95_s"], row
        assert row["peak_rss_mib"], row
    for row in rows:
        if row["kind"] in {"service", "long_service", "youtube_mix", "long_fanout"}:
            assert set(row["model_loads"].values()) == {1}, row
            assert any(key.startswith("Transcriber/") for key in row["peak_rss_mib"]), row
    (fanout,) = [row for row in rows if row["kind"] == "long_fanout"]
    assert sum(key.startswith("Transcriber/") for key in fanout["peak_rss_mib"]) == 2, fanout
    (mix,) = [row for row in rows if row["kind"] == "youtube_mix"]
    captions, asr = mix["audio_s_by_source"]["captions"], mix["audio_s_by_source"]["asr"]
    assert captions == pytest.approx(asr, rel=0.05) and captions + asr == pytest.approx(mix["audio_s"], rel=0.05)
    (naive,) = [row for row in rows if row["kind"] == "naive"]
    assert list(naive["model_loads"].values()) == [naive["requests"]] and naive["requests"] > 1
    for row in rows:
        assert row["x_direct"] > 0 and row["x_batched"] > 0, row
    (one,) = [row for row in rows if row["kind"] == "service" and row["clients"] == 1]
    assert set(one["by_length"]) == {"5s", "15s"}, one["by_length"]
    table = path.with_suffix(".md").read_text()
    by_length, stages = 2 + 3, 2 + len(STAGES) + 1
    (timed,) = [row for row in rows if row["kind"] == "service_timed"]
    assert timed["stages"]["Transcriber/align"]["runs"] == timed["stages"]["Transcriber/generate"]["runs"] > 0
    assert table.count("\n| ") == len(rows) + 2 + by_length + stages, "the rows, by length, and by stage"
    for service in [row for row in rows if row["kind"] in ("service", "service_timed")]:
        stage = service["stages"]
        assert stage["Transcriber/generate"]["runs"] == sum(stage["batch_sizes"].values()) > 0, stage
        assert stage["Downloader/vad"]["seconds"] > 0 and stage["Transcriber/encode"]["seconds"] > 0, stage
    assert path.with_suffix(".png").stat().st_size > 0


def test_the_gpu_figures_survive_a_node_without_nvml_and_a_mig_slice(tmp_path: Path) -> None:
    """Without NVML (this machine) the GPU summary says so; on MIG, utilisation is unknown, not a crash."""
    with PeakRss(gpu_figures, interval_s=60, timeline=True) as sampled:
        pass
    summary = gpu_summary(sampled)
    assert summary["nvml"] is False and summary["vram_total_mib"] is None and summary["util_mean_pct"] is None
    plot_gpu(summary, tmp_path / "none.png")
    mig = [{"util": None, "vram": 3 * 2**30, "total": 20 * 2**30}]
    assert gpu_figures(mig) == {"gpu0/vram": 3 * 2**30}
    with PeakRss(lambda: gpu_figures(mig), interval_s=60, timeline=True) as sampled:
        pass
    summary = gpu_summary(sampled, mig)
    assert (summary["vram_peak_mib"], summary["vram_total_mib"], summary["util_peak_pct"]) == (3072, 20480, None)
    plot_gpu(summary, tmp_path / "mig.png")
    assert (tmp_path / "mig.png").stat().st_size > 0


def test_the_prepared_gpu_run_passes_options_the_commands_take() -> None:
    """benchmarks/gpu_run.sh runs unattended on a lent GPU: a renamed option must fail here, not there."""
    import shlex

    from benchmarks.throughput.run import parse
    from serve_app.cli import parser

    script = (Path(__file__).parent.parent / "benchmarks" / "gpu_run.sh").read_text()
    (line,) = [line for line in script.splitlines() if "-m benchmarks.throughput" in line]
    args = parse(shlex.split(line.split("-m benchmarks.throughput", 1)[1].replace('"$OUT"', "/tmp/out")))
    assert args.out == "/tmp/out" and args.gpu and args.quick and args.concurrency == [16] and args.long_minutes == 2
    (line,) = [line for line in script.splitlines() if "-m serve_app.cli check" in line]
    check = parser().parse_args(shlex.split(line.split("-m serve_app.cli", 1)[1]))
    assert check.offline and check.gpu and check.config == "configs/local.yaml"
