"""Running the real app locally on free ports: a Ray head (``ray start --block``) and ``serve run``.

Shared by the tests and the benchmarks, so both measure the app exactly as ``serve run`` deploys it;
a driver can attach to ``ray_address`` to read replica figures or kill a replica.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from serve_app.preflight import needs

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


LOCAL_RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Ray 2.60 drains a node on SIGTERM for up to 30 s, so that a Kubernetes pod's proxies stop routing to it first;
    # a cluster of this machine alone has nobody to drain for, and stopping one took 33 s instead of 3.
    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
}
"""What every local cluster here runs with (the Makefile's settings for ``make serve`` as well as the drain)."""


class LaunchError(RuntimeError):
    """The cluster or the app did not come up; the message ends with the relevant log."""


@dataclass
class LocalApp:
    """A running app: its base URL, its Ray cluster's addresses, and its log file."""

    url: str
    ray_address: str
    dashboard_url: str
    log: Path
    head_pid: int
    """The ``ray start --block`` process: every process of this cluster descends from it."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


NODE_PORTS = {"dashboard_agent_listen_port": "--dashboard-agent-listen-port",
              "metrics_agent_port": "--dashboard-agent-grpc-port", "metrics_export_port": "--metrics-export-port",
              "runtime_env_agent_port": "--runtime-env-agent-port",
              "ray_client_server_port": "--ray-client-server-port"}
"""Ports a Ray node picks for its agents and its client server unless given, by ``Cluster.add_node``'s names and
``ray start``'s. Two are fixed (52365, 10001), so a second cluster on this machine cannot bind them; and a raylet
not given its agents' ports waits 15 s for them to write theirs, then aborts (seen beside another test's app on
2 cores, where the dashboard agent took 21 s to import)."""


def node_ports() -> dict[str, int]:
    """A free port for each of ``NODE_PORTS``."""
    return {name: free_port() for name in NODE_PORTS}


def load_config(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def deployments(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The deployments of ``config``'s (first) application by name: the entries themselves, to read or change."""
    return {d["name"]: d for d in config["applications"][0]["deployments"]}


def _tail(log: Path) -> str:
    return log.read_text()[-4000:] if log.exists() else ""


STARTED = "Ray runtime started."
"""What ``ray start`` logs once its node has registered with the GCS."""
START_TIMED_OUT = "timed out during startup"
"""Ray's words when its raylet did not register within its fixed 30 s: seen on 2 cores beside another app."""
T = TypeVar("T")


