"""Which LLM provider the app should use right now, with no ping-pong between providers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from failsoft.policies.model import DependencyStatus, DepState


def _tier(dep: DependencyStatus | None) -> int | None:
    """0 healthy, 1 degraded and usable, 2 degraded by a rate limit, None unusable."""
    if dep is None:
        return None
    if dep.state is DepState.HEALTHY:
        return 0
    if dep.state is DepState.DEGRADED:
        return 2 if dep.reason == "rate_limited" else 1
    return None


def candidate(order: Sequence[str], deps: Mapping[str, DependencyStatus]) -> str | None:
    """The first healthy provider, else the first degraded one not rate limited, else the first degraded."""
    ranked = [(t, i, name) for i, name in enumerate(order) if (t := _tier(deps.get(name))) is not None]
    return min(ranked)[2] if ranked else None


@dataclass(frozen=True, slots=True)
class FailoverMachine:
    """Moving away from the active provider is immediate; moving back to a preferred one waits.

    A switch to a provider earlier in ``order`` happens only after it has been the candidate for
    ``recover_after`` without a break, unless the active provider became unusable.
    """

    order: tuple[str, ...]
    recover_after: float
    active: str | None = None
    pending: str | None = None
    pending_since: float | None = None

    def step(self, deps: Mapping[str, DependencyStatus], now: float) -> FailoverMachine:
        """Take the current dependency states at time ``now`` (monotonic seconds)."""
        best = candidate(self.order, deps)
        if best == self.active:
            return replace(self, pending=None, pending_since=None)
        active_usable = self.active is not None and _tier(deps.get(self.active)) is not None
        moving_back = (
            best is not None and self.active is not None and self.order.index(best) < self.order.index(self.active)
        )
        if not active_usable or not moving_back:
            return replace(self, active=best, pending=None, pending_since=None)
        since = self.pending_since if self.pending == best and self.pending_since is not None else now
        return replace(self, pending=best, pending_since=since).advance(now)

    def advance(self, now: float) -> FailoverMachine:
        """Switch back to the pending preferred provider once it has held for ``recover_after``."""
        held = self.pending_since is not None and now - self.pending_since >= self.recover_after
        if self.pending is not None and held:
            return replace(self, active=self.pending, pending=None, pending_since=None)
        return self

    def deadline(self) -> float | None:
        """When ``advance`` may next switch, or None."""
        return None if self.pending_since is None else self.pending_since + self.recover_after
