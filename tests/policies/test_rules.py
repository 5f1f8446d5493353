"""failsoft.policies.rules: ordered rules turn dependency states into a target level, with a reason people can read."""

from __future__ import annotations

import pytest

from failsoft.policies.model import DependencyStatus, DepState
from failsoft.policies.rules import DEFAULT_LEVELS, MATCHERS, Condition, Policy, Rule, evaluate

H, D, X, U = DepState.HEALTHY, DepState.DEGRADED, DepState.DOWN, DepState.UNKNOWN


def deps(**states: DepState | tuple[DepState, str]) -> dict[str, DependencyStatus]:
    """``deps(db=X, cache=(D, "slow"))``: statuses by name, with an optional reason."""
    out = {}
    for name, value in states.items():
        state, reason = value if isinstance(value, tuple) else (value, None)
        out[name] = DependencyStatus(name=name, kind="tcp", state=state, reason=reason)
    return out


def holds(matcher: str, names: tuple[str, ...], statuses: dict[str, DependencyStatus]) -> bool:
    """Whether one condition holds."""
    return Condition(matcher, names).explain(statuses) is not None


# Every matcher against every combination of two dependency states: the table is the specification.
MATCHER_TABLE = [
    # (matcher, state of a, state of b, holds over [a, b])
    *[("any_down", a, b, X in (a, b)) for a in (H, D, X, U) for b in (H, D, X, U)],
    *[("all_down", a, b, a is X and b is X) for a in (H, D, X, U) for b in (H, D, X, U)],
    *[("any_not_healthy", a, b, not (a is H and b is H)) for a in (H, D, X, U) for b in (H, D, X, U)],
    *[("all_not_healthy", a, b, a is not H and b is not H) for a in (H, D, X, U) for b in (H, D, X, U)],
    *[("any_degraded", a, b, D in (a, b)) for a in (H, D, X, U) for b in (H, D, X, U)],
]


@pytest.mark.parametrize(("matcher", "a", "b", "expected"), MATCHER_TABLE)
def test_every_matcher_over_every_pair_of_states(matcher: str, a: DepState, b: DepState, expected: bool) -> None:
    """Each matcher holds exactly as its name says (unknown counts as not healthy, but not as down or degraded)."""
    assert holds(matcher, ("a", "b"), deps(a=a, b=b)) is expected


def test_the_matcher_table_is_the_documented_set() -> None:
    """The contract lists five matchers; config validation and evaluation share this table."""
    assert set(MATCHERS) == {"any_down", "all_down", "any_not_healthy", "all_not_healthy", "any_degraded"}


def test_a_dependency_missing_from_the_statuses_counts_as_unknown() -> None:
    """A name without a status is unknown: not healthy, but neither down nor degraded."""
    statuses = deps(a=H)
    assert holds("any_not_healthy", ("a", "ghost"), statuses)
    assert not holds("any_down", ("a", "ghost"), statuses)
    assert not holds("any_degraded", ("ghost",), statuses)


def test_several_matchers_in_one_when_must_all_hold() -> None:
    """A rule with two conditions applies only when both hold."""
    rule = Rule("limited", (Condition("any_down", ("a",)), Condition("any_degraded", ("b",))))
    policy = Policy(rules=(rule,))
    assert evaluate(policy, deps(a=X, b=D)).level == "limited"
    assert evaluate(policy, deps(a=X, b=H)).level == "full"
    assert evaluate(policy, deps(a=H, b=D)).level == "full"


def test_first_matching_rule_wins_even_when_a_later_one_is_worse() -> None:
    """Rules are read top to bottom; the order in the file, not the severity, decides."""
    policy = Policy(rules=(
        Rule("degraded", (Condition("any_not_healthy", ("db",)),)),
        Rule("cache_only", (Condition("any_down", ("db",)),)),
    ))
    result = evaluate(policy, deps(db=X))
    assert result.level == "degraded"
    assert result.rule is policy.rules[0]


