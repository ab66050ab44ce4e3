"""ReplicaMetrics: the NVML per-process sum, the plain figures behind every metric, and the Grafana dashboard."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray

from deployments import metrics
from deployments.metrics import ReplicaMetrics
from deployments.nvml import gpu_memory_of

DASHBOARD = Path(__file__).resolve().parent.parent / "configs" / "grafana-dashboard.json"
MiB = 1024 * 1024


@dataclass
class FakeProcess:
    """The fields of an NVML ``c_nvmlProcessInfo_t`` record that ``gpu_memory_of`` reads."""

    pid: int
    usedGpuMemory: int | None


def test_gpu_memory_of_sums_this_pid_over_devices() -> None:
    """A process on two GPUs uses the sum; other processes' records do not count."""
    devices = [
        [FakeProcess(100, 500 * MiB), FakeProcess(7, 1000 * MiB)],
        [FakeProcess(7, 24 * MiB)],
        [],
    ]
    assert gpu_memory_of(7, devices) == 1024 * MiB


def test_gpu_memory_of_is_none_for_a_process_on_no_gpu() -> None:
    """A CPU-only process has no figure at all, not zero."""
    assert gpu_memory_of(7, [[FakeProcess(100, 500 * MiB)], []]) is None
    assert gpu_memory_of(7, []) is None


def test_gpu_memory_of_skips_records_nvml_cannot_measure() -> None:
    """NVML reports usedGpuMemory as None when it is not available (e.g. without privileges)."""
    assert gpu_memory_of(7, [[FakeProcess(7, None)]]) is None
    assert gpu_memory_of(7, [[FakeProcess(7, None)], [FakeProcess(7, 3 * MiB)]]) == 3 * MiB


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A short, private one-CPU Ray instance: ``address="local"`` never joins a cluster someone else started."""
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_replica_metrics_outside_serve(local_ray: None) -> None:
    """Every method updates the plain figures; outside a Serve replica the replica id is ``local``."""
    replica = ReplicaMetrics("Transcriber")
    assert replica.replica == metrics.LOCAL_REPLICA

    replica.sample_memory()
    replica.model_loaded("tiny.en")
    replica.models_resident(["tiny.en", "base"])
    replica.models_resident(["base"])
    replica.request("transcribe")
    replica.error("UnknownModel")
    replica.error("UnknownModel")
    replica.audio(seconds_in=10.0, processing_seconds=0.5, model="tiny.en")
    replica.audio(seconds_in=0.0, processing_seconds=0.0, model="tiny.en")
    replica.queue_depth(3)

    stats = replica.stats()
    assert stats["rss_bytes"] > 0
    assert stats["model_loads"] == {"tiny.en": 1}
    assert stats["models_resident"] == ["base"]
    assert stats["requests"] == {"transcribe": 1}
    assert stats["errors"] == {"UnknownModel": 2}
    assert stats["audio_seconds"] == 10.0
    assert stats["real_time_factor"] == pytest.approx(0.05)
    assert stats["queue_depth"] == 3
    assert json.loads(json.dumps(stats)) == stats


def test_track_times_counts_and_restores_queue_depth(local_ray: None) -> None:
    """track() counts the request, measures it, counts the error by class name, and leaves the queue as found."""
    replica = ReplicaMetrics("Embedder")

    with replica.track("transcribe", "tiny.en") as tracked:
        assert replica.figures.queue_depth == 1
        tracked.audio_seconds = 4.0
    assert tracked.processing_seconds > 0
    assert replica.figures.queue_depth == 0
    assert replica.figures.audio_seconds == 4.0

    with pytest.raises(ZeroDivisionError), replica.track("embed", "minilm", audio_seconds=1.0) as failed:
        assert replica.figures.queue_depth == 1
        _ = 1 / 0
    assert failed.error == "ZeroDivisionError"
    assert failed.processing_seconds > 0
    assert replica.figures.queue_depth == 0
    assert replica.figures.requests == {"transcribe": 1, "embed": 1}
    assert replica.figures.errors == {"ZeroDivisionError": 1}
    assert replica.figures.audio_seconds == 4.0, "a failed call adds no audio seconds"


def test_sample_memory_without_nvml_sets_no_gpu_figure(local_ray: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a node where NVML does not answer the GPU figure stays absent and nothing raises."""
    monkeypatch.setattr(metrics, "read_gpu_memory", lambda pid: (False, None))
    replica = ReplicaMetrics("Downloader")
    replica.sample_memory()
    assert replica.figures.rss_bytes > 0
    assert replica.figures.gpu_memory_bytes is None


