"""Imports run one way: ``serve_app`` (HTTP, CLI, tools) sits on ``deployments`` (the graph), never the reverse."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function or an ``if TYPE_CHECKING`` block."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_deployments_never_import_serve_app() -> None:
    offenders = {f"{path.relative_to(ROOT)}: {module}"
                 for path in sorted((ROOT / "deployments").rglob("*.py"))
                 for module in imported_modules(path) if module.split(".")[0] == "serve_app"}
    assert not offenders, f"deployments must not import serve_app: {sorted(offenders)}"


def test_the_check_sees_every_kind_of_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import serve_app.app\nfrom serve_app import cli\n\n"
                      "def f():\n    from serve_app.errors import x\n")
    assert imported_modules(sample) == {"serve_app.app", "serve_app", "serve_app.errors"}
