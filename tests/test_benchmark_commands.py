"""Every benchmark `make bench` runs imports and has its command: a broken import shows here, not only there."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = sorted(f"benchmarks.{path.stem}" for path in (ROOT / "benchmarks").glob("*.py") if path.stem != "__init__")


def test_the_commands_are_found() -> None:
    assert {"benchmarks.diarization", "benchmarks.languages", "benchmarks.soak"} <= set(COMMANDS)


@pytest.mark.parametrize("name", [*COMMANDS, "benchmarks.throughput.run"])
def test_a_benchmark_imports_and_has_a_main(name: str) -> None:
    assert callable(importlib.import_module(name).main)
