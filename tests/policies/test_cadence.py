"""failsoft.policies.cadence: when the next probe starts while others are in flight, and the bound on them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from failsoft.policies.cadence import NEVER, Cadence, Flight, Wakeups, all_stuck, next_start

C = Cadence.of(fast_interval=0.25, slow_threshold=0.25, unhealthy_threshold=3)


def test_with_nothing_in_flight_the_next_probe_is_due_when_the_breaker_says() -> None:
    """Idle: the breaker's due time, never before a rate limit's not_before."""
    assert next_start(C, Flight(), due=10.0, not_before=0.0, breaker_open=False) == 10.0
    assert next_start(C, Flight(), due=10.0, not_before=12.0, breaker_open=False) == 12.0


def test_a_suspect_probe_no_longer_holds_back_the_next_one() -> None:
    """One probe running since t=5: a second may start once it is fast_interval old, a third fast_interval after
    the second, even though the breaker's next due time is later."""
    assert next_start(C, Flight(active=(5.0,)), due=NEVER, not_before=0.0, breaker_open=False) == 5.25
    assert next_start(C, Flight(active=(5.0, 5.25)), due=NEVER, not_before=0.0, breaker_open=False) == 5.5


def test_a_slow_threshold_above_fast_interval_delays_the_first_overlap() -> None:
    """With slow_threshold 1.5s (an LLM), a probe is suspect only once it is slower than that: an ordinary slow
    answer does not double the probe rate."""
    llm = Cadence.of(fast_interval=0.25, slow_threshold=1.5, unhealthy_threshold=3)
    assert next_start(llm, Flight(active=(5.0,)), due=NEVER, not_before=0.0, breaker_open=False) == 6.5
    assert next_start(llm, Flight(active=(5.0, 6.5)), due=NEVER, not_before=0.0, breaker_open=False) == 6.75


def test_no_overlap_while_the_breaker_is_open() -> None:
    """Down and backing off: one probe at a time."""
    assert next_start(C, Flight(active=(5.0,)), due=5.5, not_before=0.0, breaker_open=True) == NEVER


def test_no_probe_before_not_before_even_when_overlapping() -> None:
    """A rate limit holds for overlapping probes too."""
    assert next_start(C, Flight(active=(5.0,)), due=NEVER, not_before=9.0, breaker_open=False) == 9.0


def test_the_cap_counts_stuck_probes_too() -> None:
    """At the cap nothing starts, whether the probes are awaited or abandoned and still unwinding; when all of them
    are stuck, the scheduler is told so (it then reports a timeout without starting another)."""
    assert next_start(C, Flight(active=(1.0, 1.25, 1.5)), due=0.0, not_before=0.0, breaker_open=False) == NEVER
    assert next_start(C, Flight(stuck=3), due=0.0, not_before=0.0, breaker_open=False) == NEVER
    assert all_stuck(C, Flight(stuck=3))
    assert not all_stuck(C, Flight(active=(1.0,), stuck=2))
    assert next_start(C, Flight(stuck=2), due=4.0, not_before=0.0, breaker_open=False) == 4.0


@given(active=st.lists(st.floats(0, 100), max_size=6), stuck=st.integers(0, 6), due=st.floats(0, 200),
       not_before=st.floats(0, 200), breaker_open=st.booleans(), threshold=st.integers(1, 5))
def test_never_beyond_the_cap_and_never_before_not_before(
    *, active: list[float], stuck: int, due: float, not_before: float, breaker_open: bool, threshold: int
) -> None:
    """For any flight: a start is offered only below the cap, never before not_before, never while open and busy."""
    cadence = Cadence.of(0.25, 0.25, threshold)
    flight = Flight(tuple(sorted(active)), stuck)
    at = next_start(cadence, flight, due, not_before, breaker_open)
    if flight.total >= cadence.cap or (breaker_open and active):
        assert at == NEVER
    else:
        assert at >= not_before


def test_a_steady_probe_joins_a_start_planned_inside_its_window() -> None:
    """Timer coalescing: the first dependency keeps its own random point; the next ones whose window holds it
    start then too, and one whose window does not keeps its own."""
    w = Wakeups()
    assert w.join(now=0.0, lo=1.0, hi=1.1, own=1.07) == 1.07
    assert w.join(now=0.0, lo=1.02, hi=1.12, own=1.11) == 1.07
    assert w.join(now=0.0, lo=0.9, hi=1.0, own=0.95) == 0.95
    assert w.join(now=0.0, lo=0.9, hi=1.08, own=1.0) == 0.95  # the earliest one planned in the window


def test_a_start_in_the_past_is_never_joined() -> None:
    """What is planned before ``now`` has happened: nobody can start then any more."""
    w = Wakeups()
    assert w.join(now=0.0, lo=1.0, hi=1.1, own=1.05) == 1.05
    assert w.join(now=1.06, lo=1.0, hi=2.0, own=1.5) == 1.5


@given(windows=st.lists(st.tuples(st.floats(0, 100), st.floats(0, 5), st.floats(0, 1)), max_size=40))
def test_every_start_is_inside_its_own_window(windows: list[tuple[float, float, float]]) -> None:
    """Whatever was planned before, a dependency's start is within [lo, hi], and the plans stay bounded by the
    starts still ahead."""
    w = Wakeups()
    now = 0.0
    for step, width, where in windows:
        now += step / 10
        lo, hi = now + step, now + step + width
        at = w.join(now, lo, hi, lo + where * width)
        assert lo <= at <= hi
    assert len(w._planned) <= len(windows)
