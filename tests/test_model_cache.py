"""The model cache: loads once per key, evicts the least recently used, and counts both."""

from __future__ import annotations

import threading

import pytest

from deployments.model_cache import ModelCache


def test_second_get_of_the_same_key_does_not_load_again() -> None:
    loaded: list[str] = []
    cache = ModelCache(lambda key: loaded.append(key) or f"model-{key}", max_models=2)
    assert cache.get("a") == "model-a"
    assert cache.get("a") == "model-a"
    assert loaded == ["a"]
    assert cache.loads.total() == 1


def test_least_recently_used_model_goes_first() -> None:
    cache = ModelCache(lambda key: object(), max_models=2)
    cache.get("a")
    cache.get("b")
    cache.get("a")
    cache.get("c")
    assert cache.resident() == ["a", "c"]
    assert (cache.loads.total(), cache.evictions) == (3, 1)


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
    assert cache.loads.total() == 3, "an expired model loads again when asked for"


def test_no_ttl_means_nothing_expires() -> None:
    clock = Clock()
    cache = ModelCache(lambda key: object(), max_models=2, clock=clock)
    cache.get("a")
    clock.now = 1e9
    assert cache.expire_idle() == []


def test_the_pinned_default_is_never_evicted() -> None:
    cache = ModelCache(lambda key: object(), max_models=2, pinned=frozenset({"default"}))
    cache.get("default")
    for key in ("a", "b", "c"):
        cache.get(key)
    assert cache.resident() == ["default", "c"]
    assert (cache.loads.total(), cache.evictions) == (4, 2)


def test_a_cache_of_pinned_models_keeps_a_new_one_over_its_bound_rather_than_drop_them() -> None:
    cache = ModelCache(lambda key: object(), max_models=1, pinned=frozenset({"default"}))
    cache.get("default")
    cache.get("a")
    assert cache.resident() == ["default", "a"]
    cache.get("b")
    assert cache.resident() == ["default", "b"]


def test_room_is_made_before_the_next_model_loads() -> None:
    """On a GPU two large models side by side may not fit: the evicted one is gone when the loader runs."""
    resident_at_load: list[list[str]] = []
    cache: ModelCache[str, str] = ModelCache(lambda key: resident_at_load.append(cache.resident()) or key,
                                             max_models=2, pinned=frozenset({"default"}))
    cache.get("default")
    cache.get("a")
    cache.get("b")
    assert resident_at_load == [[], ["default"], ["default"]]


def test_a_resident_model_is_served_while_another_one_loads() -> None:
    started, release = threading.Event(), threading.Event()

    def load(key: str) -> str:
        if key == "slow":
            started.set()
            assert release.wait(10)
        return key

    cache = ModelCache(load, max_models=3, pinned=frozenset({"default"}))
    cache.get("default")
    loader = threading.Thread(target=cache.get, args=("slow",))
    loader.start()
    assert started.wait(10)
    assert cache.get("default") == "default", "the default must not wait behind another model's load"
    assert not cache.is_resident("slow")
    release.set()
    loader.join(10)
    assert cache.is_resident("slow") and cache.loads.total() == 2


def test_concurrent_gets_of_one_absent_model_load_it_once() -> None:
    calls: list[str] = []
    gate = threading.Event()

    def load(key: str) -> str:
        calls.append(key)
        assert gate.wait(10)
        return key

    cache = ModelCache(load, max_models=2)
    threads = [threading.Thread(target=cache.get, args=("a",)) for _ in range(4)]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join(10)
    assert calls == ["a"] and cache.loads.total() == 1


def test_a_failed_load_leaves_nothing_behind_and_the_next_get_tries_again() -> None:
    attempts: list[str] = []

    def load(key: str) -> str:
        attempts.append(key)
        if len(attempts) == 1:
            raise RuntimeError("VRAM budget: past the ceiling")
        return key

    cache = ModelCache(load, max_models=2)
    with pytest.raises(RuntimeError, match="VRAM budget"):
        cache.get("a")
    assert cache.resident() == [] and cache.loads.total() == 0
    assert cache.get("a") == "a" and attempts == ["a", "a"] and cache.loads.total() == 1
