"""The states a dependency can be in, as plain data handed from the daemon to the policy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class DepState(StrEnum):
    """How a dependency answers, as the app should see it."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    DOWN = "down"
    UNKNOWN = "unknown"


class BreakerState(StrEnum):
    """The circuit breaker in front of a dependency."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class DependencyStatus:
    """One dependency as last seen: the entry under ``dependencies`` in the published State."""

    name: str
    kind: str
    state: DepState = DepState.UNKNOWN
    breaker: BreakerState = BreakerState.CLOSED
    since: datetime | None = None
    latency_ms: float | None = None
    consecutive_failures: int = 0
    reason: str | None = None
    last_error: str | None = None
    retry_at: datetime | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    probes: int = 0  # how many outcomes were recorded; 0 means never probed
    prober: str | None = None  # fleet mode: the pod whose probe produced this status

    def describe(self) -> str:
        """``db down (connection refused)``: the dependency, its state and why, for reasons and logs."""
        if self.reason:
            return f"{self.name} {self.state} ({self.reason.replace('_', ' ')})"
        return f"{self.name} {self.state}"


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
