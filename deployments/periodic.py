"""Running a function every few seconds in a daemon thread, for a replica's housekeeping."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger("transcribe_serve")


def every(interval_s: float, task: Callable[[], object], name: str) -> threading.Event:
    """Call ``task`` now and then every ``interval_s``; set the returned event to stop. Failures are logged."""
    stop = threading.Event()

    def loop() -> None:
        while True:
            try:
                task()
            except Exception:
                logger.exception("periodic task %s failed", name)
            if stop.wait(interval_s):
                return

    threading.Thread(target=loop, name=name, daemon=True).start()
    return stop
