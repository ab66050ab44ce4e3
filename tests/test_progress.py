"""The ingest command's progress: a tqdm bar on a terminal, plain lines with elapsed, ETA and rate otherwise."""

from __future__ import annotations

import io

from serve_app.progress import BarProgress, LineProgress, job_progress


def status(done: int, failed: int = 0, skipped: int = 0, total: int = 10) -> dict:
    counts = {"queued": total - done - failed - skipped, "running": 0, "done": done, "failed": failed,
              "skipped": skipped}
    return {"counts": counts, "audio_seconds": 36.0 * done, "audio_hours_per_hour": 2.5}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_with_elapsed_eta_and_rate() -> None:
    out = Terminal()
    progress = job_progress(10, out)
    assert isinstance(progress, BarProgress)
    progress.update(status(0))
    progress.update(status(4, failed=1))
    progress.close()
    last = out.getvalue().split("\r")[-1]
    assert "50%|" in last and " 5/10 [" in last, last
    assert "<" in last and "item/s" in last, "tqdm's [elapsed<eta, rate] block"
    assert "done 4  skipped 0  failed 1" in last


def test_a_pipe_gets_one_plain_line_per_change_with_elapsed_eta_and_rate() -> None:
    out = io.StringIO()
    now = [100.0]
    progress = LineProgress(10, out, clock=lambda: now[0])
    assert isinstance(job_progress(10, io.StringIO()), LineProgress)
    now[0] += 1
    progress.update(status(0))
    now[0] += 4
    progress.update(status(2))
    progress.update(status(2))  # unchanged: no new line
    now[0] += 5
    progress.update(status(4, skipped=1))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 3, lines
    assert lines[0].startswith("[0/10] done 0") and lines[0].endswith("elapsed 00:01  eta ?  0.00 items/s")
    assert lines[1].endswith("elapsed 00:05  eta 00:20  0.40 items/s"), lines[1]
    assert lines[2].startswith("[5/10] done 4  skipped 1  failed 0  audio 0.04 h  2.5 h/h")
    assert lines[2].endswith("elapsed 00:10  eta 00:10  0.50 items/s"), lines[2]