def test_sample_memory_reads_this_process_from_nvml(local_ray: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """With NVML answering, the GPU figure is this pid's; it drops to 0 (not stale) once the pid leaves the GPU."""
    answers = iter([(True, 2048 * MiB), (True, None)])
    seen: list[int] = []

    def fake_read(pid: int) -> tuple[bool, int | None]:
        seen.append(pid)
        return next(answers)

    monkeypatch.setattr(metrics, "read_gpu_memory", fake_read)
    replica = ReplicaMetrics("Transcriber")
    replica.sample_memory()
    assert replica.figures.gpu_memory_bytes == 2048 * MiB
    replica.sample_memory()
    assert replica.figures.gpu_memory_bytes == 0
    assert seen == [os.getpid(), os.getpid()]


def test_read_gpu_memory_never_raises() -> None:
    """Here (a CPU machine, or a GPU one) the real NVML path answers without raising."""
    answered, used = metrics.read_gpu_memory(os.getpid())
    assert used is None or used >= 0
    assert answered or used is None


def test_sampler_is_idempotent_and_stops(local_ray: None) -> None:
    """A second start_sampler() is a no-op while one runs; stop_sampler() stops it."""
    replica = ReplicaMetrics("Transcriber")
    replica.start_sampler(interval_s=3600)
    first = replica._sampler
    replica.start_sampler(interval_s=3600)
    assert first is not None and replica._sampler is first
    replica.stop_sampler()
    assert first.is_set() and replica._sampler is None


PROMQL_WORDS = {"and", "or", "unless", "bool", "offset"}
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers left after removing labels, ranges, groupings and calls."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = GROUPING.sub("", expr)
    names = set(re.findall(r"(?<![\w$])([A-Za-z_:][\w:]*)\b(?!\s*\()", expr))
    return names - PROMQL_WORDS


def dashboard_exprs(dashboard: dict) -> list[str]:
    """Every PromQL expression in the dashboard: panel targets and template-variable queries."""
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            exprs.append(re.sub(r"^label_values\(([^,]+),.*\)$", r"\1", query))
    return exprs


def ray_node_metric_names() -> set[str]:
    """The node and component gauges Ray's dashboard agent defines, as exported (``ray_`` prefix)."""
    from ray.dashboard.modules.reporter.reporter_agent import METRICS_GAUGES

    return {metrics.EXPORT_PREFIX + name for name in METRICS_GAUGES}


def test_promql_metric_names_finds_only_metrics() -> None:
    """The extractor drops functions, grouping labels, label matchers and ranges."""
    expr = 'histogram_quantile(0.95, sum by (le, model) (rate(ray_x_bucket{a=~"$b"}[5m]))) / on() ray_y * 1024'
    assert promql_metric_names(expr) == {"ray_x_bucket", "ray_y"}


def test_dashboard_queries_only_metrics_that_exist() -> None:
    """Each expr names ReplicaMetrics' exported series or Ray's node gauges; every metric of ours has a panel."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    datasource = next(v for v in dashboard["templating"]["list"] if v["name"] == "datasource")
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")

    ours, rays = metrics.exported_names(), ray_node_metric_names()
    used: set[str] = set()
    for expr in dashboard_exprs(dashboard):
        names = promql_metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= ours | rays, f"unknown metric(s) {names - ours - rays} in {expr!r}"
        used |= names

    for name in (*metrics.GAUGES, *metrics.COUNTERS):
        assert metrics.EXPORT_PREFIX + name in used, f"no panel shows {name}"
    assert f"{metrics.EXPORT_PREFIX}{metrics.REAL_TIME_FACTOR}_bucket" in used
    assert {"ray_node_gram_used", "ray_node_gpus_utilization", "ray_node_mem_used"} <= used


def test_dashboard_panels_use_the_datasource_variable() -> None:
    """Every panel and target reads from ``${datasource}``, so the import works on any Prometheus."""
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]
