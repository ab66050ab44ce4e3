"""The housekeeping thread: it runs its task repeatedly, survives a failing run, and ends when told to stop."""

from __future__ import annotations

import threading

from deployments.periodic import every


def test_task_runs_again_after_a_failure_and_stops() -> None:
    calls: list[int] = []
    third = threading.Event()

    def task() -> None:
        calls.append(1)
        if len(calls) == 3:
            third.set()
        if len(calls) == 1:
            raise RuntimeError("the first run fails")

    stop = every(0.01, task, "test-periodic")
    (thread,) = [t for t in threading.enumerate() if t.name == "test-periodic"]
    assert third.wait(10), "the task did not run three times"
    stop.set()
    thread.join(10)
    assert not thread.is_alive(), "the thread went on after its stop event was set"
