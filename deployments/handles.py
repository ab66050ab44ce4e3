"""The one boundary where calls between deployments meet Ray's failures: a DeploymentHandle that maps them.

Every deployment that calls another wraps the handle it was bound with in ``ServiceHandle`` once, in its
``__init__``; its calls then raise ``ServiceError`` (``Overloaded`` for Ray's transient failures) instead of
Ray's own types. Serve answers a BackPressureError that reaches the ingress app itself, in plain text
without Retry-After, so the mapping has to happen where the call is awaited, not in the HTTP handlers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from typing import Any, Literal

from deployments.errors import as_service_error


class _Mapped:
    """A context in which a failure that means something to a client is raised as that ServiceError."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any) -> Literal[False]:
        if isinstance(error, Exception):
            mapped = as_service_error(error)
            if mapped is not None and mapped is not error:
                raise mapped from error
        return False


class Response:
    """A DeploymentResponse: awaited once for its result, or cancelled."""

    def __init__(self, response: Any) -> None:
        self._response = response

    def __await__(self) -> Generator[Any, None, Any]:
        return self._result().__await__()

    async def _result(self) -> Any:
        with _Mapped():
            return await self._response

    def cancel(self) -> None:
        self._response.cancel()


class ResponseStream:
    """A streaming call's items (a DeploymentResponseGenerator), cancelled when its reader stops early."""

    def __init__(self, generator: Any) -> None:
        self._generator = generator

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        with _Mapped():
            return await self._generator.__anext__()

    def cancel(self) -> None:
        self._generator.cancel()


class _Method:
    """One method of the deployment; ``remote`` starts a call as the handle's would."""

    def __init__(self, method: Any, stream: bool) -> None:
        self._method = method
        self._stream = stream

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        call = self._method.remote(*args, **kwargs)
        return ResponseStream(call) if self._stream else Response(call)


class ServiceHandle:
    """A DeploymentHandle whose calls raise ServiceError for Ray's failures; used like the handle itself."""

    def __init__(self, handle: Any, stream: bool = False) -> None:
        self._handle = handle
        self._stream = stream

    def options(self, **options: Any) -> ServiceHandle:
        """The handle with Serve's call options (``stream=True`` for a streaming method)."""
        return ServiceHandle(self._handle.options(**options), options.get("stream", self._stream))

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(getattr(self._handle, name), self._stream)
