"""Declarative policy: ordered rules turn dependency states into a target service level."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from failsoft.policies.model import DependencyStatus, DepState

DEFAULT_LEVELS = ("full", "degraded", "limited", "cache_only")


def _down(s: DepState) -> bool:
    return s is DepState.DOWN


def _not_healthy(s: DepState) -> bool:
    return s is not DepState.HEALTHY


def _degraded(s: DepState) -> bool:
    return s is DepState.DEGRADED


# matcher name -> (quantifier, test of one state). Config validation uses the same table.
MATCHERS: Mapping[str, tuple[Callable[[Iterable[object]], bool], Callable[[DepState], bool]]] = {
    "any_down": (any, _down),
    "all_down": (all, _down),
    "any_not_healthy": (any, _not_healthy),
    "all_not_healthy": (all, _not_healthy),
    "any_degraded": (any, _degraded),
}


@dataclass(frozen=True, slots=True)
class Condition:
    """One matcher over a list of dependencies, e.g. ``any_down: [db]``."""

    matcher: str
    dependencies: tuple[str, ...]

    def explain(self, deps: Mapping[str, DependencyStatus]) -> str | None:
        """Why this condition holds (``db down (connection refused)``), or None when it does not."""
        quantifier, test = MATCHERS[self.matcher]
        states = [deps[name].state if name in deps else DepState.UNKNOWN for name in self.dependencies]
        if not self.dependencies or not quantifier(test(s) for s in states):
            return None
        hits = [deps[n] for n, s in zip(self.dependencies, states, strict=True) if test(s) and n in deps]
        if quantifier is all and len(hits) > 1:
            return ", ".join(h.name for h in hits) + f" {hits[0].state}"
        return "; ".join(h.describe() for h in hits) if hits else f"{self.matcher} {list(self.dependencies)}"


@dataclass(frozen=True, slots=True)
class Rule:
    """``level`` applies when every condition in ``when`` holds."""

    level: str
    when: tuple[Condition, ...]
    message: str | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """Levels best to worst, rules top to bottom, and the hysteresis for getting better."""

    levels: tuple[str, ...] = DEFAULT_LEVELS
    rules: tuple[Rule, ...] = ()
    recover_after: float = 5.0
    capabilities: Mapping[str, tuple[str, ...]] | None = None

    def severity(self, level: str) -> int:
        """0 for the best level, growing with severity."""
        return self.levels.index(level)

    def message_for(self, level: str) -> str | None:
        """The message of the first rule that sets ``level``."""
        return next((r.message for r in self.rules if r.level == level and r.message), None)

    def capabilities_for(self, level: str) -> tuple[str, ...] | None:
        """What the app may do at ``level``; None when the policy does not say.

        A level without its own list inherits the nearest better level's (a level added between two others keeps
        what the better one allows, instead of silently allowing nothing); a level with no list at or above it
        allows nothing.
        """
        if self.capabilities is None:
            return None
        source = self.capabilities_source(level)
        return self.capabilities[source] if source is not None else ()

    def capabilities_source(self, level: str) -> str | None:
        """The level whose list ``level`` uses: itself, the nearest better level with a list, or None."""
        if self.capabilities is None or level not in self.levels:
            return None
        return next((lv for lv in reversed(self.levels[: self.levels.index(level) + 1]) if lv in self.capabilities),
                    None)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The level the rules ask for right now, and why."""

    level: str
    reason: str | None
    rule: Rule | None


def evaluate(policy: Policy, deps: Mapping[str, DependencyStatus]) -> Evaluation:
    """The first rule whose conditions all hold sets the level; no match means the best level."""
    for rule in policy.rules:
        reasons = [c.explain(deps) for c in rule.when]
        if rule.when and all(r is not None for r in reasons):
            return Evaluation(rule.level, "; ".join(r for r in reasons if r), rule)
    unhealthy = [d.describe() for d in deps.values() if d.state is not DepState.HEALTHY]
    reason = "all dependencies healthy" if not unhealthy else "no rule matches: " + "; ".join(unhealthy)
    return Evaluation(policy.levels[0], reason, None)
