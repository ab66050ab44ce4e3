"""A bounded, least-recently-used cache of loaded models, with a load counter.

One place owns model loading so that "a load per request" (the bug this project exists to prevent) is
visible as a number and cannot happen by accident.
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
M = TypeVar("M")


class ModelCache(Generic[K, M]):
    """Keeps at most ``max_models`` models; the least recently used one is dropped first."""

    def __init__(self, loader: Callable[[K], M], max_models: int) -> None:
        if max_models < 1:
            raise ValueError("max_models must be at least 1")
        self._loader = loader
        self._max_models = max_models
        self._models: OrderedDict[K, M] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0
        self.evictions = 0

    def get(self, key: K) -> M:
        """Return the model for ``key``, loading it (and evicting the oldest) only when absent."""
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            model = self._loader(key)
            self.loads += 1
            self._models[key] = model
            while len(self._models) > self._max_models:
                self._models.popitem(last=False)
                self.evictions += 1
            gc.collect()
            return model

    def resident(self) -> list[K]:
        """The resident models' keys, oldest first."""
        with self._lock:
            return list(self._models)
