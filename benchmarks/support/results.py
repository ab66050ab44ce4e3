"""Where a benchmark's figures go: a JSON result and its Markdown table, side by side, named for the machine."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any


def cpu_machine() -> str:
    """The name results of a CPU run carry: this host's."""
    return f"{platform.node() or 'host'}-cpu"


def write_result(out: str | Path, name: str, result: dict[str, Any], table: str) -> Path:
    """``result`` as ``out/name.json`` and ``table`` as ``out/name.md``; the table is printed too. Returns the stem."""
    stem = Path(out) / name
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    stem.with_suffix(".md").write_text(table)
    print(table)
    print(f"wrote {stem}.json and .md")
    return stem
