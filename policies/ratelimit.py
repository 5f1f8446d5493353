"""LLM provider rate limits, read from answers: headroom figures, retry times, and rate limit versus quota.

Pure: no IO, no clock reads; callers pass the wall-clock time (epoch seconds) in. Nothing here raises on
odd input: a header or body that makes no sense is ignored, because a provider (or a gateway in front of
it) sending nonsense must never break the probe.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MAX_WAIT = 86_400.0  # a retry or reset time further away than a day is not believed

# Go's time.Duration text, as OpenAI sends it (``6m0s``, ``12ms``, ``1h2m3.5s``, ``300us``).
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|μs|ns)")
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9}
# "Please try again in 20s." (OpenAI), "Please retry in 36.4s." (Gemini): the last resort for a retry time.
_RETRY_IN_TEXT = re.compile(r"(?:try again|retry) in ((?:\d+(?:\.\d*)?(?:h|ms|m|s|us|ns))+)", re.I)

# (kind, header prefix, header suffix): x-ratelimit-remaining-requests, anthropic-ratelimit-requests-remaining.
_OPENAI_KINDS = ("requests", "tokens")
_ANTHROPIC_KINDS = ("requests", "tokens", "input-tokens", "output-tokens")

# Error codes that mean money or quota, not a short-term rate limit (OpenAI `code`/`type`, Anthropic `type`).
QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "billing_not_active", "billing_error"})
# Anthropic says "You have reached your specified API usage limits" or "Your credit balance is too low".
_QUOTA_TEXT = re.compile(r"usage limit|spend(?:ing)? limit|credit balance|billing", re.I)
_PER_DAY = re.compile(r"per ?day", re.I)
_GOOGLE_TYPE = "type.googleapis.com/google.rpc."


# ---------------------------------------------------------------------------------------------------------
# Time formats


def go_duration(text: object) -> float | None:
    """Seconds from ``6m0s``, ``12ms``, ``1h2m3.5s``, ``3s`` or a plain number of seconds; None for anything else."""
    if not isinstance(text, str):
        return None
    raw = text.strip()
    if not raw or len(raw) > 64:
        return None
    seconds = _number(raw)
    if seconds is None:
        parts = _GO_PART.findall(raw)
        if not parts or "".join(n + u for n, u in parts) != raw:
            return None
        seconds = sum(float(n) * _GO_UNITS[u] for n, u in parts)
    return seconds if 0 <= seconds <= MAX_WAIT else None


def rfc3339(text: object) -> float | None:
    """Epoch seconds from an RFC 3339 time (``2026-11-29T12:00:03Z``); a time without an offset is UTC."""
    if not isinstance(text, str) or not 0 < len(text) <= 64:
        return None
    with contextlib.suppress(ValueError, OverflowError, OSError):
        when = datetime.fromisoformat(text.strip())
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    return None


def iso_utc(epoch: float) -> str | None:
    """``2026-11-29T12:00:03.120Z`` (the State's time format), or None for a time that cannot be shown."""
    with contextlib.suppress(ValueError, OverflowError, OSError):
        t = datetime.fromtimestamp(epoch, UTC)
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    return None


def _number(text: str) -> float | None:
    with contextlib.suppress(ValueError):
        value = float(text)
        return value if math.isfinite(value) else None
    return None


def _count(text: object) -> int | None:
    """A non-negative whole number from a header; ``-1``, ``""``, ``1.5``, ``abc`` and huge values are None."""
    if not isinstance(text, str):
        return None
    raw = text.strip()
    if not raw.isascii() or not raw.isdigit() or len(raw) > 15:
        return None
    return int(raw)


# ---------------------------------------------------------------------------------------------------------
# Headroom


@dataclass(frozen=True, slots=True)
class Window:
    """One rate limit window as a provider reports it; any figure may be unknown."""

    remaining: int | None = None
    limit: int | None = None
    reset_after: float | None = None  # seconds from the answer until the window refills

    def fraction(self) -> float | None:
        """remaining / limit, or None when the figures are missing or make no sense."""
        if self.remaining is None or not self.limit or self.remaining > self.limit:
            return None
        return self.remaining / self.limit


def ratelimit_windows(headers: Mapping[str, str], now: float) -> dict[str, Window]:
    """OpenAI ``x-ratelimit-*`` and Anthropic ``anthropic-ratelimit-*`` figures by kind (``requests``, ``tokens``).

    ``headers`` must be case-insensitive (aiohttp's are). Kinds with no usable figure are left out.
    """
    out: dict[str, Window] = {}
    for kind in _OPENAI_KINDS:
        w = Window(
            _count(headers.get(f"x-ratelimit-remaining-{kind}")),
            _count(headers.get(f"x-ratelimit-limit-{kind}")) or None,
            go_duration(headers.get(f"x-ratelimit-reset-{kind}")),
        )
        if w != Window():
            out[kind] = w
    for kind in _ANTHROPIC_KINDS:
        reset_at = rfc3339(headers.get(f"anthropic-ratelimit-{kind}-reset"))
        w = Window(
            _count(headers.get(f"anthropic-ratelimit-{kind}-remaining")),
            _count(headers.get(f"anthropic-ratelimit-{kind}-limit")) or None,
            _clamp_wait(reset_at - now) if reset_at is not None else None,
        )
        if w != Window():
            out.setdefault(kind.replace("-", "_"), w)  # both families at once: the OpenAI figures win
    return out


def low_headroom(windows: Mapping[str, Window], min_headroom: float) -> tuple[str, Window] | None:
    """The kind with the least headroom when its remaining/limit is under ``min_headroom``, else None."""
    scored = [(f, kind, w) for kind, w in windows.items() if (f := w.fraction()) is not None and f < min_headroom]
    if not scored:
        return None
    _, kind, window = min(scored)
    return kind, window


def ratelimit_details(windows: Mapping[str, Window], now: float) -> dict[str, dict[str, Any]]:
    """The ``ratelimit`` entry of the State: remaining, limit and reset (a UTC time) per kind."""
    return {
        kind: {
            "remaining": w.remaining,
            "limit": w.limit,
            "reset": iso_utc(now + w.reset_after) if w.reset_after is not None else None,
        }
        for kind, w in windows.items()
    }


def _clamp_wait(seconds: float) -> float | None:
    return max(0.0, seconds) if seconds <= MAX_WAIT else None


# ---------------------------------------------------------------------------------------------------------
# Error bodies


def error_object(body: object) -> Mapping[str, Any]:
    """The ``error`` object of an OpenAI, Anthropic or Gemini error body (empty when there is none)."""
    if not isinstance(body, Mapping):
        return {}
    err = body.get("error")
    if isinstance(err, Mapping):
        return err
    if isinstance(err, str):  # Ollama and some gateways: {"error": "model not found"}
        return {"message": err}
    detail = body.get("detail")  # vLLM and FastAPI gateways: {"detail": "..."}
    return {"message": detail} if isinstance(detail, str) else {}


def error_message(body: object) -> str | None:
    """The provider's human message from an error body, on one line, or None."""
    message = error_object(body).get("message")
    if not isinstance(message, str) or not message.strip():
        return None
    return " ".join(message.split())


def _google_details(err: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    details = err.get("details")
    if not isinstance(details, list):
        return []
    return [d for d in details if isinstance(d, Mapping) and str(d.get("@type", "")).startswith(_GOOGLE_TYPE)]


def _is_google(err: Mapping[str, Any]) -> bool:
    return isinstance(err.get("status"), str) or bool(_google_details(err))


def _google_per_day(err: Mapping[str, Any]) -> bool:
    """A Gemini quota violation with a per-day quota id (``GenerateRequestsPerDayPerProjectPerModel-FreeTier``)."""
    texts: list[str] = []
    for d in _google_details(err):
        for v in d.get("violations") or []:
            if isinstance(v, Mapping):
                texts += [str(v.get("quotaId", "")), str(v.get("description", ""))]
        metadata = d.get("metadata")
        if isinstance(metadata, Mapping):
            texts += [str(v) for v in metadata.values()]
    texts.append(str(err.get("message", "")))
    return any(_PER_DAY.search(t) for t in texts)


def is_quota_exhausted(body: object) -> bool:
    """True when an error body says quota or billing is exhausted (waiting a few seconds will not help)."""
    err = error_object(body)
    codes = {err.get("code"), err.get("type")}
    if codes & QUOTA_CODES:
        return True
    if _is_google(err):
        # Gemini says "You exceeded your current quota ... billing" for per-minute limits too: only the quota id
        # tells a daily quota from a rate limit.
        return _google_per_day(err)
    if "rate_limit_exceeded" in codes:
        return False
    message = error_message(body)
    return message is not None and _QUOTA_TEXT.search(message) is not None


def is_invalid_key(body: object) -> bool:
    """Gemini answers a bad key with 400 ``API_KEY_INVALID`` (not 401); this spots it."""
    err = error_object(body)
    reasons = [str(d.get("reason", "")) for d in _google_details(err)]
    message = error_message(body) or ""
    return "API_KEY_INVALID" in reasons or "API key not valid" in message


def retry_delay(body: object) -> float | None:
    """Seconds from Gemini's ``RetryInfo.retryDelay`` (``"3s"``) in an error body, or None."""
    for d in _google_details(error_object(body)):
        if d.get("@type") == _GOOGLE_TYPE + "RetryInfo":
            return go_duration(d.get("retryDelay"))
    return None


def retry_delay_in_text(message: str | None) -> float | None:
    """Seconds from "Please try again in 20s" in a provider's message: only used when nothing better exists."""
    m = _RETRY_IN_TEXT.search(message or "")
    return go_duration(m[1]) if m else None


def reset_wait(windows: Mapping[str, Window]) -> float | None:
    """How long a 429 says to wait by its reset headers: the latest reset among exhausted windows.

    When no window says it is exhausted, the latest reset of all: waiting too long costs a probe
    interval, contacting a provider before its retry time is what a rate limit forbids.
    """
    exhausted = [w.reset_after for w in windows.values() if w.remaining == 0 and w.reset_after is not None]
    candidates = exhausted or [w.reset_after for w in windows.values() if w.reset_after is not None]
    return max(candidates) if candidates else None


def generic_reset(headers: Mapping[str, str], now: float) -> float | None:
    """``ratelimit-reset`` / ``x-ratelimit-reset`` of gateways: seconds from now, or an epoch time."""
    for name in ("ratelimit-reset", "x-ratelimit-reset"):
        value = _number(headers.get(name, "").strip())
        if value is None or value < 0:
            continue
        wait = value - now if value > 1e9 else value  # a value this large can only be an epoch time
        return _clamp_wait(wait)
    return None
