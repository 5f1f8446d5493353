"""Startup grace: before a dependency has ever answered, its failures do not make the level worse.

A sidecar usually starts before what it watches is reachable (another sidecar such as cloud-sql-proxy, a mesh
proxy, DNS). Like Kubernetes' startupProbe, which keeps liveness and readiness checks from judging a container
that is still starting, ``startup_grace`` keeps the policy from judging a dependency that has not answered once:
until it answers (healthy or degraded) or its grace ends, the policy sees it as healthy. Its own entry in the State
stays truthful (``down``, with the reason) and says ``starting: true``. Once it has answered, it is judged like
any other; once the grace has ended, a dependency that never answered is judged as it is.

Pure: the caller passes monotonic times; nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from failsoft.policies.model import DependencyStatus, DepState

ANSWERED = (DepState.HEALTHY, DepState.DEGRADED)


@dataclass(frozen=True, slots=True)
class StartupGrace:
    """Each dependency's grace (seconds from ``started``) and which ones have answered at least once."""

    started: float
    grace: Mapping[str, float]
    answered: frozenset[str] = frozenset()

    def step(self, status: DependencyStatus) -> StartupGrace:
        """Take a new status: a dependency that answers (healthy or degraded) leaves its grace for good."""
        if status.state in ANSWERED and status.name not in self.answered:
            return replace(self, answered=self.answered | {status.name})
        return self

    def starting(self, now: float) -> frozenset[str]:
        """The dependencies that have never answered and are still within their grace at ``now``."""
        return frozenset(name for name, g in self.grace.items()
                         if name not in self.answered and now < self.started + g)

    def view(self, deps: Mapping[str, DependencyStatus], now: float) -> Mapping[str, DependencyStatus]:
        """What the policy judges: starting dependencies that are not answering count as healthy."""
        starting = self.starting(now)
        if not starting:
            return deps
        return {name: replace(d, state=DepState.HEALTHY, reason=None)
                if name in starting and d.state not in ANSWERED else d
                for name, d in deps.items()}

    def deadline(self, now: float) -> float | None:
        """The next time at which a grace ends (the policy must look again then), or None."""
        ends = [self.started + self.grace[name] for name in self.starting(now)]
        return min(ends) if ends else None
