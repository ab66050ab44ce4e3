"""A bounded, least-recently-used cache of loaded models, with a load counter.

One place owns model loading so that "a load per request" (the bug this project exists to prevent) is
visible as a number and cannot happen by accident.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
M = TypeVar("M")


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, loaded once; None where the C library is not glibc (nothing to trim)."""
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL("libc.so.6").malloc_trim
    return None


_MALLOC_TRIM = _malloc_trim()


def trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise), after a request's or a batch's buffers,
    which reference counting frees: they hold no cycles, so no collection is paid for (0.06-0.12 s each with a
    replica's imports)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def release_memory() -> None:
    """Collect garbage, then trim the heap: after a model is dropped, whose objects may hold one another."""
    gc.collect()
    trim_heap()


class ModelCache(Generic[K, M]):
    """Keeps at most ``max_models`` models; the least recently used one that is not pinned is dropped first.

    Models other than the ``pinned`` ones are also dropped after ``idle_ttl_s`` without use, so an
    occasional request for another model does not hold its memory for the replica's lifetime. Room is
    made before a load (two large models never sit on a GPU at once), and a load holds only its own
    key's lock, so requests for resident models are served while another model loads.
    """

    def __init__(self, loader: Callable[[K], M], max_models: int, idle_ttl_s: float | None = None,
                 pinned: frozenset[K] = frozenset(), clock: Callable[[], float] = time.monotonic) -> None:
        if max_models < 1:
            raise ValueError("max_models must be at least 1")
        self._loader = loader
        self._max_models = max_models
        self._idle_ttl_s = idle_ttl_s
        self._pinned = pinned
        self._clock = clock
        self._models: OrderedDict[K, M] = OrderedDict()
        self._last_used: dict[K, float] = {}
        self._lock = threading.Lock()
        self._loading: dict[K, threading.Lock] = {}
        self.loads: Counter[K] = Counter()  # per key: more than one for a key is a reload
        self.evictions = 0

    def get(self, key: K) -> M:
        """Return the model for ``key``, loading it (after evicting the oldest unpinned one) only when absent."""
        with self._lock:
            if (model := self._touch(key)) is not None:
                return model
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                if (model := self._touch(key)) is not None:
                    return model  # another thread loaded it while this one waited
                evicted = self._make_room(self._max_models - 1)
            if evicted:
                release_memory()
            try:
                model = self._loader(key)
            except BaseException:
                with self._lock:
                    self._loading.pop(key, None)
                raise
            with self._lock:  # resident and no longer loading in one step: no second load can slip between
                self.loads[key] += 1
                self._models[key] = model
                self._last_used[key] = self._clock()
                self._loading.pop(key, None)
                self._make_room(self._max_models, spare=key)  # concurrent loads of other keys may have overfilled it
            return model

    def is_resident(self, key: K) -> bool:
        """Whether ``key``'s model is loaded now (a ``get`` of it would not load)."""
        with self._lock:
            return key in self._models

    def _touch(self, key: K) -> M | None:
        """The resident model for ``key`` marked as just used, or None; the caller holds the lock."""
        if key not in self._models:
            return None
        self._last_used[key] = self._clock()
        self._models.move_to_end(key)
        return self._models[key]

    def _make_room(self, keep: int, spare: K | None = None) -> list[K]:
        """Drop unpinned models other than ``spare``, oldest first, until at most ``keep`` remain (lock held).

        Pinned models are never dropped: when only they are left, the cache stays over its bound.
        """
        dropped = []
        while len(self._models) > keep:
            victim = next((k for k in self._models if k not in self._pinned and k != spare), None)
            if victim is None:
                break
            self._drop(victim)
            dropped.append(victim)
        return dropped

    def expire_idle(self) -> list[K]:
        """Drop unpinned models idle for longer than the time-to-live; returns their keys."""
        if self._idle_ttl_s is None:
            return []
        with self._lock:
            now = self._clock()
            idle = [k for k in self._models if k not in self._pinned and now - self._last_used[k] >= self._idle_ttl_s]
            for key in idle:
                self._drop(key)
        if idle:
            release_memory()
        return idle

    def _drop(self, key: K) -> None:
        del self._models[key]
        self._last_used.pop(key, None)
        self.evictions += 1

    def resident(self) -> list[K]:
        """The resident models' keys, oldest first."""
        with self._lock:
            return list(self._models)
