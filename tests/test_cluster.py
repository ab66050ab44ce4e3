"""The production layout (configs/prod.yaml) on a simulated multi-node Ray cluster on this one machine.

``ray.cluster_utils.Cluster`` starts a head and worker "nodes" (each its own raylet) here. GPU workers
declare one logical GPU and each node type a custom resource; the models run on CPU, since the GPUs
exist only as numbers Ray schedules. The Serve config is derived from prod.yaml in ``test_layout`` and
deployed through Ray Serve's own config path (what ``serve run config.yaml`` does), so each deployment's
replica counts, ``num_gpus`` fractions and ``memory`` are prod's as Serve applies them.

Two things prod.yaml alone does not give, and this cluster sets (see ``CLUSTER_ENV`` and ``PINNED``):
Serve's default SPREAD scheduler spreads the Whisper replicas over the GPU nodes instead of packing four
onto one GPU, and nothing keeps CPU-only deployments off GPU nodes.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
import yaml
from ray import serve
from ray._common.utils import get_ray_address_file
from ray.cluster_utils import Cluster
from ray.serve._private import api as serve_api
from ray.serve.schema import ServeDeploySchema
from ray.util.state import list_actors

from benchmarks.support.harness import deployments, free_port, node_ports, started_once_more_if_timed_out
from deployments.settings import EMBEDDED
from tests.conftest import until

pytestmark = [pytest.mark.serve, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
GIB = 2**30
APP = "transcribe"
CLUSTER_ENV = {
    "RAY_AUTH_MODE": "disabled",  # Ray 2.60 turns token auth on for local clusters otherwise
    "RAY_USAGE_STATS_ENABLED": "0",
    # Serve's best-fit packing (largest GPU share first): without it, SPREAD scatters the Whisper replicas.
    "RAY_SERVE_USE_PACK_SCHEDULING_STRATEGY": "1",
}
PINNED = {"resources": {"cpu_node": 0.01}}
"""Added to CPU-only deployments' ray_actor_options: under packing they would otherwise fill the GPU nodes."""
TEST_MAX_TRANSCRIBERS = 6
"""prod's max_replicas (16) would need 4 GPUs and 16 model processes; two above min shows the scaling."""


@dataclass(frozen=True)
class NodeType:
    """What one kind of simulated node declares to Ray: logical CPUs, GPUs, memory and a type resource."""

    name: str
    num_cpus: int
    memory: int
    num_gpus: int = 0

    def args(self) -> dict[str, Any]:
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "memory": self.memory,
                "resources": {f"{self.name}_node": 1}, **node_ports()}


HEAD = NodeType("head", num_cpus=2, memory=2 * GIB)  # the Serve controller and the HTTP proxy only
GPU_WORKER = NodeType("gpu", num_cpus=16, num_gpus=1, memory=40 * GIB)  # 4 Transcribers × 8 GiB + an Embedder


def cpu_worker(config: dict[str, Any]) -> NodeType:
    """A CPU node whose declared memory is exactly what the CPU-only deployments ask for at their counts."""
    cpu_only = [d for d in deployments(config).values() if not gpu_share(d)]
    memory = sum(replica_count(d) * d["ray_actor_options"]["memory"] for d in cpu_only)
    return NodeType("cpu", num_cpus=16, memory=memory)


def prod_config() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "configs" / "prod.yaml").read_text())


def gpu_share(deployment: dict[str, Any]) -> float:
    return float(deployment.get("ray_actor_options", {}).get("num_gpus", 0))


def replica_count(deployment: dict[str, Any]) -> int:
    """``num_replicas``, or the autoscaling minimum."""
    return deployment.get("num_replicas") or deployment["autoscaling_config"]["min_replicas"]


