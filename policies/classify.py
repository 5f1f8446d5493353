"""Failure classification tables: what an exception or an HTTP answer means for a dependency.

Pure: callers pass the wall-clock time in where a retry time must be computed.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import ssl
from collections.abc import Container, Iterator, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime

from probes.base import OK, Outcome, Verdict

# (exception type, reason), first match wins; the exception's cause chain is searched too, so that
# a library error wrapping ConnectionRefusedError is still "connection_refused".
EXCEPTION_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (TimeoutError, "timeout"),
    (ConnectionRefusedError, "connection_refused"),
    (ConnectionResetError, "connection_reset"),
    (BrokenPipeError, "connection_reset"),
    (ConnectionAbortedError, "connection_reset"),
    (socket.gaierror, "dns"),
    (ssl.SSLError, "tls"),
    (ssl.CertificateError, "tls"),
)
_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what caused it (``__cause__``, ``__context__``, aiohttp's ``os_error``), without loops."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend([e.__cause__, e.__context__, getattr(e, "os_error", None)])


def exception_reason(exc: BaseException) -> tuple[str, bool]:
    """(reason code, fatal) for an exception a probe raised. Fatal means down at once (no threshold)."""
    chain = list(causes(exc))
    for e in chain:
        reason = getattr(e, "reason", None)
        if isinstance(reason, str) and hasattr(e, "fatal"):  # probes.base.ProbeFailure
            return reason, bool(e.fatal)
    for e in chain:
        for cls, reason in EXCEPTION_REASONS:
            if isinstance(e, cls):
                return reason, False
    for e in chain:
        if isinstance(e, OSError) and e.errno in _UNREACHABLE:
            return "unreachable", False
    if any(isinstance(e, OSError) for e in chain):
        return "connection_error", False
    return "error", False


def error_text(exc: BaseException) -> str:
    """``ConnectionRefusedError: [Errno 111] Connect call failed`` -- the caller redacts it."""
    text = str(exc).strip() or repr(exc)
    return f"{type(exc).__name__}: {text}"[:500]


def retry_after_seconds(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date); None if absent.

    ``headers`` must be case-insensitive (aiohttp's are); ``now`` is the wall clock in epoch seconds.
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        with contextlib.suppress(ValueError):
            ms = float(raw_ms)
            if 0 <= ms < 86_400_000:
                return ms / 1000
    raw = headers.get("retry-after")
    if raw is None:
        return None
    with contextlib.suppress(ValueError):
        seconds = float(raw)
        return seconds if 0 <= seconds < 86_400 else None
    with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
        when = parsedate_to_datetime(raw)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, min(when.timestamp() - now, 86_400.0))
    return None


def http_status(status: int, headers: Mapping[str, str], now: float, expected: Container[int]) -> Outcome:
    """What an HTTP status means for a plain HTTP dependency (LLM providers refine 429 and errors)."""
    if status in expected:
        return OK
    if status in (401, 403):
        return Outcome(Verdict.FATAL, "auth", f"HTTP {status}: credentials were refused")
    if status == 404:
        return Outcome(Verdict.FATAL, "misconfigured", "HTTP 404: nothing at the probe path")
    if status == 429:
        wait = retry_after_seconds(headers, now)
        return Outcome(Verdict.DEGRADED, "rate_limited", "HTTP 429: rate limited", retry_after=wait)
    if status >= 500:
        return Outcome(Verdict.FAILURE, "http_5xx", f"HTTP {status}")
    return Outcome(Verdict.FAILURE, f"http_{status}", f"HTTP {status}: not an expected status")
