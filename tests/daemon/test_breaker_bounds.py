"""The breaker's backoff stays finite however long a dependency stays down."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from failsoft.daemon.breaker import Breaker
from failsoft.daemon.config import Backoff, ProbeSettings
from failsoft.policies.model import BreakerState
from failsoft.probes.base import Outcome, Verdict


def test_two_thousand_failed_reprobes_keep_a_bounded_delay() -> None:
    """2,000 failed re-probes while open (over 8 hours with the defaults): every delay stays within
    [initial, max]; ``multiplier ** attempts`` used to raise OverflowError after about 1,000 and stop the daemon."""
    settings = ProbeSettings(down_interval=Backoff(initial=1.0, max=30.0, multiplier=2.0))
    breaker = Breaker("db", "tcp", settings, rng=random.Random(3))
    failure = Outcome(Verdict.FAILURE, "connection_refused", "refused")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    delays = [breaker.record(failure, 0.001, now) for _ in range(2000)]
    assert breaker.status.breaker is BreakerState.OPEN
    assert all(1.0 <= d <= 30.0 for d in delays[1:])