def cpu_layout(port: int, store: Path) -> dict[str, Any]:
    """prod.yaml with the models on CPU, loopback HTTP, quick Whisper autoscaling and CPU-only work pinned.

    Replica counts, ``num_gpus`` and ``memory`` stay prod's. CPU-only deployments run at their prod minimum
    (their autoscaling is not under test, and each replica is a process on a 2-core machine).
    """
    config = prod_config()
    config["proxy_location"] = "HeadOnly"  # one proxy: the simulated nodes share this machine's address
    config["http_options"].update(host="127.0.0.1", port=port)
    args = config["applications"][0]["args"]
    args["ingress"].update(api_keys_file=None, rate_limit_per_minute=None)
    args["downloader"]["allow_private_networks"] = True
    transcriber = args["transcriber"]
    transcriber.update(device="cpu", compute_type="int8", cpu_threads=1,
                       models=dict.fromkeys(transcriber["models"], EMBEDDED))  # every name runs tiny.en's files
    args["embedder"]["device"] = "cpu"
    if "diarizer" in args:
        args["diarizer"]["device"] = "cpu"
    args["store"]["uri"] = str(store)  # one directory every simulated node can reach
    for deployment in deployments(config).values():
        if not gpu_share(deployment):
            deployment["num_replicas"] = replica_count(deployment)
            deployment.pop("autoscaling_config", None)
            deployment["ray_actor_options"].update(copy.deepcopy(PINNED))
    # prod scales at a full batch of windows per replica; a few clients on 2 cores never queue that many
    deployments(config)["Transcriber"]["autoscaling_config"].update(
        max_replicas=TEST_MAX_TRANSCRIBERS, upscale_delay_s=1, downscale_delay_s=5, look_back_period_s=2,
        metrics_interval_s=0.5, target_ongoing_requests=1)
    return config


@dataclass
class SimCluster:
    """The running simulated cluster, its dashboard (state API), node types by node id, the app's URL and config."""

    cluster: Cluster
    dashboard: str
    types: dict[str, NodeType]
    nodes: dict[str, Any]
    url: str
    config: dict[str, Any]
    temp_dir: Path


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[SimCluster]:
    """A head, a CPU worker and three GPU workers with the test layout deployed; all shut down after.

    Ray's logs stay in the cluster's temp dir when a test failed (its path is printed), else it is removed.
    """
    failed_before = request.session.testsfailed
    address_file = Path(get_ray_address_file(None))
    address_file.parent.mkdir(parents=True, exist_ok=True)  # Cluster writes its record there, and never makes it
    previous_address = read_address(address_file)
    temp_dir = tempfile.mkdtemp(prefix="rc-")  # short: Ray's socket paths live under it
    config = cpu_layout(free_port(), tmp_path_factory.mktemp("store"))
    dashboard_port = free_port()
    with pytest.MonkeyPatch.context() as env:
        for key, value in CLUSTER_ENV.items():
            env.setenv(key, value)
        for key in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):  # they would override the explicit addresses below
            env.delenv(key, raising=False)
        cluster, types, nodes = started_once_more_if_timed_out(lambda: launch(config, temp_dir, dashboard_port))
        try:
            ray.init(address=cluster.address, namespace="serve", logging_level="ERROR", log_to_driver=False)
            deploy(config)
            yield SimCluster(cluster, f"http://127.0.0.1:{dashboard_port}", types, nodes,
                             f"http://127.0.0.1:{config['http_options']['port']}", config, Path(temp_dir))
        finally:
            current = read_address(address_file)  # another cluster may have written it since
            keep = current if current not in (None, cluster.address) else previous_address
            shut_down(cluster)
            if keep is not None and not address_file.exists():
                address_file.write_text(keep)  # Cluster.shutdown deletes this machine's shared one
    if request.session.testsfailed == failed_before:
        shutil.rmtree(temp_dir, ignore_errors=True)
    else:
        print(f"\nthe simulated cluster's Ray logs: {temp_dir}/session_latest/logs")


