"""failsoft.policies.grace and its use by the state owner: a dependency that has never answered does not make the
level worse until its startup_grace ends (manual clock, no sleeps)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from failsoft.daemon.clock import ManualClock
from failsoft.daemon.config import parse_config
from failsoft.daemon.state import ServiceState
from failsoft.policies.grace import StartupGrace
from failsoft.policies.model import BreakerState, DependencyStatus, DepState


def st_(name: str, state: DepState, reason: str | None = None) -> DependencyStatus:
    """A probed status."""
    breaker = BreakerState.OPEN if state is DepState.DOWN else BreakerState.CLOSED
    return DependencyStatus(name=name, kind="tcp", state=state, breaker=breaker, reason=reason, probes=1)


def test_a_dependency_that_never_answered_is_judged_healthy_within_its_grace_only() -> None:
    """Down since the start: healthy to the policy until started + grace, itself from then on."""
    g = StartupGrace(started=100.0, grace={"db": 30.0, "cache": 0.0})
    deps = {"db": st_("db", DepState.DOWN, "connection_refused"), "cache": st_("cache", DepState.DOWN)}
    assert g.starting(100.0) == {"db"}
    assert g.view(deps, 129.9)["db"].state is DepState.HEALTHY
    assert g.view(deps, 129.9)["cache"].state is DepState.DOWN  # grace 0: judged at once
    assert g.view(deps, 130.0)["db"].state is DepState.DOWN
    assert g.deadline(100.0) == 130.0
    assert g.deadline(130.0) is None


def test_the_first_answer_ends_the_grace_for_good() -> None:
    """Healthy (or degraded) once: later failures count at once, even within the grace period."""
    g = StartupGrace(started=0.0, grace={"db": 30.0})
    g = g.step(st_("db", DepState.DOWN))
    assert g.starting(1.0) == {"db"}
    g = g.step(st_("db", DepState.DEGRADED, "slow"))
    assert g.starting(1.0) == frozenset()
    g = g.step(st_("db", DepState.DOWN))
    assert g.view({"db": st_("db", DepState.DOWN)}, 2.0)["db"].state is DepState.DOWN
    assert g.deadline(2.0) is None


@given(st.lists(st.tuples(st.sampled_from(list(DepState)), st.floats(0, 100)), max_size=20),
       st.floats(0, 60), st.floats(0, 200))
def test_the_view_never_hides_an_answered_dependency_nor_outlives_the_grace(
    steps: list[tuple[DepState, float]], grace: float, now: float
) -> None:
    """For any history: after the grace, or after any answer, the policy sees the real state; within it, a
    dependency that never answered is never seen worse than healthy."""
    g = StartupGrace(started=0.0, grace={"db": grace})
    answered = False
    last = st_("db", DepState.UNKNOWN)
    for state, _ in steps:
        last = st_("db", state)
        g = g.step(last)
        answered = answered or state in (DepState.HEALTHY, DepState.DEGRADED)
    seen = g.view({"db": last}, now)["db"]
    if answered or now >= grace:
        assert seen == last
    else:
        assert seen.state is DepState.HEALTHY


CONFIG = """
service: grace-test
http: {listen: "127.0.0.1:0"}
defaults: {startup_grace: 30s}
dependencies:
  db: {kind: tcp, address: "127.0.0.1:1"}
  cache: {kind: tcp, address: "127.0.0.1:2", startup_grace: 0s}
policy:
  levels: [full, degraded, cache_only]
  recover_after: 5s
  rules:
    - {level: cache_only, when: {any_down: [db]}}
    - {level: degraded, when: {any_down: [cache]}}
"""


def test_the_state_owner_holds_the_level_through_the_grace_and_says_starting() -> None:
    """db refuses connections from its first probe: the level is full (not cache_only), the State says
    ``starting`` (top level and on db, whose own entry stays down) and the reason names what it waits for; at the
    end of the grace the owner's deadline wakes it and cache_only is published at once."""
    clock = ManualClock()
    state = ServiceState(parse_config(CONFIG, {}), clock)
    state.update(st_("cache", DepState.HEALTHY))
    events = state.update(st_("db", DepState.DOWN, "connection_refused"))
    assert state.level == "full"
    body = state.snapshot().to_dict()
    assert body["starting"] is True
    assert body["dependencies"]["db"]["starting"] is True and body["dependencies"]["db"]["state"] == "down"
    assert "starting" not in body["dependencies"]["cache"]
    assert "waiting for db to answer" in (body["reason"] or "")
    assert [e.fields["level"] for e in events if e.type == "level_changed"] == ["full"]
    assert state.deadline() == clock.monotonic() + 30.0
    clock.advance(29.9)
    assert state.tick() == [] and state.level == "full"
    clock.advance(0.1)
    events = state.tick()
    assert [(e.type, e.fields["level"]) for e in events] == [("level_changed", "cache_only")]
    assert state.snapshot().to_dict()["starting"] is False


def test_a_dependency_with_no_grace_is_judged_at_its_first_probe() -> None:
    """cache has ``startup_grace: 0s``: down at its first probe makes the first level degraded at once."""
    state = ServiceState(parse_config(CONFIG, {}), ManualClock())
    state.update(st_("db", DepState.HEALTHY))
    state.update(st_("cache", DepState.DOWN, "timeout"))
    assert state.level == "degraded"
    assert state.snapshot().to_dict()["starting"] is False


def test_a_dependency_that_answered_then_fails_within_the_grace_counts_at_once() -> None:
    """db answered once, then went down 2 s after the start: cache_only at once, no grace."""
    clock = ManualClock()
    state = ServiceState(parse_config(CONFIG, {}), clock)
    state.update(st_("cache", DepState.HEALTHY))
    state.update(st_("db", DepState.HEALTHY))
    clock.advance(2)
    state.update(st_("db", DepState.DOWN, "connection_refused"))
    assert state.level == "cache_only"
