"""Batching calls for a slow model: each batch is formed when the one before it is done.

Ray Serve's ``serve.batch`` (2.60) forms a batch as soon as its first call arrives and queues it behind
the batch that is running. That suits a fast model; a decoder that takes seconds per batch sees mostly
batches of one, each formed while the previous one ran (measured: 8 clients gave batches of
{1: 10, 2: 2, 3: 1, 4: 2}). Here the next batch takes everything that queued meanwhile.

Items go in lanes: an item is taken before every item of a later lane still queued, so a live session's
turn never waits behind a lecture's windows: it starts the next batch. Items of the first two lanes share
batches with each other, never with ordinary ones: on a CPU a batch of four 30-s windows decodes for
seconds, all of which a turn in it would wait. For the same reason a batch that a live item starts holds
at most ``live_max_size`` (1 on a CPU, where a batch costs the sum of its windows), and no batch of the
second lane (partial decodings, which only feed deltas) starts while one of the first (turns) decodes:
the turn has the processor to itself.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
URGENT, SOON, ORDINARY = 0, 1, 2
"""The lanes, in the order batches take from them."""
RESERVE_FOR_S = 30.0
"""How long after the last urgent item the ``reserved`` workers are kept for urgent items."""


@dataclass(frozen=True)
class Waiting(Generic[T, R]):
    """A submitted item, the future its caller awaits, and when it was queued (the event loop's clock)."""

    item: T
    future: asyncio.Future[R]
    since: float


Queue = asyncio.PriorityQueue[tuple[int, int, Waiting[T, R]]]
"""Waiting items by (lane, arrival)."""


class Batcher(Generic[T, R]):
    """Runs ``run`` (blocking; in worker threads) on batches of submitted items, ``concurrency`` batches at once.

    ``on_batch`` hears, as each batch starts, how long each of its items waited.
    A batch is the items waiting when a worker comes free, up to ``max_size`` (``live_max_size`` when a live
    item starts it), shared evenly with the
    workers that are idle beside it: two windows that arrive together at two idle workers decode one on
    each, at once, rather than both on one while the other waits. An item that finds every other worker
    busy waits at most ``wait_s`` for company. Results go back to each caller in its order; a failure of
    ``run`` fails every caller of that batch. A caller that went away is left out.

    While urgent items come (one in the last ``RESERVE_FOR_S``), ``reserved`` workers run only batches an
    urgent item starts, so an urgent item waits for no batch already running; otherwise every worker takes
    any lane.
    """

    def __init__(self, run: Callable[[list[T]], list[R]], max_size: int, wait_s: float, concurrency: int = 1,
                 on_batch: Callable[[list[float]], None] | None = None, reserved: int = 0,
                 live_max_size: int | None = None) -> None:
        if not 0 <= reserved < concurrency:
            raise ValueError("reserved workers must be fewer than all of them")
        self.run, self.max_size, self.wait_s, self.on_batch = run, max_size, wait_s, on_batch
        self.live_max_size = max_size if live_max_size is None else min(live_max_size, max_size)
        self.concurrency, self.reserved = concurrency, reserved
        self._idle = 0
        """Workers waiting for an item now."""
        self._others = 0
        """Workers running a batch that a non-urgent item started."""
        self._urgent = 0
        """Workers running a batch that an urgent item started."""
        self._urgent_at: float | None = None
        self._changed: asyncio.Event | None = None
        """Set when an item arrives or a batch ends: what a worker held back for the reserve waits for."""
        self._queue: Queue[T, R] | None = None
        self._order = itertools.count()
        """Arrival order within a lane (the queue's tie-break, so ``Waiting`` itself is never compared)."""
        self._workers: list[asyncio.Task[None]] = []

    async def submit(self, item: T, lane: int = ORDINARY) -> R:
        """``run``'s result for ``item``, computed in a batch with whatever else is waiting; it is taken before
        the items of later lanes (``URGENT``, ``SOON``, ``ORDINARY``) still queued."""
        if self._queue is None or self._changed is None:  # created on the event loop the calls arrive on
            self._queue, self._changed = asyncio.PriorityQueue(), asyncio.Event()
            self._workers = [asyncio.create_task(self._work(self._queue, self._changed))
                             for _ in range(self.concurrency)]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if lane == URGENT:
            self._urgent_at = loop.time()
        self._queue.put_nowait((lane, next(self._order), Waiting(item, future, loop.time())))
        self._changed.set()
        return await future

    async def _work(self, queue: Queue[T, R], changed: asyncio.Event) -> None:
        while True:
            lane, batch = await self._next_batch(queue, changed)
            self._others += lane != URGENT
            self._urgent += lane == URGENT
            try:
                await self._run(batch)
            finally:
                self._others -= lane != URGENT
                self._urgent -= lane == URGENT
                changed.set()

    async def _run(self, batch: list[Waiting[T, R]]) -> None:
        """One batch; whatever fails, every caller of the batch hears of it and the worker goes on."""
        if batch:
            try:
                if self.on_batch is not None:
                    now = asyncio.get_running_loop().time()
                    self.on_batch([now - waiting.since for waiting in batch])
                results = await asyncio.to_thread(self.run, [waiting.item for waiting in batch])
            except Exception as error:
                for waiting in batch:
                    if not waiting.future.done():
                        waiting.future.set_exception(error)
                return
            for waiting, result in zip(batch, results, strict=True):
                if not waiting.future.done():
                    waiting.future.set_result(result)

    async def _next_batch(self, queue: Queue[T, R], changed: asyncio.Event) -> tuple[int, list[Waiting[T, R]]]:
        """The lane of the item that starts it, and at least one item: this worker's share of what is waiting
        (earlier lanes first), topped up for ``wait_s`` when no other worker is free to take what comes next."""
        while True:
            self._idle += 1
            try:
                lead = await queue.get()
            finally:
                self._idle -= 1
            if lead[0] == URGENT or not self._held_back(lead[0]):
                break
            queue.put_nowait(lead)
            changed.clear()
            await changed.wait()
        batch = [lead[2]]
        deadline = asyncio.get_running_loop().time() + self.wait_s
        while len(batch) < (self.max_size if lead[0] == ORDINARY else self.live_max_size):
            if not queue.empty():
                if len(batch) >= self._share(len(batch) + queue.qsize()):
                    break
                entry = queue.get_nowait()
            else:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0 or self._idle:
                    break
                try:
                    entry = await asyncio.wait_for(queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            if (entry[0] == ORDINARY) != (lead[0] == ORDINARY):
                queue.put_nowait(entry)  # back in its place: (lane, arrival) orders the queue
                break
            batch.append(entry[2])
        return lead[0], [waiting for waiting in batch if not waiting.future.cancelled()]

    def _held_back(self, lane: int) -> bool:
        """Whether a batch that an item of ``lane`` (not urgent) would start waits: a partial while a turn decodes,
        or any while this worker is one of the reserve."""
        return lane == SOON and self._urgent > 0 or self._held_for_urgent()

    def _held_for_urgent(self) -> bool:
        """Whether this worker is one of the reserve now: urgent items came lately and the others are busy."""
        now = asyncio.get_running_loop().time()
        recent = self._urgent_at is not None and now - self._urgent_at < RESERVE_FOR_S
        return recent and self._others >= self.concurrency - self.reserved

    def _share(self, waiting: int) -> int:
        """How many of ``waiting`` items one worker takes: an even share with the workers idle beside it."""
        return -(-waiting // (self._idle + 1))
