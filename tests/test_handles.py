"""ServiceHandle: calls and streams between deployments raise ServiceError for Ray's transient failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from ray.exceptions import ActorDiedError
from ray.serve.exceptions import BackPressureError

from deployments.errors import InvalidRequest, Overloaded
from deployments.handles import ServiceHandle
from deployments.jobs import describe, is_transient


class Answer:
    """A DeploymentResponse stand-in: awaiting it gives ``outcome``, or raises it when it is an exception."""

    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome
        self.cancelled = False

    def __await__(self) -> Any:
        return self._get().__await__()

    async def _get(self) -> Any:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def cancel(self) -> None:
        self.cancelled = True


class Items:
    """A streaming call's stand-in: ``items`` in order, an exception among them raised where it stands."""

    def __init__(self, items: list[Any]) -> None:
        self.items = iter(items)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        item = next(self.items, StopAsyncIteration())
        if isinstance(item, BaseException):
            raise item
        return item


class FakeHandle:
    """A DeploymentHandle stand-in whose every method answers ``outcome`` (a stream of it with stream=True)."""

    def __init__(self, outcome: Any, stream: bool = False) -> None:
        self.outcome, self.stream = outcome, stream

    def options(self, stream: bool = False) -> FakeHandle:
        return FakeHandle(self.outcome, stream)

    def __getattr__(self, name: str) -> Any:
        handle = self

        class Method:
            @staticmethod
            def remote(*_: Any) -> Any:
                return Items(handle.outcome) if handle.stream else Answer(handle.outcome)

        return Method


def call(outcome: Any) -> Any:
    return asyncio.run(_call(outcome))


async def _call(outcome: Any) -> Any:
    return await ServiceHandle(FakeHandle(outcome)).dimension.remote()


def test_an_answer_passes_through() -> None:
    assert call(384) == 384


@pytest.mark.parametrize("failure", [BackPressureError(num_queued_requests=8, max_queued_requests=8),
                                     ActorDiedError()])
def test_ray_transient_failures_become_overloaded(failure: Exception) -> None:
    with pytest.raises(Overloaded, match=type(failure).__name__) as info:
        call(failure)
    assert info.value.__cause__ is failure and info.value.retry_after_s
    assert is_transient(failure) and describe(failure)[0] == "overloaded"


def test_service_errors_and_bugs_are_raised_as_they_are() -> None:
    refusal = InvalidRequest("no")
    with pytest.raises(InvalidRequest) as info:
        call(refusal)
    assert info.value is refusal and not is_transient(refusal)
    with pytest.raises(ValueError, match="a bug"):
        call(ValueError("a bug"))
    assert describe(ValueError("a bug")) == ("ValueError", "a bug")


def test_a_stream_maps_a_failure_midway_and_ends_when_its_items_do() -> None:
    async def read() -> list[Any]:
        stream = ServiceHandle(FakeHandle([1, 2, ActorDiedError()])).options(stream=True).resolve.remote()
        items = []
        with pytest.raises(Overloaded):
            async for item in stream:
                items.append(item)
        return items

    assert asyncio.run(read()) == [1, 2]
    stream = ServiceHandle(FakeHandle([1])).options(stream=True).resolve.remote()
    assert asyncio.run(_all(stream)) == [1]


async def _all(stream: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in stream]
