"""ReplicaMetrics: the NVML per-process sum, the plain figures behind our metrics, and the Grafana dashboard."""

from __future__ import annotations

import inspect
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray

from benchmarks.support.harness import local_head
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
def local_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A private one-CPU Ray cluster with this process as its driver. The harness starts it, so that it is given
    its agents' ports: a node ``ray.init`` starts picks them itself, and its raylet aborted when an agent beside
    another test's app took more than 15 s to write them (a clean-clone rehearsal)."""
    with local_head(tmp_path_factory.mktemp("ray"), num_cpus=1) as head:
        ray.init(address=head.address, log_to_driver=False)
        try:
            yield
        finally:
            ray.shutdown()


def test_replica_metrics_outside_serve(local_ray: None) -> None:
    """Every method updates the plain figures; outside a Serve replica the replica id is ``local``."""
    replica = ReplicaMetrics("Transcriber")
    assert replica.replica == metrics.LOCAL_REPLICA

    replica.model_loaded("tiny.en")
    replica.models_resident(["tiny.en", "base"])
    replica.models_resident(["base"])
    replica.audio(seconds_in=10.0, processing_seconds=0.5, model="tiny.en")
    replica.audio(seconds_in=0.0, processing_seconds=0.0, model="tiny.en")
    replica.batch(4)
    replica.batch(4)
    replica.batch(1)
    replica.stage("vad", 0.25)

    stats = replica.stats()
    assert stats["rss_bytes"] > 0
    assert stats["model_loads"] == {"tiny.en": 1}
    assert stats["models_resident"] == ["base"]
    assert stats["audio_seconds"] == 10.0
    assert stats["real_time_factor"] == pytest.approx(0.05)
    assert stats["batch_sizes"] == {4: 2, 1: 1}
    assert (stats["stage_seconds"], stats["stage_counts"]) == ({"vad": 0.25}, {"vad": 1})
    assert stats["in_flight"] == 0
    assert json.loads(json.dumps(stats)) == {**stats, "batch_sizes": {"4": 2, "1": 1}}


def test_track_times_and_restores_the_in_flight_count(local_ray: None) -> None:
    """track() keeps the call in flight, measures it, names the error class, and adds no audio for a failure."""
    replica = ReplicaMetrics("Embedder")

    with replica.track("transcribe", "tiny.en") as tracked:
        assert replica.figures.in_flight == 1
        tracked.audio_seconds = 4.0
    assert tracked.processing_seconds > 0
    assert replica.figures.in_flight == 0
    assert replica.figures.audio_seconds == 4.0

    with pytest.raises(ZeroDivisionError), replica.track("embed", "minilm", audio_seconds=1.0) as failed:
        assert replica.figures.in_flight == 1
        _ = 1 / 0
    assert failed.error == "ZeroDivisionError"
    assert failed.processing_seconds > 0
    assert replica.figures.in_flight == 0
    assert replica.figures.audio_seconds == 4.0, "a failed call adds no audio seconds"


def test_memory_now_without_nvml_has_no_gpu_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a node where NVML does not answer the GPU figure is absent, not zero, and nothing raises."""
    monkeypatch.setattr(metrics, "read_gpu_memory", lambda pid: (False, None))
    memory = metrics.memory_now()
    assert memory["rss_bytes"] > 0 and memory["gpu_memory_bytes"] is None


def test_memory_now_reads_this_process_from_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    """With NVML answering, the GPU figure is this pid's."""
    seen: list[int] = []

    def fake_read(pid: int) -> tuple[bool, int | None]:
        seen.append(pid)
        return True, 2048 * MiB

    monkeypatch.setattr(metrics, "read_gpu_memory", fake_read)
    assert metrics.memory_now()["gpu_memory_bytes"] == 2048 * MiB
    assert seen == [os.getpid()]


def test_read_gpu_memory_never_raises() -> None:
    """Here (a CPU machine, or a GPU one) the real NVML path answers without raising."""
    answered, used = metrics.read_gpu_memory(os.getpid())
    assert used is None or used >= 0
    assert answered or used is None


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


SERVE_COUNTERS = ("serve_deployment_request_counter", "serve_deployment_error_counter")
SERVE_GAUGES = ("serve_replica_processing_queries", "serve_deployment_replica_healthy")
SERVE_HISTOGRAMS = ("serve_deployment_processing_latency_ms",)
"""The per-replica series Ray Serve defines itself (ray/serve/_private/replica.py and its controller)."""


def ray_serve_metric_names() -> set[str]:
    """Serve's series as Prometheus names them: ``ray_`` in front, ``_total`` after a counter, histogram parts."""
    names = {f"{metrics.EXPORT_PREFIX}{name}_total" for name in SERVE_COUNTERS}
    names |= {metrics.EXPORT_PREFIX + name for name in SERVE_GAUGES}
    for name in SERVE_HISTOGRAMS:
        names |= {f"{metrics.EXPORT_PREFIX}{name}_{suffix}" for suffix in ("bucket", "sum", "count")}
    return names


def test_the_serve_series_named_here_are_defined_by_the_installed_ray() -> None:
    """Each name above is a metric the installed Ray Serve registers, so the list cannot drift from Ray."""
    from ray.serve._private import deployment_state, replica

    source = inspect.getsource(replica) + inspect.getsource(deployment_state)
    for name in (*SERVE_COUNTERS, *SERVE_GAUGES, *SERVE_HISTOGRAMS):
        assert f'"{name}"' in source, f"Ray Serve defines no metric {name}"


def test_promql_metric_names_finds_only_metrics() -> None:
    """The extractor drops functions, grouping labels, label matchers and ranges."""
    expr = 'histogram_quantile(0.95, sum by (le, model) (rate(ray_x_bucket{a=~"$b"}[5m]))) / on() ray_y * 1024'
    assert promql_metric_names(expr) == {"ray_x_bucket", "ray_y"}


def test_dashboard_queries_only_metrics_that_exist() -> None:
    """Each expr names our exported series, Ray's node and component gauges or Serve's own series; every metric
    of ours has a panel, and Serve's requests, errors, latency and in-flight gauge and the reporter's per-process
    memory are read from Ray."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    datasource = next(v for v in dashboard["templating"]["list"] if v["name"] == "datasource")
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")

    ours, rays = metrics.exported_names(), ray_node_metric_names() | ray_serve_metric_names()
    used: set[str] = set()
    for expr in dashboard_exprs(dashboard):
        names = promql_metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= ours | rays, f"unknown metric(s) {names - ours - rays} in {expr!r}"
        used |= names

    for name in (*metrics.GAUGES, *metrics.COUNTERS):
        assert metrics.EXPORT_PREFIX + name in used, f"no panel shows {name}"
    for name in metrics.HISTOGRAMS:
        assert {f"{metrics.EXPORT_PREFIX}{name}_{suffix}" for suffix in ("bucket", "sum")} & used, name
    assert {"ray_node_gram_used", "ray_node_gpus_utilization", "ray_node_mem_used", "ray_component_rss_mb",
            "ray_component_gpu_memory_mb"} <= used
    assert ray_serve_metric_names() - {"ray_serve_deployment_processing_latency_ms_sum",
                                       "ray_serve_deployment_processing_latency_ms_count"} <= used


def test_dashboard_panels_use_the_datasource_variable() -> None:
    """Every panel and target reads from ``${datasource}``, so the import works on any Prometheus."""
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]
