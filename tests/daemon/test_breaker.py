"""failsoft.daemon.breaker.Breaker: probe outcomes in, dependency state, breaker state and the next delay out.

Time is a ManualClock moved by hand and jitter comes from a seeded random.Random: nothing sleeps.
"""

from __future__ import annotations

import itertools
import random
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from failsoft.daemon.breaker import TRANSITIONS, Breaker, IllegalTransition
from failsoft.daemon.clock import ManualClock
from failsoft.daemon.config import Backoff, ProbeSettings
from failsoft.policies.model import BreakerState, DepState
from failsoft.probes.base import OK, Outcome, Verdict

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
FAIL = Outcome(Verdict.FAILURE, "connection_refused", "ConnectionRefusedError: [Errno 111] refused")
AUTH = Outcome(Verdict.FATAL, "auth", "password authentication failed")
FAST = 0.001  # a latency well under slow_threshold
SETTINGS = ProbeSettings(
    interval=1.0, timeout=0.5, jitter=0.1, unhealthy_threshold=3, healthy_threshold=2, fast_interval=0.25,
    down_interval=Backoff(initial=1.0, max=30.0, multiplier=2.0), slow_threshold=0.25,
)


class Harness:
    """A breaker, a manual clock and a seeded random source; ``feed`` records and then moves time by the delay."""

    def __init__(self, settings: ProbeSettings = SETTINGS, seed: int = 7) -> None:
        self.clock = ManualClock()
        self.breaker = Breaker("db", "postgres", settings, random.Random(seed))
        self.delays: list[float] = []

    def feed(self, outcome: Outcome, latency: float = FAST) -> float:
        delay = self.breaker.record(outcome, latency, self.clock.now())
        self.delays.append(delay)
        self.clock.advance(delay)
        return delay

    @property
    def state(self) -> tuple[DepState, BreakerState]:
        return self.breaker.status.state, self.breaker.status.breaker


def test_a_new_breaker_is_unknown_and_closed() -> None:
    """Before the first probe the dependency is unknown, never probed."""
    h = Harness()
    assert h.state == (DepState.UNKNOWN, CLOSED)
    assert h.breaker.status.probes == 0


def test_first_probe_ok_decides_healthy() -> None:
    """A first success is healthy/closed at once, stamped with the probe time and latency."""
    h = Harness()
    start = h.clock.now()
    delay = h.feed(OK, latency=0.0123)
    assert h.state == (DepState.HEALTHY, CLOSED)
    status = h.breaker.status
    assert status.since == start
    assert status.latency_ms == 12.3
    assert status.probes == 1
    assert status.reason is None
    assert status.last_error is None
    assert SETTINGS.interval <= delay <= SETTINGS.interval * (1 + SETTINGS.jitter)


def test_first_probe_failure_decides_down_at_once() -> None:
    """A dependency that fails its very first probe is down and open at once: no threshold at start-up."""
    h = Harness()
    h.feed(FAIL)
    assert h.state == (DepState.DOWN, OPEN)
    status = h.breaker.status
    assert status.reason == "connection_refused"
    assert status.last_error == FAIL.error
    assert status.consecutive_failures == 1
    assert h.delays[-1] == pytest.approx(SETTINGS.down_interval.initial)


def test_first_failure_while_healthy_probes_again_at_fast_interval() -> None:
    """One failure on a healthy dependency does not change its state yet, but the next probe comes quickly."""
    h = Harness()
    h.feed(OK)
    assert h.feed(FAIL) == SETTINGS.fast_interval
    assert h.state == (DepState.HEALTHY, CLOSED)
    assert h.breaker.status.consecutive_failures == 1
    assert h.breaker.status.last_error == FAIL.error


def test_unhealthy_threshold_consecutive_failures_open_the_breaker() -> None:
    """Exactly unhealthy_threshold failures in a row make the dependency down/open, with its reason."""
    h = Harness()
    h.feed(OK)
    h.feed(FAIL)
    h.feed(FAIL)
    assert h.state == (DepState.HEALTHY, CLOSED)
    opened_at = h.clock.now()
    h.feed(FAIL)
    assert h.state == (DepState.DOWN, OPEN)
    assert h.breaker.status.consecutive_failures == 3
    assert h.breaker.status.reason == "connection_refused"
    assert h.breaker.status.since == opened_at


def test_a_success_between_failures_resets_the_count() -> None:
    """Failures must be consecutive: a success in between starts the count again."""
    h = Harness()
    h.feed(OK)
    for outcome in (FAIL, FAIL, OK, FAIL, FAIL):
        h.feed(outcome)
    assert h.state == (DepState.HEALTHY, CLOSED)
    assert h.breaker.status.consecutive_failures == 2