def launch(config: dict[str, Any], temp_dir: str, dashboard_port: int
           ) -> tuple[Cluster, dict[str, NodeType], dict[str, Any]]:
    """The head and the four workers, with each node's type and handle by node id; shut down if one fails."""
    cluster = Cluster(initialize_head=True, head_node_args={
        **HEAD.args(), "temp_dir": temp_dir, "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": dashboard_port})
    try:
        types = {cluster.head_node.node_id: HEAD}
        handles = {cluster.head_node.node_id: cluster.head_node}
        for node_type in (cpu_worker(config), GPU_WORKER, GPU_WORKER, GPU_WORKER):
            node = cluster.add_node(**node_type.args())
            types[node.node_id], handles[node.node_id] = node_type, node
        cluster.wait_for_nodes()
    except BaseException:
        cluster.shutdown()
        raise
    return cluster, types, handles


def read_address(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def deploy(config: dict[str, Any]) -> None:
    """Start Serve and apply ``config`` the way ``serve run config.yaml`` does, then wait until it runs."""
    schema = ServeDeploySchema.model_validate(config)
    client = serve_api.serve_start(http_options=schema.http_options.model_dump(), proxy_location=schema.proxy_location)
    client.deploy_apps(schema)
    wait_running(300)


def shut_down(cluster: Cluster) -> None:
    """Serve, this driver, then every node, each step even when the one before failed. Serve is shut down only
    through this driver's connection: unconnected, ``serve.shutdown`` joins whichever local cluster it finds (the
    other pytest-xdist worker's app)."""
    try:
        if ray.is_initialized():
            serve.shutdown()
    finally:
        try:
            ray.shutdown()
        finally:
            cluster.shutdown()




def app_status() -> Any:
    return serve.status().applications.get(APP)


def wait_running(timeout_s: float) -> None:
    """Until the app is RUNNING with every deployment HEALTHY; fail at once if it cannot deploy."""
    def running() -> bool:
        status = app_status()
        if status is not None and status.status.value == "DEPLOY_FAILED":
            pytest.fail(f"the app failed to deploy: {status.message} {status.deployments}")
        return status is not None and status.status.value == "RUNNING" and all(
            d.status.value == "HEALTHY" for d in status.deployments.values())

    until(running, timeout_s, lambda: f"the app to be RUNNING: {app_status()}")


def running_replicas(deployment: str) -> int:
    states = app_status().deployments[deployment].replica_states
    return sum(n for state, n in states.items() if getattr(state, "value", state) == "RUNNING")


def total_replicas(deployment: str) -> int:
    return sum(app_status().deployments[deployment].replica_states.values())


@dataclass(frozen=True)
class Replica:
    """A live replica actor: its deployment, the node it runs on, and the resources Ray reserved for it."""

    deployment: str
    node_id: str
    resources: dict[str, float]


def replicas(sim: SimCluster) -> list[Replica]:
    """The app's live replica actors (``SERVE_REPLICA::<app>#<deployment>#<id>``), from Ray's state API.

    The address is explicit: without it the state API finds "the" cluster through a file that any other
    Ray cluster on this machine rewrites.
    """
    found = []
    for actor in list_actors(address=sim.dashboard, filters=[("state", "=", "ALIVE")], detail=True, limit=10_000):
        app, _, rest = (actor.name or "").removeprefix("SERVE_REPLICA::").partition("#")
        if actor.name and actor.name.startswith("SERVE_REPLICA::") and app == APP:
            found.append(Replica(rest.partition("#")[0], actor.node_id, dict(actor.required_resources or {})))
    return found


def on(deployment: str, found: list[Replica]) -> list[Replica]:
    return [r for r in found if r.deployment == deployment]


def alive_nodes() -> dict[str, dict[str, float]]:
    """Each alive node's declared resources, as Ray reports them."""
    return {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}


def assert_within_nodes(found: list[Replica], sim: SimCluster) -> None:
    """No node holds more CPU, GPU or memory than it declares, and CPU-only replicas stay off GPU nodes."""
    declared = alive_nodes()
    for node_id, resources in declared.items():
        for resource in ("CPU", "GPU", "memory"):
            used = sum(r.resources.get(resource, 0.0) for r in found if r.node_id == node_id)
            assert used <= resources.get(resource, 0.0) + 1e-9, f"{sim.types[node_id].name} {resource}: {used}"
    assert {r.node_id for r in found} <= set(declared), "a replica on a node that is gone"
    for replica in found:
        gpus = declared[replica.node_id].get("GPU", 0.0)
        assert (gpus > 0) == (replica.resources.get("GPU", 0.0) > 0), f"{replica} on a node with {gpus} GPUs"


def transcribe(url: str, audio: bytes) -> httpx.Response:
    return httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("clip.wav", audio)}, timeout=300)


