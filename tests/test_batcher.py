"""The Transcriber's batcher, without Ray or a model: batches form when the previous one is done."""

from __future__ import annotations

import asyncio
import threading

import pytest

from deployments.batcher import ORDINARY, SOON, URGENT, Batcher


class Model:
    """Doubles numbers; the first batch holds until released, so that others can queue behind it."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.started, self.release = threading.Event(), threading.Event()

    def run(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        self.started.set()
        self.release.wait(timeout=60)
        if -1 in items:
            raise ValueError("a bad batch")
        return [2 * item for item in items]


async def queued_behind_a_busy_batch(model: Model, batcher: Batcher[int, int], later: list[int]) -> list:
    """Submit 1, wait until it decodes, submit ``later`` while it does, release it; every caller's answer."""
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.to_thread(model.started.wait, 60)
    rest = [asyncio.create_task(batcher.submit(item)) for item in later]
    for _ in range(5):
        await asyncio.sleep(0)  # let the submissions reach the queue (turns of the event loop, not time)
    model.release.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def test_what_queues_during_a_batch_is_the_next_batch_up_to_its_size() -> None:
    model, sizes = Model(), []
    batcher = Batcher(model.run, max_size=4, wait_s=0.01, on_batch=lambda waits: sizes.append(len(waits)))
    answers = asyncio.run(queued_behind_a_busy_batch(model, batcher, [2, 3, 4, 5, 6]))
    assert answers == [2, 4, 6, 8, 10, 12]
    assert model.batches == [[1], [2, 3, 4, 5], [6]]
    assert sizes == [1, 4, 1]


def test_a_failed_batch_fails_its_callers_only() -> None:
    model = Model()
    batcher = Batcher(model.run, max_size=2, wait_s=0.01)

    async def scenario() -> tuple[list, int]:
        answers = await queued_behind_a_busy_batch(model, batcher, [-1, 3, 4])
        return answers, await batcher.submit(7)

    answers, after = asyncio.run(scenario())
    assert answers[0] == 2
    assert all(isinstance(a, ValueError) for a in answers[1:3]), answers
    assert answers[3] == 8 and after == 14, "the worker must go on after a failed batch"


def test_a_caller_that_went_away_is_left_out() -> None:
    model = Model()
    batcher = Batcher(model.run, max_size=4, wait_s=0.01)

    async def scenario() -> int:
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.to_thread(model.started.wait, 60)
        gone = asyncio.create_task(batcher.submit(2))
        stays = asyncio.create_task(batcher.submit(3))
        for _ in range(5):
            await asyncio.sleep(0)
        gone.cancel()
        model.release.set()
        with pytest.raises(asyncio.CancelledError):
            await gone
        await first
        return await stays

    assert asyncio.run(scenario()) == 6
    assert model.batches == [[1], [3]]


def test_two_workers_decode_two_batches_at_once() -> None:
    """With concurrency 2 a second batch starts while the first still runs (it would deadlock otherwise)."""
    both_running = threading.Barrier(2, timeout=60)
    batches: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        batches.append(items)
        if len(batches) <= 2:
            both_running.wait()  # returns only when two batches are in run() together
        return items

    async def scenario() -> list[int]:
        batcher = Batcher(run, max_size=2, wait_s=0.01, concurrency=2)
        return await asyncio.gather(*(batcher.submit(i) for i in range(4)))

    assert asyncio.run(scenario()) == [0, 1, 2, 3]
    assert sorted(i for batch in batches for i in batch) == [0, 1, 2, 3]


def test_items_arriving_together_at_idle_workers_are_shared_between_them() -> None:
    """Two windows at two idle decoders: one each, at once (a batch of two would leave one decoder idle)."""
    both_running = threading.Barrier(2, timeout=60)
    batches: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        if items != [-1]:  # the warm-up that starts the workers
            batches.append(items)
            both_running.wait()  # two batches of one in run() together, or a BrokenBarrierError after 60 s
        return items

    async def scenario() -> list[int]:
        batcher = Batcher(run, max_size=4, wait_s=5, concurrency=2)
        await batcher.submit(-1)
        for _ in range(5):
            await asyncio.sleep(0)  # both workers back at the queue (turns of the event loop, not time)
        return await asyncio.gather(*(batcher.submit(i) for i in range(2)))

    assert asyncio.run(scenario()) == [0, 1]
    assert sorted(batches) == [[0], [1]]


def test_a_busy_worker_leaves_the_queue_to_one_free_worker_up_to_its_size() -> None:
    """Under load a free decoder takes what waits (up to max_size): the even share is among idle workers only."""
    model, waits = Model(), []
    batcher = Batcher(model.run, max_size=3, wait_s=0.01, concurrency=1, on_batch=waits.append)
    answers = asyncio.run(queued_behind_a_busy_batch(model, batcher, [2, 3, 4, 5]))
    assert answers == [2, 4, 6, 8, 10]
    assert model.batches == [[1], [2, 3, 4], [5]]
    assert [len(w) for w in waits] == [1, 3, 1]
    assert all(0 <= wait < 60 for batch in waits for wait in batch)
    assert min(waits[1]) > 0, "what queued behind the busy batch waited for it"


def test_a_failing_batch_callback_fails_the_batch_instead_of_hanging_it() -> None:
    """An exception in ``on_batch`` (a metrics call, say) reaches the batch's callers; the worker goes on."""
    calls: list[int] = []

    def on_batch(waits: list[float]) -> None:
        calls.append(len(waits))
        if len(calls) == 1:
            raise RuntimeError("metrics are down")

    async def scenario() -> tuple[BaseException | int, int]:
        batcher = Batcher(lambda items: items, max_size=2, wait_s=0.01, on_batch=on_batch)
        first = await asyncio.gather(batcher.submit(1), return_exceptions=True)
        return first[0], await asyncio.wait_for(batcher.submit(2), 60)

    failed, after = asyncio.run(scenario())
    assert isinstance(failed, RuntimeError) and after == 2