@pytest.mark.parametrize("seed", [1, 2, 3, 42, 1234])
def test_backoff_grows_by_multiplier_with_full_jitter_up_to_max(seed: int) -> None:
    """While open, each failed re-probe waits a random time in [initial, min(max, initial * multiplier^n)]."""
    h = Harness(seed=seed)
    h.feed(OK)
    for _ in range(SETTINGS.unhealthy_threshold):
        h.feed(FAIL)
    b = SETTINGS.down_interval
    delays = [h.delays[-1], *(h.feed(FAIL) for _ in range(10))]
    for n, delay in enumerate(delays):
        cap = min(b.max, b.initial * b.multiplier**n)
        assert b.initial <= delay <= cap, (n, delay, cap)
    assert max(delays) > 8.0  # the cap grew: with ten draws something lands well above the start
    assert h.state == (DepState.DOWN, OPEN)


def test_backoff_draws_are_spread_not_fixed() -> None:
    """Full jitter: many breakers opening together do not re-probe in lock-step."""
    draws = set()
    for seed in range(20):
        h = Harness(seed=seed)
        h.feed(FAIL)
        h.feed(FAIL)
        draws.add(round(h.feed(FAIL), 6))
    assert len(draws) > 10


def test_the_jitter_is_deterministic_for_a_seed() -> None:
    """The random source is injected: the same seed gives the same delays (reproducible tests)."""
    runs = []
    for _ in range(2):
        h = Harness(seed=99)
        for outcome in (OK, OK, FAIL, FAIL, FAIL, FAIL, FAIL):
            h.feed(outcome)
        runs.append(h.delays)
    assert runs[0] == runs[1]


def test_success_while_open_goes_half_open_and_probes_fast() -> None:
    """A success after the breaker opened: half_open, still down (not yet trusted), next probe at fast_interval."""
    h = Harness()
    h.feed(FAIL)
    assert h.feed(OK) == SETTINGS.fast_interval
    assert h.state == (DepState.DOWN, HALF_OPEN)
    assert h.breaker.status.consecutive_failures == 0


def test_healthy_threshold_successes_close_the_breaker() -> None:
    """healthy_threshold consecutive successes in half_open make it healthy/closed; then the normal interval."""
    h = Harness()
    h.feed(FAIL)
    h.feed(OK)
    closed_at = h.clock.now()
    delay = h.feed(OK)
    assert h.state == (DepState.HEALTHY, CLOSED)
    assert h.breaker.status.since == closed_at
    assert h.breaker.status.reason is None
    assert SETTINGS.interval <= delay <= SETTINGS.interval * (1 + SETTINGS.jitter)


def test_healthy_threshold_of_one_closes_on_the_first_success() -> None:
    """With healthy_threshold 1 a single success closes an open breaker (passing through half_open)."""
    h = Harness(ProbeSettings(healthy_threshold=1))
    h.feed(FAIL)
    h.feed(OK)
    assert h.state == (DepState.HEALTHY, CLOSED)


def test_failure_in_half_open_reopens_with_a_longer_wait() -> None:
    """A failed trial reopens the breaker and the backoff cap keeps growing instead of starting over."""
    b = SETTINGS.down_interval
    h = Harness()
    h.feed(FAIL)  # open; the first wait is exactly initial
    h.feed(FAIL)  # a failed re-probe: cap 2
    h.feed(OK)  # half open
    delay = h.feed(FAIL)
    assert h.state == (DepState.DOWN, OPEN)
    assert b.initial <= delay <= b.initial * b.multiplier**2
    # The cap is at least as large as before: the next draws range over [initial, 8].
    later = [h.feed(FAIL) for _ in range(30)]
    assert max(later) > b.initial * b.multiplier**2


def test_after_closing_the_backoff_starts_again_from_initial() -> None:
    """Once the dependency recovered, a later outage backs off from the start again, not from the old cap."""
    b = SETTINGS.down_interval
    h = Harness()
    for outcome in (FAIL, FAIL, FAIL, FAIL, FAIL, OK, OK):
        h.feed(outcome)
    assert h.state == (DepState.HEALTHY, CLOSED)
    for _ in range(SETTINGS.unhealthy_threshold):
        h.feed(FAIL)
    assert h.delays[-1] == pytest.approx(b.initial)
    assert h.feed(FAIL) <= b.initial * b.multiplier


def test_a_slow_success_is_degraded_slow() -> None:
    """A success slower than slow_threshold is degraded with reason slow; the breaker stays closed."""
    h = Harness()
    h.feed(OK)
    h.feed(OK, latency=0.4)
    assert h.state == (DepState.DEGRADED, CLOSED)
    assert h.breaker.status.reason == "slow"
    assert h.breaker.status.latency_ms == 400.0
    h.feed(OK, latency=0.01)
    assert h.state == (DepState.HEALTHY, CLOSED)
    assert h.breaker.status.reason is None


