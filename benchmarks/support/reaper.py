"""Ends a local cluster when the process that started it dies, however it dies (Ctrl-C, TERM, KILL, a timeout).

``python -m benchmarks.support.reaper PGID [--forget RECORD ADDRESS]`` blocks on its standard input, a pipe
whose other end only the starting process holds. The kernel closes that end when the process exits, so
end-of-file means it is gone: the reaper then ends the process group it was given and, for a Ray head,
removes Ray's "current cluster" RECORD if it still names ADDRESS's port, so that no later ``ray.init()`` or
``serve run`` waits on the dead head. A normal stop ends the group first, and the reaper finds nothing left.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

GRACE_S = 10.0
"""How long a group gets after TERM (Ray's processes shut down on it) before KILL."""


def alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is left."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def end_groups(pgids: list[int], grace_s: float = GRACE_S) -> None:
    """TERM every group still alive, then KILL those that outlive ``grace_s``."""
    for pgid in filter(alive, pgids):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(map(alive, pgids)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pgid in filter(alive, pgids):
        os.killpg(pgid, signal.SIGKILL)


def forget(record: Path, address: str) -> None:
    """Remove Ray's record of the latest cluster if it is ``address``'s (another cluster may have written it since).

    Ports are compared: Ray may record the node's own IP address where the harness used 127.0.0.1.
    """
    try:
        if record.read_text().strip().rpartition(":")[2] == address.rpartition(":")[2]:
            record.unlink(missing_ok=True)
    except FileNotFoundError:
        return


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.support.reaper", description=__doc__.splitlines()[0])
    parser.add_argument("pgid", type=int)
    parser.add_argument("--forget", nargs=2, metavar=("RECORD", "ADDRESS"))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the starting process, not for us
    sys.stdin.buffer.read()
    end_groups([args.pgid])
    if args.forget:
        forget(Path(args.forget[0]), args.forget[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
