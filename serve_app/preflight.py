"""Preflight: compare what a Serve config asks for with a running Ray cluster, before deploying it.

A deployment that asks for a GPU on a cluster without one waits forever without an error; this says
what is missing instead — GPUs, CPUs, memory, a node big enough for one replica, model files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from serve_app.settings import EMBEDDED, AppSettings

RESOURCES = ("CPU", "GPU", "memory")


@dataclass(frozen=True)
class Need:
    """What one deployment's replicas ask Ray for: count × per-replica resources."""

    deployment: str
    replicas: int
    per_replica: dict[str, float]


def needs(app: dict[str, Any]) -> list[Need]:
    """Per-deployment needs at the minimum replica count (``num_replicas`` or ``min_replicas``)."""
    result = []
    for deployment in app.get("deployments", []):
        autoscaling = deployment.get("autoscaling_config") or {}
        replicas = deployment.get("num_replicas", autoscaling.get("min_replicas", 1))
        options = deployment.get("ray_actor_options") or {}
        per_replica = {"CPU": float(options.get("num_cpus", 1)), "GPU": float(options.get("num_gpus", 0)),
                       "memory": float(options.get("memory", 0))}
        result.append(Need(deployment["name"], int(replicas) if replicas != "auto" else 1, per_replica))
    return result


def _human(resource: str, value: float) -> str:
    return f"{value / 2**30:.1f} GiB" if resource == "memory" else f"{value:g}"


def placement_problems(wanted: list[Need], nodes: list[dict[str, float]]) -> list[str]:
    """What cannot be placed: totals past the cluster's, and replicas no single node can hold.

    Replicas are packed first-fit, largest GPU share first, the way Ray must place them: a replica's
    resources all come from one node.
    """
    problems = []
    for resource in RESOURCES:
        total = sum(n.replicas * n.per_replica[resource] for n in wanted)
        have = sum(node.get(resource, 0.0) for node in nodes)
        if total > have + 1e-9:
            parts = ", ".join(f"{n.deployment} {n.replicas} × {_human(resource, n.per_replica[resource])}"
                              for n in wanted if n.per_replica[resource])
            problems.append(f"{resource}: the config needs {_human(resource, total)} ({parts}); "
                            f"the cluster has {_human(resource, have)}")
    free = [dict(node) for node in nodes]
    replicas = [(n.deployment, n.per_replica) for n in wanted for _ in range(n.replicas)]
    for name, per_replica in sorted(replicas, key=lambda r: (-r[1]["GPU"], -r[1]["CPU"], -r[1]["memory"])):
        node = next((f for f in free if all(f.get(r, 0.0) + 1e-9 >= per_replica[r] for r in RESOURCES)), None)
        if node is None:
            wants = ", ".join(f"{r} {_human(r, v)}" for r, v in per_replica.items() if v)
            problems.append(f"{name}: no node has room for a replica ({wants})")
            continue
        for resource in RESOURCES:
            node[resource] = node.get(resource, 0.0) - per_replica[resource]
    return list(dict.fromkeys(problems))


def _model_problem(key: str, value: str, download_root: str | None) -> str | None:
    if value == EMBEDDED:
        return None
    path = Path(value).expanduser()
    if value.startswith((".", "/", "~")):
        return None if path.exists() else f"{key}: {value} does not exist on this node"
    if download_root is None:
        return f"{key}: {value!r} is not on disk; it would be downloaded from the hub at start-up"
    from faster_whisper.utils import _MODELS

    repo = _MODELS.get(value, value)
    cached = Path(download_root) / f"models--{repo.replace('/', '--')}"
    return None if cached.exists() else f"{key}: {value!r} is not in {download_root}; it would be downloaded"


def file_problems(settings: AppSettings) -> list[str]:
    """Model and secret files the config names that this node does not have."""
    problems = [
        _model_problem(f"transcriber.models.{name}", value, settings.transcriber.download_root)
        for name, value in settings.transcriber.models.items()
    ]
    embedder_path = settings.embedder.model_path
    if embedder_path != EMBEDDED and not Path(embedder_path).exists():
        problems.append(f"embedder.model_path: {embedder_path} does not exist on this node")
    for key, value in (("downloader.cookies_file", settings.downloader.cookies_file),
                       ("ingress.api_keys_file", settings.ingress.api_keys_file)):
        if value and not Path(value).is_file():
            problems.append(f"{key}: {value} does not exist on this node")
    return [p for p in problems if p]


def check(config: dict[str, Any], nodes: list[dict[str, float]] | None) -> list[str]:
    """Every problem found in ``config`` (against ``nodes`` when a cluster is given)."""
    problems = []
    for app in config.get("applications", []):
        try:
            settings = AppSettings.model_validate(app.get("args", {}))
        except ValidationError as error:
            problems += [f"args.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()]
            continue
        problems += file_problems(settings)
        if nodes is not None:
            problems += placement_problems(needs(app), nodes)
    return problems


def cluster_nodes(address: str) -> list[dict[str, float]]:
    """The alive nodes' total resources of the running cluster at ``address``."""
    import ray

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        return [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]
    finally:
        ray.shutdown()
