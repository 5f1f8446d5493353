"""Failure classification tables: what an exception or an HTTP answer means for a dependency.

Pure: callers pass the wall-clock time in where a retry time must be computed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import ssl
from collections.abc import Callable, Container, Iterator, Mapping
from dataclasses import replace
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

from failsoft.policies.model import OK, Outcome, Verdict
from failsoft.policies.ratelimit import (
    Window,
    error_message,
    generic_reset,
    is_invalid_key,
    is_quota_exhausted,
    low_headroom,
    ratelimit_details,
    ratelimit_windows,
    reset_wait,
    retry_delay,
    retry_delay_in_text,
)

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
# Client libraries (aiohttp's ClientOSError) raise plain OSError subclasses carrying the errno, not the
# specific ConnectionResetError class: the errno still says what happened.
ERRNO_REASONS: Mapping[int, str] = {
    errno.ECONNREFUSED: "connection_refused",
    errno.ECONNRESET: "connection_reset",
    errno.EPIPE: "connection_reset",
    errno.ECONNABORTED: "connection_reset",
    errno.ETIMEDOUT: "timeout",
}


# PostgreSQL's answers to a session startup that mean "up, but admitting no new session" (SQLSTATE -> reason).
# Seen by a new session while the kept one works, each is `degraded`: the running sessions (the app's pools)
# still work. Without a working session only too_many_connections stays `degraded` (the server answers and
# serves the clients it has; every replica must publish the same for it); the others are failures.
POSTGRES_REFUSALS: Mapping[str, str] = {
    "53300": "too_many_connections",  # too many clients already; slots reserved for superusers; a role's limit
    "57P03": "starting_up",  # the database system is starting up / shutting down / not accepting connections
    "55000": "not_accepting_connections",  # database "x" is not currently accepting connections
}
POSTGRES_REFUSALS_DEGRADED_ALONE = frozenset({"too_many_connections"})


def postgres_refusal(sqlstate: str) -> str | None:
    """The reason for a session startup refused with ``sqlstate``, or None if that is not a refusal."""
    return POSTGRES_REFUSALS.get(sqlstate)


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
        if isinstance(e, OSError) and (by_errno := ERRNO_REASONS.get(e.errno or 0)) is not None:
            return by_errno, False
    for e in chain:
        if isinstance(e, OSError) and e.errno in _UNREACHABLE:
            return "unreachable", False
    if any(isinstance(e, OSError) for e in chain):
        return "connection_error", False
    return "error", False


def error_text(exc: BaseException) -> str:
    """``ConnectionRefusedError: [Errno 111] Connect call failed`` -- the caller redacts it.

    Library noise is left out: a connector error (aiohttp's ``Cannot connect to host h:p ssl:default [...]``)
    becomes ``cannot connect to h:p: Connection refused``; an ``ssl:`` setting echoed in a message is dropped (it
    says ``default`` even for plain HTTP); an exception without text says what it is (``timed out``).
    """
    os_error = getattr(exc, "os_error", None)
    host, port = getattr(exc, "host", None), getattr(exc, "port", None)
    if isinstance(os_error, OSError) and isinstance(host, str):
        # An SSLError's errno is OpenSSL's error class (1 for a failed verification), not an OS errno: its own text
        # says what failed, os.strerror(1) would say "Operation not permitted".
        tls = isinstance(os_error, ssl.SSLError)
        why = os.strerror(os_error.errno) if os_error.errno and not tls else _SSL_NOISE.sub("", str(os_error)).strip()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return f"cannot connect to {where}: {why or type(os_error).__name__}"[:500]
    text = _SSL_NOISE.sub("", str(exc)).strip()
    if not text:
        text = "timed out" if isinstance(exc, TimeoutError) else repr(exc)
    return f"{type(exc).__name__}: {text}"[:500]


# aiohttp puts its connector's TLS setting into messages: ``ssl:default`` (also for http://), ``ssl:<SSLContext ...>``.
_SSL_NOISE = re.compile(r" ssl:(?:default|True|False|None|<[^>]*>)")


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
        # A 503 with Retry-After says when to come back (RFC 9110); nothing is sent before then.
        wait = retry_after_seconds(headers, now) if status == 503 else None
        return Outcome(Verdict.FAILURE, "http_5xx", f"HTTP {status}", retry_after=wait)
    return Outcome(Verdict.FAILURE, f"http_{status}", f"HTTP {status}: not an expected status")


# --------------------------------------------------------------------------------------------------------
# LLM providers: the status, the headers and the start of the body together say what an answer means.

# Statuses the official SDKs retry by default (besides 429 and 5xx): the condition is expected to pass.
_TRANSIENT_4XX = frozenset({408, 409})
# Shapes of API keys a provider may echo in an error message ("Incorrect API key provided: sk-...").
_KEY_SHAPED = re.compile(r"\b(?:sk|pk|rk)[-_][A-Za-z0-9_*.\-]{5,}[A-Za-z0-9_*\-]|\bAIza[0-9A-Za-z_*\-]{10,}")
_MAX_MESSAGE = 200
_NOT_READ = object()  # the body was longer than what was read, so it was not parsed


def should_retry(headers: Mapping[str, str]) -> bool | None:
    """The provider's own verdict in ``x-should-retry`` (``true``/``false``), as the SDKs read it; None if absent."""
    value = headers.get("x-should-retry", "").strip().lower()
    return {"true": True, "false": False}.get(value)


def llm_answer(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    complete: bool,
    now: float,
    min_headroom: float,
    mask: Callable[[str], str] = lambda text: text,
) -> Outcome:
    """What an LLM provider's answer means, from its status, headers and (the first KiB of) its body.

    ``complete`` says whether ``body`` is the whole body; ``now`` is the wall clock (epoch seconds);
    ``mask`` removes the probe's own secrets from any provider text before it is kept.
    """
    parsed = _json(body) if complete else None
    windows = ratelimit_windows(headers, now)
    details: dict[str, Any] = {"ratelimit": ratelimit_details(windows, now)} if windows else {}
    if 200 <= status < 300:
        parsed = parsed if complete else _NOT_READ
        return _llm_success(headers, body, parsed, windows=windows, min_headroom=min_headroom, details=details)
    said = _provider_text(parsed, mask)
    text = f"HTTP {status}: {said}" if said else f"HTTP {status}"
    if status in (401, 403) or (status == 400 and is_invalid_key(parsed)):
        return Outcome(Verdict.FATAL, "auth", f"{text} (credentials were refused)", details=details)
    if status == 402 or (status in (400, 429) and is_quota_exhausted(parsed)):
        return Outcome(Verdict.FATAL, "quota_exhausted", f"{text} (quota or billing exhausted)", details=details)
    if status == 429:
        wait = _retry_wait(headers, parsed, windows, now, said)
        return Outcome(Verdict.DEGRADED, "rate_limited", text, retry_after=wait, details=details)
    outcome = _llm_error(status, should_retry(headers), text, details)
    if status in (503, 529):
        # Overloaded or unavailable with a Retry-After (Anthropic's 529, a 503): the SDKs wait that long before
        # trying again, and so does the probe (the scheduler sends nothing before retry_after).
        outcome = replace(outcome, retry_after=retry_after_seconds(headers, now))
    return outcome


def _llm_error(status: int, retry: bool | None, text: str, details: dict[str, Any]) -> Outcome:
    """Every other status; ``x-should-retry`` overrides whether it is expected to pass, as in the SDKs."""
    transient = status >= 500 or status in _TRANSIENT_4XX
    reason = "overloaded" if status == 529 else "http_5xx" if status >= 500 else f"http_{status}"
    if status == 404 or (300 <= status < 400):
        # Contract: a 404 on the probe path is a wrong base_url or model; waiting will not fix it.
        return Outcome(Verdict.FATAL, "misconfigured", f"{text} (check base_url and model)", details=details)
    if retry is False and transient:
        return Outcome(Verdict.FATAL, reason, f"{text} (x-should-retry: false)", details=details)
    if transient or retry is True:
        return Outcome(Verdict.FAILURE, reason, text, details=details)
    if 400 <= status < 500:
        return Outcome(Verdict.FATAL, "misconfigured", f"{text} (the provider rejected the probe)", details=details)
    return Outcome(Verdict.FAILURE, reason, f"{text}: not an expected status", details=details)


def _llm_success(
    headers: Mapping[str, str], body: bytes, parsed: Any, *, windows: Mapping[str, Window], min_headroom: float,
    details: dict[str, Any],
) -> Outcome:
    # A listing can be larger than we read (parsed is _NOT_READ): then its start must look like a JSON object.
    looks_right = body.lstrip()[:1] == b"{" if parsed is _NOT_READ else isinstance(parsed, dict)
    if not looks_right:
        kind = headers.get("content-type", "no content type").split(";")[0].strip()[:60]
        return Outcome(Verdict.FAILURE, "bad_response", f"the answer is not a JSON object ({kind})", details=details)
    low = low_headroom(windows, min_headroom)
    if low is not None:
        kind, w = low
        return Outcome(Verdict.DEGRADED, "low_headroom",
                       f"{kind}: {w.remaining} of {w.limit} left ({w.fraction() or 0:.1%})", details=details)
    return Outcome(Verdict.OK, details=details)


def _retry_wait(
    headers: Mapping[str, str], parsed: Any, windows: Mapping[str, Window], now: float, said: str | None
) -> float | None:
    """The first retry time given: retry-after(-ms), Gemini's RetryInfo, the reset headers, the message."""
    for wait in (retry_after_seconds(headers, now), retry_delay(parsed), reset_wait(windows),
                 generic_reset(headers, now), retry_delay_in_text(said)):
        if wait is not None:
            return wait
    return None


def _json(body: bytes) -> Any:
    with contextlib.suppress(ValueError, RecursionError):
        return json.loads(body)
    return None


def _provider_text(parsed: Any, mask: Callable[[str], str]) -> str | None:
    """The provider's error message, without our secrets nor anything shaped like a key, kept short."""
    message = error_message(parsed)
    if message is None:
        return None
    message = _KEY_SHAPED.sub("***", mask(message))
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 3] + "..."
