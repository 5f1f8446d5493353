"""failsoft.policies.failover: the active LLM provider; away at once, back only after recover_after, no ping-pong."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from failsoft.policies.failover import FailoverMachine, candidate
from failsoft.policies.model import DependencyStatus, DepState

H, D, X, U = DepState.HEALTHY, DepState.DEGRADED, DepState.DOWN, DepState.UNKNOWN
ORDER = ("openai", "anthropic", "gemini")
R = 5.0
Statuses = dict[str, DependencyStatus]


def llms(*states: DepState | tuple[DepState, str]) -> dict[str, DependencyStatus]:
    """Statuses for ORDER, in order; a tuple adds a reason."""
    out = {}
    for name, value in zip(ORDER, states, strict=True):
        state, reason = value if isinstance(value, tuple) else (value, None)
        out[name] = DependencyStatus(name=name, kind="llm", state=state, reason=reason)
    return out


def test_candidate_is_the_first_healthy_provider_in_order() -> None:
    """Healthy beats order: the first healthy one wins, even if an earlier one is merely degraded."""
    assert candidate(ORDER, llms(H, H, H)) == "openai"
    assert candidate(ORDER, llms(X, H, H)) == "anthropic"
    assert candidate(ORDER, llms((D, "slow"), X, H)) == "gemini"


def test_candidate_prefers_degraded_over_rate_limited_over_nothing() -> None:
    """With nobody healthy: the first degraded one not rate limited, then the first rate limited, then None."""
    assert candidate(ORDER, llms((D, "rate_limited"), (D, "slow"), X)) == "anthropic"
    assert candidate(ORDER, llms(X, (D, "rate_limited"), (D, "rate_limited"))) == "anthropic"
    assert candidate(ORDER, llms(X, X, X)) is None
    assert candidate(ORDER, llms(U, U, U)) is None  # not probed yet is not usable
    assert candidate(ORDER, {}) is None
    assert candidate((), llms(H, H, H)) is None


def test_the_first_step_takes_the_candidate() -> None:
    """Starting with no active provider, the candidate becomes active at once."""
    m = FailoverMachine(ORDER, R).step(llms(H, H, H), 0.0)
    assert m.active == "openai"
    assert m.deadline() is None


def test_moving_away_from_an_unusable_provider_is_immediate() -> None:
    """The active provider going down switches to the next usable one in the same step."""
    m = FailoverMachine(ORDER, R).step(llms(H, H, H), 0.0).step(llms(X, H, H), 1.0)
    assert m.active == "anthropic"
    m = m.step(llms(X, X, H), 1.5)
    assert m.active == "gemini"
    m = m.step(llms(X, X, X), 2.0)
    assert m.active is None


def test_moving_away_to_a_healthier_later_provider_is_immediate() -> None:
    """A degraded active provider gives way at once to a healthy one later in the order."""
    m = FailoverMachine(ORDER, R).step(llms(H, H, H), 0.0).step(llms((D, "slow"), H, H), 1.0)
    assert m.active == "anthropic"


def test_moving_back_waits_for_recover_after() -> None:
    """The preferred provider coming back becomes active only once it has been the candidate for recover_after."""
    m = FailoverMachine(ORDER, R).step(llms(H, H, H), 0.0).step(llms(X, H, H), 1.0)
    m = m.step(llms(H, H, H), 2.0)
    assert m.active == "anthropic"
    assert m.pending == "openai"
    assert m.deadline() == 7.0
    assert m.step(llms(H, H, H), 6.9).active == "anthropic"
    assert m.advance(6.9).active == "anthropic"
    assert m.advance(7.0).active == "openai"
    assert m.step(llms(H, H, H), 7.0).active == "openai"


def test_a_break_while_moving_back_restarts_the_wait() -> None:
    """If the preferred provider fails again before recover_after, the wait starts over."""
    m = FailoverMachine(ORDER, R).step(llms(H, H, H), 0.0).step(llms(X, H, H), 1.0)
    m = m.step(llms(H, H, H), 2.0).step(llms(X, H, H), 4.0).step(llms(H, H, H), 5.0)
    assert m.advance(7.5).active == "anthropic"
    assert m.advance(10.0).active == "openai"


def test_moving_back_is_immediate_when_the_active_one_fails() -> None:
    """While waiting to move back, the active provider failing makes the preferred one active at once."""
    m = FailoverMachine(ORDER, R).step(llms(H, H, H), 0.0).step(llms(X, H, H), 1.0)
    m = m.step(llms(H, H, H), 2.0).step(llms(H, X, H), 3.0)
    assert m.active == "openai"


# -- properties ------------------------------------------------------------------------------------------

states = st.sampled_from([H, (D, "slow"), (D, "rate_limited"), X, U])
snapshots = st.tuples(states, states, states).map(lambda s: llms(*s))
timelines = st.lists(st.tuples(st.floats(0.0, 2 * R, allow_nan=False), snapshots), min_size=1, max_size=40)


@settings(max_examples=300)
@given(timelines)
def test_active_is_always_usable_or_none_when_nothing_is(steps: list[tuple[float, Statuses]]) -> None:
    """After every step the active provider is usable (healthy or degraded), or None only if none is."""
    m, now = FailoverMachine(ORDER, R), 0.0
    for gap, deps in steps:
        now += gap
        m = m.step(deps, now)
        if m.active is None:
            assert candidate(ORDER, deps) is None
        else:
            assert deps[m.active].state in (H, D)


@settings(max_examples=300)
@given(timelines)
def test_moving_back_only_after_the_preferred_one_held(steps: list[tuple[float, Statuses]]) -> None:
    """A switch to an earlier provider while the active one is still usable needs recover_after of that provider
    being the candidate at every step, without a break."""
    m, now, history = FailoverMachine(ORDER, R), 0.0, []
    for gap, deps in steps:
        now += gap
        before = m.active
        m = m.step(deps, now)
        history.append((now, candidate(ORDER, deps)))
        moved_back = (before is not None and m.active is not None
                      and ORDER.index(m.active) < ORDER.index(before) and deps[before].state in (H, D))
        if moved_back:
            run_start = now
            for t, best in reversed(history):
                if best != m.active:
                    break
                run_start = t
            assert now - run_start >= R


@st.composite
def flapping_preferred(draw: st.DrawFn) -> list[tuple[float, dict[str, DependencyStatus]]]:
    """openai flaps: down, then healthy for less than R, again and again; anthropic stays healthy."""
    t, out = 0.1, [(0.0, llms(H, H, H)), (0.1, llms(X, H, H))]
    for _ in range(draw(st.integers(1, 10))):
        up_at = t + draw(st.floats(0.01, R))
        offsets = sorted(draw(st.lists(st.floats(0.0, 0.99 * R), min_size=1, max_size=4)))
        out += [(up_at + o, llms(H, H, H)) for o in offsets]
        t = up_at + offsets[-1]
        out.append((t, llms(X, H, H)))
    return out


@settings(max_examples=300)
@given(flapping_preferred())
def test_no_ping_pong_under_flapping(inputs: list[tuple[float, dict[str, DependencyStatus]]]) -> None:
    """A preferred provider that keeps failing within recover_after never wins the traffic back: one switch only."""
    m, actives = FailoverMachine(ORDER, R), []
    for now, deps in inputs:
        m = m.step(deps, now)
        actives.append(m.active)
    switches = [(a, b) for a, b in itertools.pairwise(actives) if a != b]
    assert switches == [("openai", "anthropic")]
