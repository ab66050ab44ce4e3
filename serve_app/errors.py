"""One place that turns failures into HTTP answers in OpenAI's error shape."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from deployments.errors import Overloaded, ServiceError

logger = logging.getLogger("transcribe_serve")


def error_response(status: int, message: str, type_: str, code: str, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """``{"error": {"message", "type", "param", "code"}}`` with the given status."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def unwrap(error: BaseException) -> BaseException:
    """The original exception behind Ray's RayTaskError wrapper, if there is one."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error


def service_error_response(error: ServiceError) -> JSONResponse:
    """The answer for a typed failure, with ``Retry-After`` when the error says when to retry."""
    headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s else None
    return error_response(error.status, error.message, error.type, error.code, error.param, headers)


async def _service_error(_: Request, exc: Exception) -> JSONResponse:
    error = unwrap(exc)
    if not isinstance(error, ServiceError):
        return await _unexpected(_, exc)
    return service_error_response(error)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "form")]
    param = ".".join(loc) or None
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    return error_response(400, message, "invalid_request_error", "invalid_parameter", param)


async def _replica_lost(_: Request, exc: Exception) -> JSONResponse:
    lost = type(unwrap(exc)).__name__
    return error_response(503, f"a replica or its data was lost mid-request; retry shortly ({lost})",
                          "server_error", "overloaded", headers={"Retry-After": str(Overloaded.retry_after_s)})


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error", exc_info=exc)
    return error_response(500, "internal error; see the server logs", "server_error", "internal_error")


def install_error_handlers(app: FastAPI) -> None:
    """Register every mapping on ``app``."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, ObjectLostError, RayTaskError

    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RayTaskError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for lost in (ActorDiedError, ActorUnavailableError, ObjectLostError):
        app.add_exception_handler(lost, _replica_lost)
