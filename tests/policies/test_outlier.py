"""failsoft.policies.outlier: the outlier detector over reported call outcomes, with hypothesis and a manual clock
(each report carries its own time; nothing sleeps)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from failsoft.policies.outlier import BUCKETS, CONSECUTIVE, RATIO, OutlierDetector, Trip


@dataclass(frozen=True)
class Limits:
    """The four passive settings."""

    consecutive_failures: int
    failure_ratio: float
    window: float
    min_requests: int

    def detector(self) -> OutlierDetector:
        """A fresh detector with these limits."""
        return OutlierDetector(consecutive_failures=self.consecutive_failures, failure_ratio=self.failure_ratio,
                               window=self.window, min_requests=self.min_requests)


DEFAULTS = Limits(5, 0.5, 10.0, 20)
limits = st.builds(Limits, st.integers(1, 12), st.sampled_from([0.05, 0.25, 0.5, 0.75, 1.0]),
                   st.sampled_from([0.5, 1.0, 10.0, 60.0]), st.integers(1, 40))
# (ok, gap in seconds since the previous report)
reports = st.lists(st.tuples(st.booleans(), st.floats(0, 30, allow_nan=False)), max_size=300)


def feed(det: OutlierDetector, seq: list[tuple[bool, float]], start: float = 1000.0) -> list[Trip | None]:
    """Observe each (ok, gap) in turn on a clock that starts at ``start``; the verdict of each."""
    now, out = start, []
    for ok, gap in seq:
        now += gap
        out.append(det.observe(ok, None if ok else "timeout", now))
    return out


def test_defaults_trip_on_the_fifth_failure_in_a_row() -> None:
    """With the defaults, four failures do nothing and the fifth trips (consecutive rule), naming the reason."""
    det = DEFAULTS.detector()
    verdicts = [det.observe(False, "timeout", 1000.0 + i * 0.1) for i in range(5)]
    assert verdicts[:4] == [None] * 4
    trip = verdicts[4]
    assert trip is not None
    assert (trip.rule, trip.reason, trip.failures) == (CONSECUTIVE, "timeout", 5)
    assert "5 failed calls in a row (last: timeout)" in trip.describe()


def test_defaults_trip_on_half_of_twenty_calls_without_five_in_a_row() -> None:
    """Alternating failure/success never makes five in a row, but 10 failures of 20 within 10 s trips (ratio)."""
    det = DEFAULTS.detector()
    verdicts = [det.observe(i % 2 == 0, "reset", 1000.0 + i * 0.2) for i in range(20)]
    assert verdicts[:19] == [None] * 19
    trip = verdicts[19]
    assert trip is not None
    assert (trip.rule, trip.failures, trip.total) == (RATIO, 10, 20)
    assert "10 failed calls of 20 (50%) within 10s" in trip.describe()


def test_failures_spread_wider_than_the_window_never_trip() -> None:
    """An app that reports only failures, one every 11 s (more than the 10 s window apart), never trips."""
    det = DEFAULTS.detector()
    assert all(det.observe(False, "timeout", 1000.0 + i * 11) is None for i in range(100))


def test_bad_limits_are_refused() -> None:
    """The detector refuses limits that make no sense (config validation reports them with their YAML path)."""
    for bad in ({"consecutive_failures": 0}, {"min_requests": 0}, {"failure_ratio": 0.0}, {"failure_ratio": 1.5},
                {"window": 0.0}):
        with pytest.raises(ValueError, match="needs"):
            OutlierDetector(**{"consecutive_failures": 5, "failure_ratio": 0.5, "window": 10.0, "min_requests": 20,
                               **bad})


@given(limits, st.lists(st.floats(0, 30, allow_nan=False), max_size=300))
def test_successes_alone_never_trip(lim: Limits, gaps: list[float]) -> None:
    """Whatever the limits and the timing, a detector fed only successes never trips."""
    assert feed(lim.detector(), [(True, g) for g in gaps]) == [None] * len(gaps)


@given(limits, reports)
def test_only_a_failure_trips_and_never_below_the_volume(lim: Limits, seq: list[tuple[bool, float]]) -> None:
    """A trip is always on a failed report, and needs at least min(consecutive_failures, min_requests) reports
    since the previous trip (fewer cannot meet either rule)."""
    since_trip = 0
    for (ok, _), verdict in zip(seq, feed(lim.detector(), seq), strict=True):
        since_trip += 1
        if verdict is not None:
            assert not ok
            assert since_trip >= min(lim.consecutive_failures, lim.min_requests)
            since_trip = 0


def exact(lim: Limits, oks: list[bool]) -> list[bool]:
    """The reference: every report at the same instant, counted exactly since the last trip."""
    out, total, failed, run = [], 0, 0, 0
    for ok in oks:
        total += 1
        failed += not ok
        run = 0 if ok else run + 1
        trip = not ok and (run >= lim.consecutive_failures
                           or (total >= lim.min_requests and failed >= lim.failure_ratio * total - 1e-9))
        out.append(trip)
        if trip:
            total = failed = run = 0
    return out


@given(limits, st.lists(st.booleans(), max_size=400))
def test_within_one_instant_it_is_exact(lim: Limits, oks: list[bool]) -> None:
    """Reports at one instant (one time slice) are judged exactly as the reference model counts them."""
    got = [v is not None for v in feed(lim.detector(), [(ok, 0.0) for ok in oks])]
    assert got == exact(lim, oks)


@given(limits, reports, reports)
def test_after_a_quiet_window_it_behaves_as_new(lim: Limits, before: list[tuple[bool, float]],
                                                after: list[tuple[bool, float]]) -> None:
    """Reports older than the window are forgotten: after a silence longer than the window, a detector with any
    history gives exactly the verdicts of a fresh one."""
    old = lim.detector()
    end = 1000.0 + sum(g for _, g in before)
    feed(old, before)
    fresh = lim.detector()
    restart = end + lim.window * 1.01 + 1
    assert feed(old, after, start=restart) == feed(fresh, after, start=restart)


@given(limits, st.lists(st.tuples(st.booleans(), st.floats(-5, 5, allow_nan=False)), max_size=200))
def test_time_going_back_is_harmless(lim: Limits, seq: list[tuple[bool, float]]) -> None:
    """Times that go backwards (negative gaps) are taken as the latest time seen: no error, counts stay sane."""
    det = lim.detector()
    feed(det, seq)
    total, failed = det.counts(0.0)
    assert 0 <= failed <= total <= len(seq)


@settings(max_examples=30)
@given(limits, st.integers(1_000, 20_000))
def test_memory_is_fixed_whatever_the_rate(lim: Limits, n: int) -> None:
    """Thousands of reports within one window keep the same fixed number of slices, and the counts in the window
    are exactly what was reported (a flood is counted, not stored)."""
    det = OutlierDetector(consecutive_failures=10**9, failure_ratio=1.0, window=lim.window, min_requests=10**9)
    for i in range(n):
        det.observe(i % 3 != 0, "x", 1000.0 + (i / n) * lim.window * 0.5)
    assert len(det._slots) == BUCKETS  # the memory bound is the point of the test
    assert det.counts(1000.0 + lim.window * 0.5) == (n, len(range(0, n, 3)))
