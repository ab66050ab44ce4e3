"""Imports run one way: ``serve_app`` (HTTP, CLI, tools) sits on ``deployments`` (the graph), never the reverse;
tests and benchmarks share ``benchmarks.support``, which imports neither of them."""

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


def offenders(folder: Path, allowed: str, exempt: tuple[str, ...] = ()) -> set[str]:
    """Imports of ``tests`` or ``benchmarks`` modules under ``folder`` other than ``allowed`` (a module prefix)."""
    return {f"{path.relative_to(ROOT)}: {module}"
            for path in sorted(folder.rglob("*.py")) if path.name not in exempt
            for module in imported_modules(path)
            if module.split(".")[0] in ("tests", "benchmarks") and not module.startswith(allowed)}


def test_tests_share_only_the_support_module_with_the_benchmarks() -> None:
    """Tests reach benchmarks through ``benchmarks.support`` alone; a benchmark's own test (the throughput and the
    realtime benchmark's) runs it."""
    own_tests = ("test_throughput_bench.py", "test_realtime_bench.py")
    found = {o for o in offenders(ROOT / "tests", "tests", exempt=own_tests) if ": benchmarks.support" not in o}
    assert not found, f"tests may import benchmarks.support, not a benchmark's internals: {sorted(found)}"


def test_the_support_module_imports_neither_tests_nor_benchmarks() -> None:
    found = offenders(ROOT / "benchmarks" / "support", "benchmarks.support")
    assert not found, f"benchmarks.support must stand below both: {sorted(found)}"
    found = {o for o in offenders(ROOT / "benchmarks", "benchmarks") if ": tests" in o}
    assert not found, f"benchmarks must not import tests: {sorted(found)}"


def test_the_check_sees_every_kind_of_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import serve_app.app\nfrom serve_app import cli\n\n"
                      "def f():\n    from serve_app.errors import x\n")
    assert imported_modules(sample) == {"serve_app.app", "serve_app", "serve_app.errors"}
