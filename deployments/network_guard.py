"""An SSRF guard for the downloader: refuse connections to loopback, private, link-local and similar addresses.

The downloader fetches user-supplied URLs with yt-dlp and youtube-transcript-api (requests) in this process.
Checking the URL up front is not enough: a redirect, a DNS answer with several addresses, or a name that
resolves differently a second later (DNS rebinding) would reach an internal address after the check. So
``socket.getaddrinfo`` is wrapped once for the whole process and every address it returns is classified at
connect time; the wrapper only acts inside ``refuse_forbidden_addresses(...)``, whose policy lives in a
``ContextVar``, so other callers in the process (Ray, Serve, health checks) are untouched.

Scope: code running in the guarded context, including ``asyncio.to_thread`` (it copies the context). Not
covered: plain ``threading.Thread``/``ThreadPoolExecutor`` workers started inside the guard (no context
copy; e.g. yt-dlp's ``concurrent_fragment_downloads`` > 1), ``loop.getaddrinfo`` (asyncio's executor does not
copy the context), subprocesses (ffmpeg or other external downloaders), and HTTP proxies (the proxy resolves
the target, so only the proxy's own address is checked). The downloader therefore keeps yt-dlp on its native
downloaders, one fragment at a time (``deployments.media_download.NATIVE_DOWNLOADS``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

MARKER = "forbidden address"
"""Stable text in every refusal, so a caller can recognise it inside another library's error message."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CLOUD_METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, Oracle
    "169.254.170.2",  # AWS ECS task metadata
    "fd00:ec2::254",  # AWS IMDS over IPv6
    "100.100.100.200",  # Alibaba Cloud
))
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
    "100.64.0.0/10",  # shared address space (carrier-grade NAT)
    "fc00::/7",  # unique local
    "fec0::/10",  # deprecated site-local
    "64:ff9b:1::/48",  # local-use NAT64
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class ForbiddenAddress(OSError):
    """A host resolved to an address the guard refuses; an OSError so that HTTP clients wrap it as a connect error."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        super().__init__(f"{MARKER}: host {host!r} resolves to {address} ({reason})")
        self.host = host
        self.address = address
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        """Rebuild from the three fields, since Ray pickles exceptions across processes."""
        return (type(self), (self.host, self.address, self.reason))


@dataclass(frozen=True)
class _Policy:
    """What the current context allows: private addresses at all, and hosts that are never filtered."""

    allow_private: bool
    allowed_hosts: frozenset[str]


_policy: ContextVar[_Policy | None] = ContextVar("network_guard_policy", default=None)
_install_lock = threading.Lock()
_next_getaddrinfo: Callable[..., list[tuple[Any, ...]]] | None = None


def is_forbidden(address: str) -> str | None:
    """Why an IP address (v4 or v6 text) must not be reached, or None when it is public; ValueError if not an IP."""
    if ":" in address:  # an IPv6 zone ("fe80::1%eth0") does not change what the address is
        address = address.partition("%")[0]
    return _classify(ipaddress.ip_address(address))


def _classify(ip: IPAddress) -> str | None:
    """The reason for one parsed address, looking through IPv6 forms that embed an IPv4 address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return _classify(embedded)
    if ip in _CLOUD_METADATA:
        return "cloud metadata"
    if ip.is_unspecified or ip in _THIS_NETWORK:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if any(ip in network for network in _PRIVATE_NETWORKS):
        return "private"
    if ip.is_reserved or ip.is_private or not ip.is_global:
        return "reserved"
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped (::ffff:a.b.c.d), 6to4 (2002::/16) or NAT64 (64:ff9b::/96) one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _normalise_host(host: str | bytes) -> str:
    """A comparable spelling of a host: lower case, no brackets or trailing dot, IP literals in canonical form."""
    text = host.decode("ascii", "replace") if isinstance(host, bytes) else host
    text = text.strip().removeprefix("[").removesuffix("]").rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def _check_answer(host: str | bytes, answer: Sequence[tuple[Any, ...]], policy: _Policy) -> None:
    """Raise ForbiddenAddress if any address in a getaddrinfo answer is refused under ``policy``.

    ``allow_private`` opens private and loopback ranges but never the cloud metadata addresses; only a
    host named in ``allowed_hosts`` passes whatever it resolves to.
    """
    if _normalise_host(host) in policy.allowed_hosts:
        return
    name = host.decode("ascii", "replace") if isinstance(host, bytes) else host
    for family, _type, _proto, _canonname, sockaddr in answer:
        address = str(sockaddr[0])
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise ForbiddenAddress(name, address, "not an internet address")
        reason = is_forbidden(address)
        if reason is not None and (not policy.allow_private or reason == "cloud metadata"):
            raise ForbiddenAddress(name, address, reason)


def _guarded_getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0,
                         flags: int = 0) -> list[tuple[Any, ...]]:
    """socket.getaddrinfo that, inside ``refuse_forbidden_addresses``, refuses answers holding a forbidden address."""
    resolve = _next_getaddrinfo
    if resolve is None:  # unreachable once installed; keeps the wrapper safe if called directly
        resolve = socket.getaddrinfo
    answer = resolve(host, port, family, type, proto, flags)
    policy = _policy.get()
    if policy is not None and host is not None:
        _check_answer(host, answer, policy)
    return answer


def install() -> None:
    """Wrap ``socket.getaddrinfo`` for the whole process, once; calling again does nothing."""
    global _next_getaddrinfo
    with _install_lock:
        if _next_getaddrinfo is not None:
            return
        _next_getaddrinfo = socket.getaddrinfo
        socket.getaddrinfo = _guarded_getaddrinfo


def _make_policy(allow_private: bool, allowed_hosts: Iterable[str]) -> _Policy:
    """A policy with its allowed hosts normalised like the hosts they are compared with."""
    return _Policy(allow_private, frozenset(_normalise_host(h) for h in allowed_hosts))


@contextlib.contextmanager
def refuse_forbidden_addresses(allow_private: bool, allowed_hosts: Iterable[str] = ()) -> Iterator[None]:
    """Refuse forbidden addresses for connections made in this context (and ``asyncio.to_thread`` calls from it).

    ``allowed_hosts`` are exact host names or IP literals (case-insensitive) that are never filtered. The innermost
    guard wins when guards are nested.
    """
    install()
    token = _policy.set(_make_policy(allow_private, allowed_hosts))
    try:
        yield
    finally:
        _policy.reset(token)


def is_refusal(error: BaseException) -> bool:
    """Whether an error, its causes, or its message come from this guard (yt-dlp keeps only the text)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ForbiddenAddress) or MARKER in str(current):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