def test_the_prod_layout_packs_whisper_onto_one_gpu_and_keeps_within_each_nodes_memory(
        sim: SimCluster, speech: dict[str, Path]) -> None:
    prod = deployments(prod_config())
    found = replicas(sim)
    for name, deployment in prod.items():
        options = deployment["ray_actor_options"]
        expected = {"CPU": options.get("num_cpus"), "GPU": options.get("num_gpus"), "memory": options.get("memory")}
        expected = {k: v for k, v in expected.items() if v}
        mine = on(name, found)
        assert len(mine) == replica_count(deployment), f"{name}: {len(mine)} replicas"
        assert all({k: r.resources.get(k) for k in expected} == expected for r in mine), f"{name}: {mine}"
    whisper_nodes = {r.node_id for r in on("Transcriber", found)}
    assert len(whisper_nodes) == 1, f"the Whisper replicas are spread over {len(whisper_nodes)} nodes"
    (whisper_node,) = whisper_nodes
    assert sim.types[whisper_node] is GPU_WORKER
    assert sum(r.resources["GPU"] for r in on("Transcriber", found)) == alive_nodes()[whisper_node]["GPU"] == 1
    (embedder,) = on("Embedder", found)
    assert sim.types[embedder.node_id] is GPU_WORKER and embedder.node_id != whisper_node, "1.1 GPUs on one GPU"
    cpu_only = [r for r in found if not r.resources.get("GPU")]
    assert {r.deployment for r in cpu_only} >= {"Ingress", "Downloader"}
    assert {sim.types[r.node_id].name for r in cpu_only} == {"cpu"}, "a CPU-only replica off the CPU node"
    assert_within_nodes(found, sim)
    cpu_node = next(n for n, t in sim.types.items() if t.name == "cpu")
    assert sum(r.resources["memory"] for r in cpu_only) == sim.types[cpu_node].memory, "the CPU node filled exactly"
    response = transcribe(sim.url, speech["cooking"].read_bytes())
    assert response.status_code == 200 and "onions" in response.json()["text"].lower(), response.text


def run_preflight(config: dict[str, Any], tmp_path: Path, address: str) -> subprocess.CompletedProcess:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([sys.executable, "-m", "serve_app.cli", "check", str(path), "--address", address],
                          cwd=ROOT, capture_output=True, text=True, timeout=180,
                          env={k: v for k, v in {**os.environ, **CLUSTER_ENV}.items() if k != "RAY_ADDRESS"})


def test_the_preflight_passes_the_layout_and_reports_one_that_needs_more_gpus(
        sim: SimCluster, tmp_path: Path) -> None:
    fits = run_preflight(sim.config, tmp_path, sim.cluster.address)
    assert fits.returncode == 0 and "ok: nothing is missing" in fits.stdout, fits.stdout + fits.stderr
    at_max, prod = copy.deepcopy(sim.config), deployments(prod_config())
    for name, deployment in deployments(at_max).items():  # every deployment at prod's max_replicas
        deployment.pop("autoscaling_config", None)
        deployment["num_replicas"] = prod[name].get("autoscaling_config", {}).get("max_replicas") or replica_count(
            prod[name])
    wanted = sum(d["num_replicas"] * d["ray_actor_options"].get("num_gpus", 0) for d in deployments(at_max).values())
    have = sum(n.get("GPU", 0.0) for n in alive_nodes().values())
    assert wanted > have, "the test needs a config past the cluster's GPUs"
    report = run_preflight(at_max, tmp_path, sim.cluster.address)
    assert report.returncode == 1, report.stdout + report.stderr
    assert f"  - GPU: the config needs {wanted:g} " in report.stdout, report.stdout
    assert f"the cluster has {have:g}\n" in report.stdout, report.stdout