def test_a_degraded_outcome_keeps_its_reason_and_details() -> None:
    """A probe that answers but is read-only is degraded with its reason, error text and details."""
    h = Harness()
    outcome = Outcome(Verdict.DEGRADED, "replication_lag", "replica is 12.0s behind", details={"replication_lag_s": 12})
    h.feed(outcome)
    assert h.state == (DepState.DEGRADED, CLOSED)
    assert h.breaker.status.reason == "replication_lag"
    assert h.breaker.status.last_error == "replica is 12.0s behind"
    assert h.breaker.status.details == {"replication_lag_s": 12}


@pytest.mark.parametrize("history", [[], [OK], [OK, FAIL], [FAIL], [FAIL, OK]])
def test_fatal_is_down_at_once_and_reprobed_at_down_interval_max(history: list[Outcome]) -> None:
    """Auth, quota, misconfigured: down/open at once from any state; the next probe at down_interval.max."""
    h = Harness()
    for outcome in history:
        h.feed(outcome)
    assert h.feed(AUTH) == SETTINGS.down_interval.max
    assert h.state == (DepState.DOWN, OPEN)
    assert h.breaker.status.reason == "auth"
    assert h.feed(AUTH) == SETTINGS.down_interval.max


def test_retry_after_is_respected() -> None:
    """A rate limit's retry_after sets retry_at and the delay is never shorter than it."""
    h = Harness()
    h.feed(OK)
    now = h.clock.now()
    limited = Outcome(Verdict.DEGRADED, "rate_limited", "HTTP 429", retry_after=42.0)
    assert h.breaker.record(limited, FAST, now) == 42.0
    assert h.breaker.status.retry_at == now + timedelta(seconds=42)
    assert h.state == (DepState.DEGRADED, CLOSED)
    assert h.breaker.status.reason == "rate_limited"
    h.feed(OK)
    assert h.breaker.status.retry_at is None


def test_retry_after_shorter_than_the_normal_delay_does_not_shorten_it() -> None:
    """retry_after is a floor, not a replacement: a fatal answer with retry-after 1s still waits down_interval.max."""
    h = Harness()
    fatal = Outcome(Verdict.FATAL, "quota_exhausted", "HTTP 429 insufficient_quota", retry_after=1.0)
    assert h.feed(fatal) == SETTINGS.down_interval.max


def test_since_moves_only_when_the_state_changes() -> None:
    """``since`` is when the current state began, not the time of the last probe."""
    h = Harness()
    h.feed(OK)
    first = h.breaker.status.since
    h.feed(OK)
    h.feed(FAIL)
    assert h.breaker.status.since == first


def test_transitions_table_is_the_documented_cycle() -> None:
    """closed -> open -> half_open -> closed, and half_open -> open: nothing else."""
    assert {(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED), (HALF_OPEN, OPEN)} == TRANSITIONS


@pytest.mark.parametrize(("frm", "to"), [
    pair for pair in itertools.product(BreakerState, BreakerState) if pair not in TRANSITIONS
])
def test_illegal_transitions_raise(frm: BreakerState, to: BreakerState) -> None:
    """Any breaker move outside the table is a bug and raises instead of silently happening."""
    with pytest.raises(IllegalTransition, match=f"from {frm} to {to}"):
        Harness().breaker._move(frm, to)


outcomes = st.sampled_from([OK, FAIL, AUTH, Outcome(Verdict.DEGRADED, "read_only", "in recovery")])


@settings(max_examples=300)
@given(st.lists(st.tuples(outcomes, st.sampled_from([FAST, 0.3])), min_size=1, max_size=60), st.integers(0, 99))
def test_any_outcome_sequence_keeps_the_invariants(sequence: list[tuple[Outcome, float]], seed: int) -> None:
    """Whatever happens: no illegal move, open/half_open mean down, closed is never down, delays stay in range,
    and the probe counter counts."""
    h = Harness(seed=seed)
    s = SETTINGS
    for n, (outcome, latency) in enumerate(sequence, start=1):
        delay = h.feed(outcome, latency)
        state, breaker = h.state
        if breaker in (OPEN, HALF_OPEN):
            assert state is DepState.DOWN
        else:
            assert state is not DepState.DOWN
        assert min(s.fast_interval, s.down_interval.initial) <= delay <= s.down_interval.max
        assert h.breaker.status.probes == n


# -- conclusive evidence: a kept connection lost, then a refused connect ------------------------------------------

