"""Preflight: compare what a Serve config asks for with a running Ray cluster, before deploying it.

A deployment that asks for a GPU on a cluster without one waits forever without an error; this says
what is missing instead — GPUs, CPUs, memory, a node big enough for one replica, model files, and on
every node the secret files the config names and Ray's auth token. ``--gpu`` runs the CUDA stack's
checks (``deployments.cuda_stack``) in a task on each GPU node.
"""

from __future__ import annotations

import importlib
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from deployments.model_assembly import ASSEMBLED, assembled_location
from deployments.settings import EMBEDDED, DiarizerSettings
from serve_app.settings import AppSettings

RESOURCES = ("CPU", "GPU", "memory")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
GPU_CHECK_SHARE = 0.01
"""The GPU a check task asks for: enough to be placed on a GPU node and see its device, little enough to fit."""


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
    if value.startswith(ASSEMBLED):
        try:
            assembled_location(value)
        except (FileNotFoundError, ValueError) as missing:
            return f"{key}: {missing}"
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
    """Model files the config names that this node does not have."""
    problems = [
        _model_problem(f"transcriber.models.{name}", value, settings.transcriber.download_root)
        for name, value in settings.transcriber.models.items()
    ]
    embedder_path = settings.embedder.model_path
    if embedder_path != EMBEDDED and not Path(embedder_path).exists():
        problems.append(f"embedder.model_path: {embedder_path} does not exist on this node")
    problems += diarizer_problems(settings.diarizer)
    return [p for p in problems if p]


def diarizer_problems(diarizer: DiarizerSettings | None) -> list[str]:
    """A diarizer engine that does not import here, or a model directory this node does not have."""
    if diarizer is None:
        return []
    module, _, name = diarizer.engine.partition(":")
    try:
        found = hasattr(importlib.import_module(module), name)
    except ImportError as error:
        return [f"diarizer.engine: {module} does not import ({error})"]
    problems = [] if found else [f"diarizer.engine: {module} has no {name!r}"]
    if diarizer.model_dir is not None and not Path(diarizer.model_dir).expanduser().exists():
        problems.append(f"diarizer.model_dir: {diarizer.model_dir} does not exist on this node")
    return problems


def secret_files(settings: AppSettings) -> dict[str, str]:
    """The secret files the config names, by key: every node an Ingress or Downloader may land on needs them."""
    named = (("downloader.cookies_file", settings.downloader.cookies_file),
             ("ingress.api_keys_file", settings.ingress.api_keys_file))
    return {key: value for key, value in named if value}


def open_to_network(config: dict[str, Any]) -> bool:
    """Whether the config's HTTP proxy listens beyond loopback (then Ray's own ports must be guarded too)."""
    return str((config.get("http_options") or {}).get("host", "127.0.0.1")) not in LOOPBACK


def auth_problems(env: Mapping[str, str], home: Path) -> list[str]:
    """Ray's token authentication on a node: on, with a token where Ray 2.60 looks for one."""
    mode = env.get("RAY_AUTH_MODE")
    if mode != "token":
        return [f"Ray token authentication is off (RAY_AUTH_MODE={mode or 'unset'}): a cluster reachable from a "
                "network needs RAY_AUTH_MODE=token and one token on every node (cluster.yaml: make cluster-secrets)"]
    token_file = Path(env.get("RAY_AUTH_TOKEN_PATH") or home / ".ray" / "auth_token")
    if env.get("RAY_AUTH_TOKEN") or token_file.is_file():
        return []
    return [f"Ray token authentication is on but this node has no token (RAY_AUTH_TOKEN unset, {token_file} missing)"]


def node_report(secrets: dict[str, str], guarded: bool) -> list[str]:
    """What the node this runs on lacks: the named secret files, and with ``guarded`` a Ray auth token."""
    problems = [f"{key}: {value} does not exist on this node" for key, value in secrets.items()
                if not Path(value).is_file()]
    return problems + (auth_problems(os.environ, Path.home()) if guarded else [])


@dataclass
class Cluster:
    """What the preflight read from a running cluster: its nodes' resources and what each node lacks."""

    nodes: list[dict[str, float]]
    node_problems: dict[str, list[str]] = field(default_factory=dict)
    gpu_lines: dict[str, list[Any]] | None = None
    """Per GPU node, the CUDA stack's check lines (``deployments.cuda_stack.Line``); None unless asked for."""