def batches_before_live_turn(lane: int) -> int:
    """A lecture's 8 windows queue behind a busy batch, then a live turn (100) arrives: batches that ran before it."""
    model = Model()
    batcher = Batcher(model.run, max_size=2, wait_s=0.01)

    async def scenario() -> list:
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.to_thread(model.started.wait, 60)
        lecture = [asyncio.create_task(batcher.submit(item)) for item in range(10, 18)]
        for _ in range(5):
            await asyncio.sleep(0)  # the lecture's windows queue first (turns of the event loop, not time)
        turn = asyncio.create_task(batcher.submit(100, lane))
        for _ in range(5):
            await asyncio.sleep(0)
        model.release.set()
        return await asyncio.gather(first, *lecture, turn)

    answers = asyncio.run(scenario())
    assert answers == [2, *(2 * i for i in range(10, 18)), 200]
    (turn_batch,) = [batch for batch in model.batches if 100 in batch]
    assert lane == ORDINARY or turn_batch == [100], "a live turn never waits for file windows in its batch"
    return model.batches.index(turn_batch)


def test_a_live_turn_goes_ahead_of_a_lecture_s_queued_windows() -> None:
    """Without the lane the turn waits for all 4 batches of the lecture; with it, it is the next batch, alone."""
    assert batches_before_live_turn(ORDINARY) == 5
    assert batches_before_live_turn(URGENT) == 1


def test_live_lanes_go_first_together_and_file_windows_after_them() -> None:
    """File windows, then a partial decoding, then a committed turn queue behind a busy batch: the turn and the
    partial decode together, the files after them, in their own batch."""
    model = Model()
    batcher = Batcher(model.run, max_size=4, wait_s=0.01)

    async def scenario() -> None:
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.to_thread(model.started.wait, 60)
        queued = [asyncio.create_task(batcher.submit(item, lane)) for item, lane in
                  [(10, ORDINARY), (11, ORDINARY), (20, SOON), (30, URGENT)]]
        for _ in range(5):
            await asyncio.sleep(0)
        model.release.set()
        await asyncio.gather(first, *queued)

    asyncio.run(scenario())
    assert model.batches == [[1], [30, 20], [10, 11]]


def test_a_reserved_worker_is_kept_for_urgent_items_while_they_come() -> None:
    """With one of two workers reserved, a turn never waits for file batches: the second file waits instead."""
    release, batches = threading.Event(), []

    def run(items: list[int]) -> list[int]:
        batches.append(items)
        if items[0] < 100:  # file windows decode until released
            release.wait(timeout=60)
        return items

    async def scenario() -> None:
        batcher = Batcher(run, max_size=1, wait_s=0.01, concurrency=2, reserved=1)
        await batcher.submit(100, URGENT)  # live turns are coming
        files = [asyncio.create_task(batcher.submit(item)) for item in (1, 2)]
        for _ in range(5):
            await asyncio.sleep(0)  # both files queue (turns of the event loop, not time)
        assert await asyncio.wait_for(batcher.submit(101, URGENT), 30) == 101, "the turn ran beside file 1"
        assert [2] not in batches, "file 2 waited instead of taking the reserved worker"
        release.set()
        await asyncio.gather(*files)

    asyncio.run(scenario())
    assert sorted(batches) == [[1], [2], [100], [101]]


def test_live_batches_hold_at_most_live_max_size_and_file_batches_max_size() -> None:
    """On a CPU a batch costs the sum of its windows: turns queued behind a busy batch decode one at a time
    (none waits for another's decoding), file windows in batches of max_size."""
    model = Model()
    batcher = Batcher(model.run, max_size=4, wait_s=0.01, live_max_size=1)

    async def scenario() -> None:
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.to_thread(model.started.wait, 60)
        queued = [asyncio.create_task(batcher.submit(item, lane)) for item, lane in
                  [(10, ORDINARY), (11, ORDINARY), (30, URGENT), (31, URGENT), (20, SOON)]]
        for _ in range(5):
            await asyncio.sleep(0)
        model.release.set()
        await asyncio.gather(first, *queued)

    asyncio.run(scenario())
    assert model.batches == [[1], [30], [31], [20], [10, 11]]


def test_no_partial_decoding_starts_while_a_turn_decodes() -> None:
    """A partial (SOON) waits for the turn decoding beside it, though a worker is free: the turn has the
    processor to itself. It starts as soon as the turn is done."""
    release, started, batches = threading.Event(), threading.Event(), []

    def run(items: list[int]) -> list[int]:
        batches.append(items)
        if items == [100]:
            started.set()
            release.wait(timeout=60)
        return items

    async def scenario() -> None:
        batcher = Batcher(run, max_size=1, wait_s=0.01, concurrency=2)
        turn = asyncio.create_task(batcher.submit(100, URGENT))
        await asyncio.to_thread(started.wait, 60)
        partial = asyncio.create_task(batcher.submit(200, SOON))
        for _ in range(20):
            await asyncio.sleep(0)  # the free worker takes the partial and puts it back (turns of the loop)
        assert batches == [[100]] and not partial.done(), "the partial started beside the turn"
        release.set()
        assert await asyncio.wait_for(partial, 30) == 200
        await turn

    asyncio.run(scenario())
    assert batches == [[100], [200]]