TIMEOUT_FAIL = Outcome(Verdict.FAILURE, "timeout", "no answer within 500ms")
RESET = Outcome(Verdict.FAILURE, "connection_reset", "ConnectionResetError: [Errno 104] reset")


def test_a_dropped_connection_then_a_refused_connect_is_down_at_once() -> None:
    """A crash: the kept connection drops and the re-probe's connect is refused. That is down/open on that one
    failure, at the time of that probe, with the refusal as the reason."""
    h = Harness()
    h.feed(OK)
    h.clock.advance(0.3)
    h.breaker.connection_lost()
    crashed_at = h.clock.now()
    h.feed(FAIL)
    assert h.state == (DepState.DOWN, OPEN)
    assert h.breaker.status.reason == "connection_refused"
    assert h.breaker.status.since == crashed_at
    assert h.breaker.status.consecutive_failures == 1


def test_a_single_refused_connect_without_a_dropped_connection_still_waits_for_the_threshold() -> None:
    """A refused probe of an otherwise healthy dependency (no kept connection dropped) is one failure among
    unhealthy_threshold, as before."""
    h = Harness()
    h.feed(OK)
    h.feed(FAIL)
    assert h.state == (DepState.HEALTHY, CLOSED)
    h.feed(FAIL)
    assert h.state == (DepState.HEALTHY, CLOSED)
    h.feed(FAIL)
    assert h.state == (DepState.DOWN, OPEN)


@pytest.mark.parametrize("outcome", [TIMEOUT_FAIL, RESET])
def test_a_dropped_connection_then_a_timeout_or_reset_goes_through_the_threshold(outcome: Outcome) -> None:
    """Only a refusal proves a crash: after a dropped connection, a timeout (a hang, a lost packet) or a reset (an
    idle-timeout middlebox) is an ordinary failure counted towards unhealthy_threshold."""
    h = Harness()
    h.feed(OK)
    h.breaker.connection_lost()
    h.feed(outcome)
    assert h.state == (DepState.HEALTHY, CLOSED)
    assert h.breaker.status.consecutive_failures == 1


def test_the_evidence_lasts_until_a_success() -> None:
    """A dropped connection followed by a timeout and then a refusal is still a proven crash (no answer came in
    between); a success in between ends the evidence, and a later refusal counts as one failure."""
    h = Harness()
    h.feed(OK)
    h.breaker.connection_lost()
    h.feed(TIMEOUT_FAIL)
    h.feed(FAIL)
    assert h.state == (DepState.DOWN, OPEN)

    h = Harness()
    h.feed(OK)
    h.breaker.connection_lost()
    h.feed(OK)  # the connection dropped, but the server answered the re-probe: a restart of ours, not a crash
    h.feed(FAIL)
    assert h.state == (DepState.HEALTHY, CLOSED)
    assert h.breaker.status.consecutive_failures == 1


def test_after_a_proven_crash_recovery_needs_healthy_threshold_successes() -> None:
    """Going down at once does not shortcut the way back: the breaker backs off, goes half open on a success and
    closes after healthy_threshold successes, as after any other opening."""
    h = Harness()
    h.feed(OK)
    h.breaker.connection_lost()
    delay = h.feed(FAIL)
    assert SETTINGS.down_interval.initial <= delay <= SETTINGS.down_interval.initial * SETTINGS.down_interval.multiplier
    h.feed(OK)
    assert h.state == (DepState.DOWN, HALF_OPEN)
    h.feed(OK)
    assert h.state == (DepState.HEALTHY, CLOSED)


def test_a_steady_dependency_may_start_its_next_probe_anywhere_in_the_interval_plus_jitter() -> None:
    """``window``: [interval, interval x (1 + jitter)] after a healthy or degraded answer of a closed breaker, and
    the delay drawn lies in it; none while confirming a failure, backing off, or held by a rate limit."""
    h = Harness()
    delay = h.feed(OK)
    assert h.breaker.window == (1.0, 1.0 * 1.1)
    assert 1.0 <= delay <= 1.1
    h.feed(OK, latency=0.4)  # slow: degraded, still steady
    assert h.breaker.window == (1.0, 1.1)
    h.feed(FAIL)
    assert h.breaker.window is None  # confirming at fast_interval: exactly then
    h.feed(FAIL)
    h.feed(FAIL)
    assert h.state == (DepState.DOWN, OPEN)
    assert h.breaker.window is None  # backing off
    h.feed(OK)
    h.feed(OK)
    assert h.state == (DepState.HEALTHY, CLOSED)
    assert h.breaker.window == (1.0, 1.1)
    h.feed(Outcome(Verdict.DEGRADED, "rate_limited", "HTTP 429", retry_after=42.0))
    assert h.breaker.window is None  # not before retry_after: the delay is meant as is
