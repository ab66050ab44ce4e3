"""The realtime benchmark, in its smallest form: one session of two turns, alone and beside the file clients.

The full run (``make bench``: 1, 4 and 8 sessions of five turns) is a benchmark; this runs the same code against
the shared app (``--url``) and checks that it measures every turn and reports sane figures, not how fast they are.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.realtime import FILE_CLIENTS, QUICK_TURNS, main
from tests.conftest import Service


@pytest.mark.serve
@pytest.mark.slow
def test_live_turns_are_timed_alone_and_beside_file_clients_and_set_beside_the_file_path(service: Service,
                                                                                         tmp_path: Path) -> None:
    assert main(["--quick", "--url", service.url, "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("realtime-quick-*.json")
    result = json.loads(path.read_text())
    assert (result["url"], result["config"]) == (service.url, None)
    rows = result["rows"]
    assert [(row["sessions"], row["file_clients"]) for row in rows] == [(1, 0), (1, FILE_CLIENTS)]
    for row in rows:
        assert row["turns"] == QUICK_TURNS and row["failed"] == 0, row
        assert 0 <= row["completed_p50_s"] <= row["completed_p95_s"], row
        assert 0 <= row["wer"] < 0.3, row
    assert 0 <= result["file_wer"] < 0.3
    assert result["wer_points_above_file"] == pytest.approx(100 * (rows[0]["wer"] - result["file_wer"]), abs=0.01)
    assert [target["measured"] for target in result["targets"]] == [rows[0]["completed_p95_s"],
                                                                   result["wer_points_above_file"]]
    assert path.with_suffix(".md").read_text().count("\n|") == 2 + len(rows), "the header, the rule and the rows"
