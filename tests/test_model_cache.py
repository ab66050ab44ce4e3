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


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_idle_unpinned_models_expire_and_pinned_ones_stay() -> None:
    clock = Clock()
    cache = ModelCache(lambda key: object(), max_models=3, idle_ttl_s=60, pinned=frozenset({"default"}), clock=clock)
    cache.get("default")
    cache.get("extra")
    clock.now = 59
    assert cache.expire_idle() == []
    clock.now = 61
    assert cache.expire_idle() == ["extra"]
    assert cache.resident() == ["default"] and cache.evictions == 1
    clock.now = 10_000
    assert cache.expire_idle() == []
    cache.get("extra")
    assert cache.loads == 3, "an expired model loads again when asked for"


def test_no_ttl_means_nothing_expires() -> None:
    clock = Clock()
    cache = ModelCache(lambda key: object(), max_models=2, clock=clock)
    cache.get("a")
    clock.now = 1e9
    assert cache.expire_idle() == []