def check(config: dict[str, Any], cluster: Cluster | None) -> list[str]:
    """Every problem found in ``config``: on this node alone, or against ``cluster``'s nodes when one is given."""
    problems = []
    for app in config.get("applications", []):
        try:
            settings = AppSettings.model_validate(app.get("args", {}))
        except ValidationError as error:
            problems += [f"args.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()]
            continue
        problems += file_problems(settings)
        if cluster is None:
            problems += node_report(secret_files(settings), open_to_network(config))
        else:
            problems += placement_problems(needs(app), cluster.nodes)
    if cluster is not None:
        problems += [f"node {node}: {problem}" for node, found in cluster.node_problems.items() for problem in found]
    return list(dict.fromkeys(problems))


def gpu_problems(lines: dict[str, list[Any]] | None) -> list[str]:
    """The GPU checks that failed, one problem each, or that no GPU node answered; none when not asked for."""
    if lines is None:
        return []
    if not lines:
        return ["GPU checks: the cluster has no GPU node to run them on"]
    return [f"node {node}: GPU check '{line.name}' failed: {line.detail}"
            for node, found in lines.items() for line in found if not line.ok]


def gpu_report(lines: dict[str, list[Any]]) -> str:
    """The GPU checks as the command prints them: each node, then its named lines."""
    return "\n".join(f"GPU node {node}:\n" + "\n".join(f"  {line}" for line in found) for node, found in lines.items())


def local_gpu_lines() -> dict[str, list[Any]]:
    """The CUDA stack's check lines of this machine, as ``inspect_cluster`` gives them per GPU node."""
    from deployments.cuda_stack import node_checks

    return {f"{socket.gethostname()} (this machine)": node_checks()}


class NoCluster(RuntimeError):
    """No Ray cluster answers at the address given, or at the one Ray resolved it to."""


def answering_address(address: str, timeout_s: float = 3.0) -> str:
    """``address`` as Ray resolves it ("auto": ``RAY_ADDRESS``, Ray's record of the latest cluster, a running
    one), once something listens there; else NoCluster at once, where ``ray.init`` would wait on a dead head."""
    from ray._common.utils import get_ray_address_file
    from ray._private.services import get_ray_address_from_environment

    try:
        resolved = get_ray_address_from_environment(address, None)
    except ConnectionError as error:
        raise NoCluster(str(error)) from None
    if "://" in resolved:  # a Ray Client address: ray.init reports on it itself
        return resolved
    host, _, port = resolved.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except (OSError, ValueError):
        record = get_ray_address_file(None)
        origin = f" (from {record}, left by a cluster that has stopped)" if resolved != address else ""
        raise NoCluster(f"no Ray cluster answers at {resolved}{origin}: start one (`ray start --head`) "
                        "or pass --address") from None
    return resolved


def inspect_cluster(address: str, config: dict[str, Any], gpu: bool, timeout_s: float = 300) -> Cluster:
    """The running cluster at ``address``: resources, a task on every node for its files and token, and with
    ``gpu`` a task on every GPU node for its CUDA stack."""
    import ray

    from deployments.cuda_stack import Line, node_checks

    secrets = {key: value for app in config.get("applications", []) for key, value in _secrets_of(app).items()}
    ray.init(address=answering_address(address), logging_level="ERROR", log_to_driver=False)
    try:
        alive = [node for node in ray.nodes() if node.get("Alive")]
        reports = {node["NodeManagerAddress"]: _task_on(node, node_report, num_cpus=0).remote(
            secrets, open_to_network(config)) for node in alive}
        gpu_nodes = [node for node in alive if gpu and node["Resources"].get("GPU", 0) > 0]
        checks = {node["NodeManagerAddress"]: _task_on(node, node_checks, num_cpus=0, num_gpus=GPU_CHECK_SHARE)
                  .remote() for node in gpu_nodes}
        refs = [*reports.values(), *checks.values()]
        ready = set(ray.wait(refs, num_returns=len(refs), timeout=timeout_s)[0])
        node_problems = {}
        for node, ref in reports.items():
            if found := ray.get(ref) if ref in ready else ["did not answer the preflight's task"]:
                node_problems[node] = found
        late = Line("scheduled", False, f"no GPU share of {GPU_CHECK_SHARE} came free within {timeout_s:.0f} s "
                    "(do the replicas hold all of it? run the check before `serve deploy`)")
        gpu_lines = {node: ray.get(ref) if ref in ready else [late] for node, ref in checks.items()}
        return Cluster([dict(node["Resources"]) for node in alive], node_problems, gpu_lines if gpu else None)
    finally:
        ray.shutdown()


def _task_on(node: dict[str, Any], function: Any, **resources: float) -> Any:
    """``function`` as a Ray task that runs on ``node`` and nowhere else."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return ray.remote(**resources)(function).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))


def _secrets_of(app: dict[str, Any]) -> dict[str, str]:
    """The secret files an application's args name; none when the args do not validate (``check`` says why)."""
    try:
        return secret_files(AppSettings.model_validate(app.get("args", {})))
    except ValidationError:
        return {}
