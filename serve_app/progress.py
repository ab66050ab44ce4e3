"""Progress of an ingestion job on the terminal: a tqdm bar, or plain lines when stdout is not a terminal."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

Clock = Callable[[], float]


def finished(status: dict) -> int:
    """Items of a job status that will not change any more (done, failed or skipped)."""
    counts = status["counts"]
    return counts["done"] + counts["failed"] + counts["skipped"]


def counts_text(status: dict) -> str:
    """Items per outcome, audio hours and throughput: what the bar's numbers do not say."""
    counts = status["counts"]
    return (f"done {counts['done']}  skipped {counts['skipped']}  failed {counts['failed']}  "
            f"audio {status['audio_seconds'] / 3600:.2f} h  {status['audio_hours_per_hour']:.1f} h/h")


class LineProgress:
    """One line each time the counts change, with elapsed time, ETA and rate (for logs and pipes)."""

    def __init__(self, total: int, out: TextIO, clock: Clock = time.monotonic) -> None:
        self.total, self.out, self.clock = total, out, clock
        self.started = clock()
        self.last: str | None = None

    def update(self, status: dict) -> None:
        text = counts_text(status)
        if text == self.last:
            return
        self.last = text
        done = finished(status)
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = done / elapsed
        eta = tqdm.format_interval((self.total - done) / rate) if rate else "?"
        print(f"[{done}/{self.total}] {text}  elapsed {tqdm.format_interval(elapsed)}  eta {eta}  "
              f"{rate:.2f} items/s", file=self.out, flush=True)

    def close(self) -> None:
        return


class BarProgress:
    """A tqdm bar over the job's items: percentage, elapsed, ETA and rate, and the counts after it."""

    def __init__(self, total: int, out: TextIO) -> None:
        self.bar = tqdm(total=total, unit="item", file=out, dynamic_ncols=True, mininterval=0)

    def update(self, status: dict) -> None:
        self.bar.set_postfix_str(counts_text(status), refresh=False)
        self.bar.update(finished(status) - self.bar.n)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def job_progress(total: int, out: TextIO) -> LineProgress | BarProgress:
    """A bar on a terminal, plain lines otherwise."""
    return BarProgress(total, out) if out.isatty() else LineProgress(total, out)
