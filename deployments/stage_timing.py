"""Timing a request's stages: the callback that hears each stage's seconds, and a clock that feeds it.

The Downloader's audio decode and VAD and the Transcriber's batch stages all report through ``Record``;
the replica's metrics are what usually listens.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Record = Callable[[str, float], None]
"""Hears (stage, seconds) for each run of a stage."""


class Clock:
    """Times consecutive stages: each ``lap`` reports the seconds since the last one."""

    def __init__(self, record: Record | None) -> None:
        self.record, self.last = record, time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        if self.record is not None:
            self.record(stage, now - self.last)
        self.last = now
