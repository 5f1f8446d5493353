"""One dependency's circuit breaker: probe outcomes in, dependency status and next probe delay out.

Pure given its inputs: the caller passes the outcome, the measured latency and the clock readings, and the
random source for jitter is injected, so every path is testable without sleeping.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime, timedelta

from failsoft.daemon.config import ProbeSettings
from failsoft.daemon.limits import MAX_BACKOFF_EXPONENT
from failsoft.policies.evidence import Evidence
from failsoft.policies.model import BreakerState, DependencyStatus, DepState
from failsoft.probes.base import Outcome, Verdict

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN

# The only moves a breaker makes. Anything else is a bug and raises.
TRANSITIONS = frozenset({(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED), (HALF_OPEN, OPEN)})
# A reported rate limit that ends at most this much later than the one already held changes nothing: a flood of
# reports of one rate limit must not become a flood of State changes.
HOLD_SLACK = timedelta(seconds=1)


class IllegalTransition(RuntimeError):
    """A breaker move outside ``TRANSITIONS``."""


class Breaker:
    """Tracks one dependency. ``record`` returns the seconds to wait before the next probe."""

    def __init__(self, name: str, kind: str, settings: ProbeSettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.status = DependencyStatus(name=name, kind=kind)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._successes = 0  # consecutive successes while half open
        self._attempt = 0  # consecutive failed re-probes while open: the backoff exponent
        self.evidence = Evidence()  # a kept connection dropped since the last success (see policies.evidence)

    @property
    def window(self) -> tuple[float, float] | None:
        """The delays the next probe may start between when it may move at all: a steady dependency (closed, no
        failure, no rate limit) anywhere in its interval plus jitter, the range its delay is drawn from; None
        otherwise (confirming, backing off, rate limited: the delay is meant as is)."""
        st, s = self.status, self.settings
        if st.breaker is not CLOSED or st.consecutive_failures or st.retry_at is not None:
            return None
        return s.interval, s.interval * (1 + s.jitter)

    def connection_lost(self) -> None:
        """A kept connection to the dependency dropped: the next refused connect proves a crash."""
        self.evidence = self.evidence.lost()

    def record(self, outcome: Outcome, latency: float, now: datetime) -> float:
        """Take one probe outcome; update ``status``; return the delay until the next probe."""
        s = self.settings
        prev = self.status
        verdict, reason = outcome.verdict, outcome.reason
        if verdict is Verdict.OK and latency > s.slow_threshold:
            verdict, reason = Verdict.DEGRADED, "slow"
        first = prev.probes == 0 and prev.breaker is CLOSED  # a report may have opened it before the first probe
        # A crash proven by the kernel (a kept connection lost, then a refused connect) is down at once, like a
        # first probe or a fatal error; every other failure still counts towards unhealthy_threshold.
        conclusive = self.evidence.conclusive(outcome)
        self.evidence = self.evidence.after(outcome)
        if verdict in (Verdict.OK, Verdict.DEGRADED):
            up = DepState.HEALTHY if verdict is Verdict.OK else DepState.DEGRADED
            breaker, state = self._on_success(prev.breaker, up, first)
            failures, error = 0, outcome.error if up is DepState.DEGRADED else None
            if state is DepState.DOWN:  # half open: still down, and still down for the reason it went down
                reason, error = prev.reason, prev.last_error
        else:
            failures = prev.consecutive_failures + 1
            breaker, state = self._on_failure(
                prev.breaker, prev.state, first or conclusive or verdict is Verdict.FATAL, failures
            )
            error = outcome.error
        retry_at = now + timedelta(seconds=outcome.retry_after) if outcome.retry_after else None
        self.status = replace(
            prev,
            state=state,
            breaker=breaker,
            since=now if (state != prev.state or first) else prev.since,
            latency_ms=round(latency * 1000, 3),
            consecutive_failures=failures,
            reason=reason if state is not DepState.HEALTHY else None,
            last_error=error,
            retry_at=retry_at,
            details=dict(outcome.details),
            probes=prev.probes + 1,
        )
        return self._delay(verdict, outcome)

    def trip(self, reason: str, error: str, now: datetime) -> float | None:
        """The app's reports say the dependency fails (``daemon.report``): open the breaker now, ``down`` with
        ``reason``; the probes then decide the recovery through half-open as usual. Returns the delay until the next
        probe, or None when the breaker is already open (nothing changes)."""
        prev = self.status
        if prev.breaker is OPEN:
            return None
        self._move(prev.breaker, OPEN)
        self._attempt = 0 if prev.breaker is CLOSED else self._attempt + 1
        self.status = replace(prev, state=DepState.DOWN, breaker=OPEN, reason=reason, last_error=error,
                              since=prev.since if prev.state is DepState.DOWN else now, retry_at=None)
        return self._delay(Verdict.FAILURE, Outcome(Verdict.FAILURE))

    def hold(self, retry_after: float, error: str, now: datetime) -> float | None:
        """A rate limit reported by the app: ``degraded``/``rate_limited`` until ``retry_at``, not probed before.

        Only a dependency that answers (probed, breaker closed, not down) is held: a report never makes a dependency
        look better than the probes found it. Returns the delay until the next probe, or None when nothing changes.
        """
        prev = self.status
        if prev.breaker is not CLOSED or prev.probes == 0 or prev.state is DepState.DOWN:
            return None
        retry_at = now + timedelta(seconds=retry_after)
        if prev.reason == "rate_limited" and prev.retry_at is not None and retry_at <= prev.retry_at + HOLD_SLACK:
            return None
        self.status = replace(prev, state=DepState.DEGRADED, reason="rate_limited", last_error=error,
                              since=prev.since if prev.state is DepState.DEGRADED else now, retry_at=retry_at)
        return retry_after

    def _on_success(self, breaker: BreakerState, up: DepState, first: bool) -> tuple[BreakerState, DepState]:
        if first or breaker is CLOSED:
            return CLOSED, up
        if breaker is OPEN:
            breaker = self._move(OPEN, HALF_OPEN)
            self._successes = 0
        self._successes += 1
        if self._successes >= self.settings.healthy_threshold:
            self._attempt = 0
            return self._move(HALF_OPEN, CLOSED), up
        return HALF_OPEN, DepState.DOWN

    def _on_failure(
        self, breaker: BreakerState, state: DepState, at_once: bool, failures: int
    ) -> tuple[BreakerState, DepState]:
        if breaker is CLOSED:
            if at_once or failures >= self.settings.unhealthy_threshold:
                self._attempt = 0
                return self._move(CLOSED, OPEN), DepState.DOWN
            return CLOSED, state  # not confirmed yet: keep the state, probe again soon
        if breaker is HALF_OPEN:
            self._move(HALF_OPEN, OPEN)
        self._attempt += 1  # a failed re-probe: wait longer next time
        return OPEN, DepState.DOWN

    def _move(self, frm: BreakerState, to: BreakerState) -> BreakerState:
        if (frm, to) not in TRANSITIONS:
            raise IllegalTransition(f"{self.status.name}: breaker cannot go from {frm} to {to}")
        return to

    def _delay(self, verdict: Verdict, outcome: Outcome) -> float:
        s, st = self.settings, self.status
        if verdict is Verdict.FATAL:
            delay = s.down_interval.max  # waiting will not heal it; do not hammer
        elif st.breaker is OPEN:
            b = s.down_interval
            # The exponent is bounded: 2.0**1024 raises OverflowError (a dependency down for ~1,000 re-probes).
            cap = min(b.max, b.initial * b.multiplier ** min(self._attempt, MAX_BACKOFF_EXPONENT))
            delay = self._rng.uniform(b.initial, cap)  # full jitter within [initial, cap]
        elif st.breaker is HALF_OPEN or st.consecutive_failures:
            delay = s.fast_interval  # confirm a suspected failure (or a recovery) quickly
        else:
            delay = s.interval * (1 + s.jitter * self._rng.random())
        return max(delay, outcome.retry_after or 0.0)