def test_sustained_load_scales_whisper_up_to_max_and_idleness_back_to_min(
        sim: SimCluster, speech: dict[str, Path]) -> None:
    autoscaling = deployments(sim.config)["Transcriber"]["autoscaling_config"]
    low, high = autoscaling["min_replicas"], autoscaling["max_replicas"]
    until(lambda: total_replicas("Transcriber") == low, 120, "the Whisper replicas to be at min")
    audio = speech["cooking"].read_bytes()
    statuses: list[int] = []
    done = threading.Event()

    def client() -> None:
        while not done.is_set():
            statuses.append(transcribe(sim.url, audio).status_code)

    with ThreadPoolExecutor(3 * low) as pool:
        clients = [pool.submit(client) for _ in range(3 * low)]
        try:  # the replicas as they are when the count reaches max, before idleness takes it down again
            found = until(lambda: running_replicas("Transcriber") >= high and replicas(sim), 150,
                          lambda: f"{high} Whisper replicas under load: {app_status().deployments['Transcriber']}")
        finally:
            done.set()
            for each in clients:
                each.result()
    assert len(on("Transcriber", found)) == high
    assert_within_nodes(found, sim)
    assert statuses and set(statuses) == {200}, (f"answers under load: {sorted(statuses)}; the replicas' tracebacks "
                                                 f"are in {sim.temp_dir}/session_latest/logs")
    until(lambda: total_replicas("Transcriber") == low and running_replicas("Transcriber") == low, 120,
          lambda: f"the Whisper replicas back at {low} (at {app_status().deployments['Transcriber'].replica_states})")


def test_a_gpu_node_lost_mid_batch_answers_200_or_503_and_its_replicas_return_elsewhere(
        sim: SimCluster, speech: dict[str, Path]) -> None:
    wait_running(120)
    low = deployments(sim.config)["Transcriber"]["autoscaling_config"]["min_replicas"]
    whisper = on("Transcriber", replicas(sim))
    assert whisper, "no Whisper replica to lose"
    victim = max({r.node_id for r in whisper}, key=lambda n: sum(r.node_id == n for r in whisper))
    audio = speech["lecture"].read_bytes()
    with ThreadPoolExecutor(4 * low) as pool:
        batch = [pool.submit(transcribe, sim.url, audio) for _ in range(4 * low)]
        until(lambda: any(f.done() for f in batch), 180, "the batch to start finishing")
        in_flight = sum(not f.done() for f in batch)
        sim.cluster.remove_node(sim.nodes.pop(victim), allow_graceful=False)  # a crash, not a drain
        answers = [f.result() for f in batch]
    assert in_flight > 0, "the node went after the batch had finished"
    codes = [a.status_code for a in answers]
    assert set(codes) <= {200, 503}, (f"{codes}; the replicas' tracebacks are in {sim.temp_dir}/session_latest/logs: "
                                      f"{[a.text[:200] for a in answers if a.status_code not in (200, 503)]}")
    for answer in answers:
        if answer.status_code == 503:
            assert answer.headers.get("retry-after") and answer.json()["error"]["code"] == "overloaded", answer.text
    print(f"batch of {len(codes)}, {in_flight} in flight at the removal: {codes.count(200)} × 200, "
          f"{codes.count(503)} × 503")

    def recovered() -> bool:
        back = on("Transcriber", replicas(sim))
        return running_replicas("Transcriber") >= low and len(back) >= low and victim not in {r.node_id for r in back}

    until(recovered, 240, lambda: f"{low} Whisper replicas on the other nodes: {app_status().deployments}")
    wait_running(120)
    until(lambda: victim not in alive_nodes(), 120, "the GCS to mark the removed node dead")
    assert_within_nodes(replicas(sim), sim)
    after = [transcribe(sim.url, audio) for _ in range(2)]
    assert [a.status_code for a in after] == [200, 200], [a.text[:200] for a in after]
    assert "water" in after[0].json()["text"].lower()