def test_no_matching_rule_means_the_best_level() -> None:
    """With every dependency healthy nothing matches and the first level of the list applies."""
    policy = Policy(levels=("gold", "silver", "bronze"), rules=(Rule("bronze", (Condition("any_down", ("db",)),)),))
    result = evaluate(policy, deps(db=H))
    assert result.level == "gold"
    assert result.rule is None
    assert result.reason == "all dependencies healthy"


def test_no_match_with_unhealthy_dependencies_says_which() -> None:
    """When no rule matches but something is unhealthy, the reason names it (so a reader is not misled)."""
    policy = Policy(rules=(Rule("cache_only", (Condition("any_down", ("db",)),)),))
    result = evaluate(policy, deps(db=H, cache=(D, "slow")))
    assert result.level == "full"
    assert result.reason == "no rule matches: cache degraded (slow)"


def test_an_empty_policy_always_gives_the_best_level() -> None:
    """No rules at all: the best level, whatever the states."""
    assert evaluate(Policy(), deps(db=X, cache=X)).level == DEFAULT_LEVELS[0]


def test_reason_names_the_dependency_its_state_and_why() -> None:
    """``db down (connection refused)``: the contract's reason text, underscores turned into spaces."""
    policy = Policy(rules=(Rule("cache_only", (Condition("any_down", ("db", "cache")),), "Saved data"),))
    result = evaluate(policy, deps(db=(X, "connection_refused"), cache=H))
    assert result.level == "cache_only"
    assert result.reason == "db down (connection refused)"


def test_reason_lists_every_dependency_that_makes_an_any_matcher_hold() -> None:
    """Two down dependencies under ``any_down`` are both named, in rule order."""
    policy = Policy(rules=(Rule("cache_only", (Condition("any_down", ("db", "cache")),)),))
    result = evaluate(policy, deps(db=(X, "timeout"), cache=(X, "connection_refused")))
    assert result.reason == "db down (timeout); cache down (connection refused)"


def test_reason_for_all_down_names_them_together() -> None:
    """``all_down`` over several providers reads as one sentence."""
    policy = Policy(rules=(Rule("limited", (Condition("all_down", ("openai", "anthropic")),)),))
    result = evaluate(policy, deps(openai=(X, "auth"), anthropic=(X, "timeout")))
    assert result.level == "limited"
    assert result.reason == "openai, anthropic down"


def test_reason_without_a_dependency_reason() -> None:
    """A dependency with no reason is described by its name and state only."""
    policy = Policy(rules=(Rule("degraded", (Condition("any_not_healthy", ("cache",)),)),))
    assert evaluate(policy, deps(cache=U)).reason == "cache unknown"


def test_reasons_of_several_conditions_are_joined() -> None:
    """Each holding condition of the matched rule contributes its part of the reason."""
    rule = Rule("limited", (Condition("any_down", ("a",)), Condition("any_degraded", ("b",))))
    result = evaluate(Policy(rules=(rule,)), deps(a=(X, "dns"), b=(D, "rate_limited")))
    assert result.reason == "a down (dns); b degraded (rate limited)"


def test_severity_message_and_capabilities() -> None:
    """Severity is the index in the level list; message and capabilities come from the policy."""
    policy = Policy(
        rules=(Rule("cache_only", (Condition("any_down", ("db",)),), "Showing saved data"),
               Rule("cache_only", (Condition("any_down", ("cache",)),), "another message")),
        capabilities={"full": ("chat", "write"), "cache_only": ("search",)},
    )
    assert [policy.severity(level) for level in DEFAULT_LEVELS] == [0, 1, 2, 3]
    assert policy.message_for("cache_only") == "Showing saved data"  # the first rule that sets the level
    assert policy.message_for("full") is None
    assert policy.capabilities_for("full") == ("chat", "write")
    assert policy.capabilities_for("limited") == ("chat", "write")  # no list of its own: full's (test_capabilities)
    assert Policy().capabilities_for("full") is None  # the policy does not talk about capabilities
