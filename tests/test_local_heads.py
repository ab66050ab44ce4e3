"""Two of the harness's clusters side by side, as pytest-xdist's two workers run them: neither takes the other's
ports, so each serves its dashboard agent and its client server (Ray's defaults, 52365 and 10001, are one port
for every node on a machine)."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from benchmarks.support.harness import START_TIMED_OUT, LaunchError, local_head, started_once_more_if_timed_out
from tests.conftest import until

SERVED = ("dashboard_agent_listen_port", "ray_client_server_port")


def listening(pid: int, port: int) -> bool:
    """Whether a process of the cluster led by ``pid`` listens on ``port``."""
    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        try:
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in proc.net_connections("tcp")):
                return True
        except psutil.NoSuchProcess:
            continue
    return False


def test_two_clusters_at_once_each_serve_their_agent_and_client_server_on_ports_of_their_own(tmp_path: Path) -> None:
    with local_head(tmp_path / "a") as first, local_head(tmp_path / "b") as second:
        for name in SERVED:
            assert first.ports[name] != second.ports[name]
            for pid, port in ((first.pid, first.ports[name]), (second.pid, second.ports[name])):
                until(lambda pid=pid, port=port: listening(pid, port), 90, f"the cluster of {pid} to serve {name}")


def test_a_start_ray_gave_up_on_is_tried_once_more_and_any_other_failure_is_not() -> None:
    """The retry that ``local_head`` and the simulated cluster share: one more start after a timed-out one, no more."""
    calls: list[str] = []

    def failing(message: str) -> None:
        calls.append(message)
        raise LaunchError(message)

    with pytest.raises(LaunchError, match=START_TIMED_OUT):
        started_once_more_if_timed_out(lambda: failing(f"the raylet {START_TIMED_OUT}"))
    assert len(calls) == 2, calls
    calls.clear()
    with pytest.raises(LaunchError, match="port in use"):
        started_once_more_if_timed_out(lambda: failing("port in use"))
    assert calls == ["port in use"]
    outcomes = iter([f"the raylet {START_TIMED_OUT}", None])

    def flaky() -> str:
        if message := next(outcomes):
            raise LaunchError(message)
        return "started"

    assert started_once_more_if_timed_out(flaky) == "started"