def wait_until_started(proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    """Until ``ray start`` logs that its node is up; raise with the log if it exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.exists() and STARTED in log.read_text():
            return
        if proc.poll() is not None:
            raise LaunchError(f"{proc.args[:2]} exited with {proc.returncode}:\n{_tail(log)}")
        time.sleep(0.5)
    raise LaunchError(f"ray start did not finish after {timeout_s}s:\n{_tail(log)}")


def wait_until_running(url: str, proc: subprocess.Popen | None, log: Path, timeout_s: float) -> None:
    """Poll /healthz until every deployment is up; raise with the log if ``proc`` dies first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise LaunchError(f"serve run exited with {proc.returncode}:\n{_tail(log)}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).json().get("status") == "RUNNING":
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(1)
    raise LaunchError(f"the app was not RUNNING after {timeout_s}s:\n{_tail(log)}")


@dataclass
class Spawned:
    """A process leading its own process group, and the reaper that ends that group if this process dies."""

    proc: subprocess.Popen
    reaper: subprocess.Popen


def _spawn(command: list[str], log: Path, head_address: str | None = None) -> Spawned:
    """``command`` in a new session (a terminal's Ctrl-C reaches pytest, whose teardown stops it), with a reaper.

    For a Ray head, ``head_address`` is its GCS address: the reaper then also removes Ray's record of it.
    """
    from ray._common.utils import get_ray_address_file

    env = {**os.environ, **LOCAL_RAY_ENV}
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    forget = ["--forget", get_ray_address_file(None), head_address] if head_address else []
    reaper = subprocess.Popen([sys.executable, "-m", "benchmarks.support.reaper", str(proc.pid), *forget],
                              cwd=ROOT, env=env, stdin=subprocess.PIPE, start_new_session=True)
    return Spawned(proc, reaper)


def stop(spawned: Spawned) -> None:
    """TERM the process group (a backgrounded ``serve run`` ignores SIGINT), KILL it if it lingers; then the reaper."""
    proc = spawned.proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert spawned.reaper.stdin is not None
    spawned.reaper.stdin.close()  # end-of-file: the reaper ends whatever of the group outlived its leader
    spawned.reaper.wait()


@dataclass
class LocalHead:
    """A running Ray head: its GCS address, its dashboard, and the ``ray start --block`` process's pid."""

    address: str
    dashboard_url: str
    pid: int
    """Every process of this cluster descends from it."""
    ports: dict[str, int]
    """The ports its node was given (``NODE_PORTS``)."""


def started_once_more_if_timed_out(start: Callable[[], T]) -> T:
    """``start()``, called once more when Ray gave up on a start under load (``START_TIMED_OUT``: a raylet missed
    Ray's fixed 30 s to register). A failed ``start`` cleans up after itself, so the second is a new cluster."""
    try:
        return start()
    except Exception as error:
        if START_TIMED_OUT not in str(error):
            raise
    return start()


@contextmanager
def local_head(folder: Path, num_cpus: int = 2, num_gpus: int | None = None,
               memory: int | None = None) -> Iterator[LocalHead]:
    """A Ray head on free ports, its node up, that is gone, with Ray's record of it, once the block ends or this
    process dies. A start Ray gave up on under load (``START_TIMED_OUT``) is tried once more, on new ports.

    ``memory`` (bytes) is its logical memory; without it Ray offers what the machine had free at the start.
    Its record goes where Ray puts it (``RAY_TMPDIR``, which tests/conftest.py points at a folder of its own).
    """
    folder.mkdir(parents=True, exist_ok=True)
    resources = [f"--num-cpus={num_cpus}"]
    if num_gpus is not None:
        resources.append(f"--num-gpus={num_gpus}")
    if memory:
        resources.append(f"--memory={memory}")
    ray_log = folder / "ray.log"

    def start() -> tuple[Spawned, str, int, dict[str, int]]:
        gcs_port, dashboard_port = free_port(), free_port()
        address = f"127.0.0.1:{gcs_port}"
        ports = node_ports()
        head = _spawn([str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs_port}",
                       f"--dashboard-port={dashboard_port}", "--dashboard-host=127.0.0.1", *resources,
                       *(f"{NODE_PORTS[name]}={port}" for name, port in ports.items())], ray_log, head_address=address)
        try:
            wait_until_started(head.proc, ray_log, timeout_s=180)
        except BaseException:
            stop(head)
            raise
        return head, address, dashboard_port, ports

    head, address, dashboard_port, ports = started_once_more_if_timed_out(start)
    try:
        yield LocalHead(address, f"http://127.0.0.1:{dashboard_port}", head.proc.pid, ports)
    finally:
        stop(head)


@contextmanager
def local_app(config: dict, folder: Path, num_cpus: int = 2, num_gpus: int | None = None,
              timeout_s: float = 420) -> Iterator[LocalApp]:
    """Run ``config`` (a Serve config dict) on a fresh local cluster; its HTTP port is replaced by a free one.

    The cluster offers the memory the config's replicas ask for (``declared_memory``), as it is told its CPUs:
    sized from what was free, a head started while another test's app ran could not place them all (CI).
    """
    port = free_port()
    config = {**config, "http_options": {**config.get("http_options", {}), "host": "127.0.0.1", "port": port}}
    with local_head(folder, num_cpus, num_gpus, memory=declared_memory(config)) as head:
        config_path = folder / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        log = folder / "serve.log"
        serve = _spawn([str(BIN / "serve"), "run", f"--address={head.address}", str(config_path)], log)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_running(url, serve.proc, log, timeout_s=timeout_s)
            yield LocalApp(url=url, ray_address=head.address, dashboard_url=head.dashboard_url, log=log,
                           head_pid=head.pid)
        finally:
            stop(serve)


def declared_memory(config: dict[str, Any]) -> int:
    """Bytes of Ray's logical memory that every replica of ``config``'s applications asks for, at their start."""
    return int(sum(need.replicas * need.per_replica["memory"]
                   for app in config["applications"] for need in needs(app)))


def gpu_config(config: dict[str, Any]) -> dict[str, Any]:
    """The GPU mode: four Whisper replicas at 0.2 GPU and the embedder at 0.1 on one card, tiny.en in fp16.

    Batching is prod's: 16 windows a batch, 32 in a replica, one request's windows over all replicas.
    """
    app = config["applications"][0]
    app["args"]["transcriber"].update(device="cuda", compute_type="float16", max_batch_size=16)
    app["args"]["embedder"]["device"] = "cuda"
    app["args"]["downloader"]["windows_in_flight"] = 16
    by_name = deployments(config)
    by_name["Transcriber"].update(num_replicas=4, max_ongoing_requests=32, max_queued_requests=256)
    by_name["Transcriber"].setdefault("ray_actor_options", {}).update(num_gpus=0.2, num_cpus=0.5)
    by_name["Embedder"].setdefault("ray_actor_options", {})["num_gpus"] = 0.1
    return config


def benchmark_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """A benchmark's command line with the options they all take: ``--config`` and ``--out``."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=doc.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "local.yaml"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    return parser


def benchmark_config(path: str, scratch: Path) -> dict:
    """The Serve config at ``path`` with its store in ``scratch``, after making TERM stop this process cleanly.

    A TERM then still stops the cluster the benchmark started, and the user's own store is never written.
    """
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    config = load_config(Path(path))
    config["applications"][0]["args"]["store"]["uri"] = str(scratch / "store")
    return config
