"""Typed failures that the deployments raise and the ingress maps to HTTP answers.

Each class carries the HTTP status and an OpenAI-style error ``type``/``code`` so that a failure deep
inside a replica reaches the client as a 4xx with a reason instead of a 500.
"""

from __future__ import annotations

import functools


class ServiceError(Exception):
    """Base of every failure the service reports to a client."""

    status: int = 500
    type: str = "server_error"
    code: str = "internal_error"
    retry_after_s: int | None = None
    """When set, the answer carries ``Retry-After`` with this many seconds."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def __reduce__(self):
        # Ray pickles exceptions across processes; keep the keyword-only fields.
        return (_rebuild, (type(self), self.message, self.param, self.code))


def _rebuild(cls: type[ServiceError], message: str, param: str | None, code: str) -> ServiceError:
    return cls(message, param=param, code=code)


class InvalidRequest(ServiceError):
    """A parameter is missing, malformed or not allowed."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_parameter"


class NotFound(ServiceError):
    """The job or transcript asked for does not exist."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"


class UnknownModel(ServiceError):
    """The request names a model the configuration does not allow."""

    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class PayloadTooLarge(ServiceError):
    """The upload, download or audio is past a configured limit."""

    status = 413
    type = "invalid_request_error"
    code = "too_large"


class UnsupportedAudio(ServiceError):
    """The bytes are not audio that ffmpeg can decode."""

    status = 415
    type = "invalid_request_error"
    code = "unsupported_audio"


class SourceFailed(ServiceError):
    """The source exists as a request but cannot be turned into a transcript (permanent)."""

    status = 422
    type = "invalid_request_error"
    code = "source_failed"


class SourceUnreachable(ServiceError):
    """A network failure while fetching the source; retrying later may succeed."""

    status = 424
    type = "upstream_error"
    code = "source_unreachable"


class Overloaded(ServiceError):
    """A deployment's queue is full or it has no replica right now; the client should retry shortly."""

    status = 503
    type = "server_error"
    code = "overloaded"
    retry_after_s = 1


class Unauthorized(ServiceError):
    """No API key, or one that is not configured."""

    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class RateLimited(ServiceError):
    """The caller's key passed its request rate."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


def unwrap(error: BaseException) -> BaseException:
    """The original exception behind Ray's RayTaskError wrapper, if there is one."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error


@functools.cache
def transient_ray_errors() -> tuple[type[Exception], ...]:
    """Ray's failures that retrying shortly may get past: a full queue, no replica, a replica or its data lost."""
    from ray.exceptions import ActorUnavailableError, ObjectLostError, RayActorError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    return (BackPressureError, DeploymentUnavailableError, RayActorError, ActorUnavailableError, ObjectLostError)


def as_service_error(error: BaseException) -> ServiceError | None:
    """The one mapping from a failure to what a client is told; None for a bug (a 500 with nothing said).

    A ServiceError behind Ray's wrapper is itself; Ray's transient failures are ``Overloaded`` (503 with
    Retry-After), so the HTTP answer, the stream's error event and a job's retry all agree.
    """
    cause = unwrap(error)
    if isinstance(cause, ServiceError):
        return cause
    if isinstance(cause, transient_ray_errors()):
        return Overloaded(f"the service is at capacity or lost a replica mid-request; retry shortly "
                          f"({type(cause).__name__})")
    return None
