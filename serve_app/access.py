"""API keys and per-key rate limits, checked before any route runs.

Keys are configured as SHA-256 hashes (``sha256:<hex>``), or read as plain keys from an environment
variable or a secret file and hashed at start-up; requests send ``Authorization: Bearer <key>``.
``/healthz`` (and ``/health``, the original backend's route) stays open so load balancers and Kubernetes
probes need no key, and so do the browser page and its static files, which ask the user for a key.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response

from deployments.errors import RateLimited, Unauthorized
from serve_app.errors import service_error_response
from serve_app.settings import IngressSettings
from serve_app.web import is_page_path

OPEN_PATHS = frozenset({"/healthz", "/health"})
MAX_TRACKED_CLIENTS = 10_000


def key_hash(key: str) -> str:
    """The form a key is stored and compared in."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _as_hash(entry: str) -> str:
    entry = entry.strip()
    return entry if entry.startswith("sha256:") else key_hash(entry)


def load_key_hashes(settings: IngressSettings) -> list[str]:
    """Every configured key as a hash; a configured source that is missing is an error, not 'no keys'."""
    hashes = [_as_hash(h) for h in settings.api_key_hashes]
    if settings.api_keys_env:
        value = os.environ.get(settings.api_keys_env)
        if value is None:
            raise ValueError(f"ingress.api_keys_env names {settings.api_keys_env!r}, which is not set")
        hashes += [_as_hash(k) for k in value.split(",") if k.strip()]
    if settings.api_keys_file:
        path = Path(settings.api_keys_file)
        if not path.is_file():
            raise ValueError(f"ingress.api_keys_file {str(path)!r} does not exist")
        lines = path.read_text().splitlines()
        hashes += [_as_hash(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if (settings.api_keys_env or settings.api_keys_file) and not hashes:
        raise ValueError("API keys are configured but none were found; refusing to start open")
    return hashes


class RateLimiter:
    """A token bucket per client: ``per_minute`` requests a minute, bursts up to the same number."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.refill_per_s = per_minute / 60.0
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def acquire(self, client: str) -> float:
        """Take a token for ``client``; returns 0, or the seconds to wait when the bucket is empty."""
        now = self._clock()
        tokens, last = self._buckets.pop(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.refill_per_s)
        wait = 0.0 if tokens >= 1 else (1 - tokens) / self.refill_per_s
        self._buckets[client] = (tokens - 1 if wait == 0 else tokens, now)
        while len(self._buckets) > MAX_TRACKED_CLIENTS:
            self._buckets.popitem(last=False)
        return wait


class AccessControl:
    """Decides, from a request's path, key and client address, whether it may proceed."""

    def __init__(self, settings: IngressSettings) -> None:
        self.key_hashes = load_key_hashes(settings)
        limit = settings.rate_limit_per_minute
        self.limiter = RateLimiter(limit) if limit else None

    @property
    def keys_required(self) -> bool:
        """Whether requests need an API key (the page asks for one only then)."""
        return bool(self.key_hashes)

    def identity(self, authorization: str | None, client: str) -> str:
        """The caller's key hash (or address when keys are off); raises Unauthorized."""
        if not self.key_hashes:
            return f"client:{client}"
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        presented = key_hash(key.strip())
        if not any(hmac.compare_digest(presented, known) for known in self.key_hashes):
            raise Unauthorized("invalid API key")
        return presented

    def check(self, path: str, authorization: str | None, client: str) -> None:
        """Raise Unauthorized or RateLimited, or return when the request may go on."""
        if path in OPEN_PATHS or is_page_path(path):
            return
        who = self.identity(authorization, client)
        if self.limiter is not None and (wait := self.limiter.acquire(who)) > 0:
            error = RateLimited(f"rate limit of {int(self.limiter.capacity)} requests a minute reached")
            error.retry_after_s = math.ceil(wait)
            raise error


def install(app: FastAPI, access: AccessControl) -> None:
    """Make ``access`` the policy of ``app``: kept on the app's state, checked by its middleware."""
    app.state.access = access
    app.middleware("http")(access_middleware)


async def access_middleware(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """FastAPI middleware: refuse before routing, in OpenAI's error shape, by the policy on the app's state."""
    policy: AccessControl = request.app.state.access
    try:
        policy.check(request.url.path, request.headers.get("authorization"),
                     request.client.host if request.client else "unknown")
    except (Unauthorized, RateLimited) as error:
        return service_error_response(error)
    return await call_next(request)
