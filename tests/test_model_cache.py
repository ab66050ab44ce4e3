"""The model cache: loads once per key, evicts the least recently used, and counts both."""

from __future__ import annotations

from deployments.model_cache import ModelCache


def test_second_get_of_the_same_key_does_not_load_again() -> None:
    loaded: list[str] = []
    cache = ModelCache(lambda key: loaded.append(key) or f"model-{key}", max_models=2)
    assert cache.get("a") == "model-a"
    assert cache.get("a") == "model-a"
    assert loaded == ["a"]
    assert cache.loads == 1


def test_least_recently_used_model_goes_first() -> None:
    cache = ModelCache(lambda key: object(), max_models=2)
    cache.get("a")
    cache.get("b")
    cache.get("a")
    cache.get("c")
    assert cache.resident() == ["a", "c"]
    assert (cache.loads, cache.evictions) == (3, 1)
