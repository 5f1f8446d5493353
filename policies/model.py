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

    def describe(self) -> str:
        """``db down (connection refused)``: the dependency, its state and why, for reasons and logs."""
        if self.reason:
            return f"{self.name} {self.state} ({self.reason.replace('_', ' ')})"
        return f"{self.name} {self.state}"
