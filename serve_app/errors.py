"""One place that turns failures into HTTP answers in OpenAI's error shape."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from deployments.errors import ServiceError, as_service_error, transient_ray_errors

logger = logging.getLogger("transcribe_serve")


def error_response(status: int, message: str, type_: str, code: str, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """``{"error": {"message", "type", "param", "code"}}`` with the given status."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def service_error_response(error: ServiceError) -> JSONResponse:
    """The answer for a typed failure, with ``Retry-After`` when the error says when to retry."""
    headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s else None
    return error_response(error.status, error.message, error.type, error.code, error.param, headers)


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    """A typed failure, or one of Ray's transient ones, in OpenAI's shape; anything else is a 500."""
    error = as_service_error(exc)
    if error is None:
        return await _unexpected(request, exc)
    return service_error_response(error)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "form")]
    param = ".".join(loc) or None
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    return error_response(400, message, "invalid_request_error", "invalid_parameter", param)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error", exc_info=exc)
    return error_response(500, "internal error; see the server logs", "server_error", "internal_error")


def install_error_handlers(app: FastAPI) -> None:
    """Register every mapping on ``app``; what a failure means is decided once, by ``as_service_error``."""
    from ray.exceptions import RayTaskError

    for failure in (ServiceError, RayTaskError, *transient_ray_errors()):
        app.add_exception_handler(failure, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
