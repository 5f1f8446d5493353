"""Outlier detection over the app's reported call outcomes (as Envoy's outlier detection does for proxied
traffic): pure code, no IO, no clock reads (the caller passes the monotonic time of each report).

Two rules, either of which trips:

- **consecutive failures**: ``consecutive_failures`` failed calls in a row, none more than ``window`` after the
  one before (an app that reports only its failures must not trip on five failures spread over a day);
- **failure ratio**: at least ``min_requests`` calls in the last ``window`` of which at least ``failure_ratio``
  failed.

The window is kept as ``BUCKETS`` time slices of ``window / BUCKETS`` seconds, each holding two counts, so the
memory is fixed whatever the report rate; a report counts for between ``(BUCKETS-1)/BUCKETS`` of a window and a
whole window. A trip clears everything (as Envoy resets its counters on ejection): what happens next is judged on
reports that come after it, so the failures that tripped the breaker cannot trip it again once the active probes
have closed it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

BUCKETS = 10
CONSECUTIVE: Final = "consecutive_failures"
RATIO: Final = "failure_ratio"
_EPSILON = 1e-9  # 5% of 20 is 1.0000000000000002 in floating point: one failure must still be 5%


@dataclass(frozen=True, slots=True)
class Trip:
    """The reports say the dependency is failing: its breaker should open.

    ``reason`` is the reason code of the failure that tripped (``None`` when the app gave none); ``failures`` of
    ``total`` reports counted by ``rule``.
    """

    rule: Literal["consecutive_failures", "failure_ratio"]
    reason: str | None
    failures: int
    total: int
    window: float

    def describe(self) -> str:
        """Human text for the dependency's ``last_error``."""
        last = f" (last: {self.reason})" if self.reason else ""
        if self.rule == CONSECUTIVE:
            return f"the app reported {self.failures} failed calls in a row{last}"
        share = round(100 * self.failures / self.total) if self.total else 0
        return (f"the app reported {self.failures} failed calls of {self.total} ({share}%) "
                f"within {self.window:g}s{last}")


class OutlierDetector:
    """One dependency's detector. ``observe`` takes one reported outcome and says whether to trip."""

    __slots__ = ("_consecutive", "_index", "_last_failure", "_latest", "_slots", "_span", "consecutive_failures",
                 "failure_ratio", "min_requests", "window")

    def __init__(self, *, consecutive_failures: int, failure_ratio: float, window: float, min_requests: int) -> None:
        if consecutive_failures < 1 or min_requests < 1 or not 0 < failure_ratio <= 1 or not window > 0:
            raise ValueError("needs consecutive_failures >= 1, min_requests >= 1, 0 < failure_ratio <= 1, window > 0")
        self.consecutive_failures = consecutive_failures
        self.failure_ratio = failure_ratio
        self.window = window
        self.min_requests = min_requests
        self._span = window / BUCKETS
        # Per slice: the slice number it holds (floor(time / span)), then its total and failed counts.
        self._index = [-1] * BUCKETS
        self._slots = [[0, 0] for _ in range(BUCKETS)]
        self._consecutive = 0
        self._last_failure = -math.inf
        self._latest = -math.inf

    def observe(self, ok: bool, reason: str | None, now: float) -> Trip | None:
        """Count one reported call at monotonic time ``now``; a Trip when a rule is met (the counts then clear).

        A time earlier than one already seen counts as that later time: the detector never goes back.
        """
        now = max(now, self._latest)
        self._latest = now
        index = int(now // self._span)
        slot = index % BUCKETS
        counts = self._slots[slot]
        if self._index[slot] != index:  # the slice was last used a whole window ago or more: reuse it
            self._index[slot] = index
            counts[0] = counts[1] = 0
        counts[0] += 1
        if ok:
            self._consecutive = 0
            return None  # a success cannot trip anything
        counts[1] += 1
        if now - self._last_failure > self.window:
            self._consecutive = 0  # the previous failure is too old to make a run with this one
        self._consecutive += 1
        self._last_failure = now
        if self._consecutive >= self.consecutive_failures:
            trip = Trip(CONSECUTIVE, reason, self._consecutive, self._consecutive, self.window)
            self.reset()
            return trip
        total = failures = 0
        oldest = index - BUCKETS
        for i, (n, f) in zip(self._index, self._slots, strict=True):
            if i > oldest:
                total += n
                failures += f
        if total >= self.min_requests and failures >= self.failure_ratio * total - _EPSILON:
            trip = Trip(RATIO, reason, failures, total, self.window)
            self.reset()
            return trip
        return None

    def reset(self) -> None:
        """Forget every count (after a trip)."""
        for i in range(BUCKETS):
            self._index[i] = -1
            self._slots[i][0] = self._slots[i][1] = 0
        self._consecutive = 0
        self._last_failure = -math.inf

    def counts(self, now: float) -> tuple[int, int]:
        """(total, failed) reports that count in the window at ``now`` (for tests and debugging)."""
        oldest = int(max(now, self._latest) // self._span) - BUCKETS
        pairs = [c for i, c in zip(self._index, self._slots, strict=True) if i > oldest]
        return sum(n for n, _ in pairs), sum(f for _, f in pairs)
