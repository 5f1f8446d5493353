"""The one shape every probe has, and the outcome it reports.

A probe is built from a dependency's config, answers ``await check()`` with an :class:`Outcome` or raises,
and releases what it holds in ``await aclose()``. Deadlines, timing and turning exceptions into outcomes
happen once, in the scheduler (``daemon.scheduler``), never inside a probe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class Verdict(StrEnum):
    """What one probe outcome means for the breaker."""

    OK = "ok"  # answered as expected
    DEGRADED = "degraded"  # answered, but slow, read-only, lagging, loading, rate limited, low on headroom
    FAILURE = "failure"  # counts towards unhealthy_threshold
    FATAL = "fatal"  # down at once, will not heal by waiting (auth, quota, misconfigured)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one probe.

    ``reason`` is a short stable code (``read_only``, ``connection_refused``); ``error`` is human text that
    must already be free of secrets; ``retry_after`` (seconds) forbids probing again before it has passed;
    ``details`` are extra figures published in the dependency's entry (``ratelimit``, ``replication_lag_s``).
    """

    verdict: Verdict
    reason: str | None = None
    error: str | None = None
    retry_after: float | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


OK = Outcome(Verdict.OK)


def degraded(reason: str, error: str | None = None, **details: Any) -> Outcome:
    """An answer that works but is not healthy."""
    return Outcome(Verdict.DEGRADED, reason, error, details=details)


class ProbeFailure(Exception):
    """Raised by a probe that knows exactly why it failed (a code from the classification tables)."""

    def __init__(self, reason: str, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.fatal = fatal


@dataclass(frozen=True, slots=True)
class ProbeHooks:
    """Callbacks the scheduler hands to a probe.

    ``connection_lost`` is called when a connection the probe keeps open drops between checks (the server
    crashed or closed it), so that the scheduler probes again at once instead of at the next interval.
    """

    connection_lost: Callable[[], None] = lambda: None


class Probe(Protocol):
    """A dependency check. ``check`` may be cancelled at the deadline and must leave the probe reusable."""

    async def check(self) -> Outcome:
        """Talk to the dependency once and say how it answered."""
        ...

    async def aclose(self) -> None:
        """Release connections; must not hang (terminate, do not wait for a graceful goodbye)."""
        ...
