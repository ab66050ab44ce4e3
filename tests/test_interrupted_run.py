"""A run killed part-way leaves nothing behind that a later `make serve`, `make test` or `ray.init()` trips on.

The harness's clusters die with the process that started them (``benchmarks.support.reaper``), Ray's record of
the latest cluster goes with them, and the CLI says at once that a recorded cluster is dead instead of waiting.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from ray._common.utils import get_ray_address_file

from benchmarks.support.harness import BIN, ROOT, free_port
from serve_app import preflight
from tests.conftest import until

HOLD_A_HEAD = """
import sys
from pathlib import Path
from benchmarks.support.harness import local_head
with local_head(Path(sys.argv[1])) as head:
    print(head.address, head.pid, flush=True)
    sys.stdin.read()  # held until the test kills this process
"""


def group(pgid: int) -> list[psutil.Process]:
    """The live processes of process group ``pgid``."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                found.append(proc)
        except (psutil.NoSuchProcess, ProcessLookupError):
            continue
    return found


def test_a_killed_run_takes_its_cluster_and_its_record_with_it(tmp_path: Path) -> None:
    """KILL, as a CI timeout or the OOM killer sends it: the starter runs no teardown at all."""
    starter = subprocess.Popen([sys.executable, "-c", HOLD_A_HEAD, str(tmp_path)], cwd=ROOT, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert starter.stdout is not None
    address, pid = starter.stdout.readline().split()
    head = int(pid)
    record, port = Path(get_ray_address_file(None)), address.rpartition(":")[2]

    def recorded() -> bool:
        """Whether Ray's record names this head (Ray may write the node's own IP address, so by port)."""
        return record.exists() and record.read_text().strip().rpartition(":")[2] == port

    until(recorded, 60, f"`ray start` to record {address} in {record}")  # written as its node starts
    assert len(group(head)) > 1, "the head runs a GCS and a raylet beside `ray start`"
    starter.send_signal(signal.SIGKILL)  # only the reaper is left to clean up
    starter.wait(timeout=30)
    until(lambda: not group(head), 60, lambda: f"the head's processes to end: {group(head)}")
    until(lambda: not recorded(), 30, f"{record} to stop naming the dead head {address}")


def test_check_says_at_once_that_nothing_answers_at_the_address() -> None:
    dead = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    run = subprocess.run([str(BIN / "transcribe-serve"), "check", "configs/local.yaml", "--address", dead],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"no Ray cluster answers at {dead}" in run.stderr
    assert time.monotonic() - started < 30, "it does not wait on the dead address"


def test_a_stale_record_is_named_instead_of_waited_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no Ray running, "auto" reads Ray's record: one left by a stopped cluster is reported, not joined."""
    from ray._private import services

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(services, "find_gcs_addresses", lambda: [])  # the suite's own clusters may be running
    record = Path(get_ray_address_file(None))
    record.parent.mkdir(parents=True)
    record.write_text(f"127.0.0.1:{free_port()}")
    with pytest.raises(preflight.NoCluster, match=f"from {record}, left by a cluster that has stopped"):
        preflight.answering_address("auto")
