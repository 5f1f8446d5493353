"""The soak (``tests/lib/soak.py``): the daemon process against flapping PostgreSQL, Redis and LLM faults, its
anonymous memory, file descriptors, asyncio tasks and event-loop lag sampled every 10 s; none may grow without
bound.

``make test`` runs it for one minute; ``make soak`` for ``SOAK_MINUTES`` (default 30) and writes the plot to
``SOAK_DIR`` (default ``build/soak``). The verdict itself is checked on made-up series first.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from soak import Sample, judge, report, run_soak
from support import IN_CI

from failsoft.devtools.localservers import ServerError

MINUTES = float(os.environ.get("SOAK_MINUTES", "1"))


def series(minutes: float, rss: object, every: float = 10.0) -> list[Sample]:
    """Samples every ``every`` s whose anonymous memory is ``rss(t)``; the other series flat."""
    count = int(minutes * 60 / every) + 1
    return [Sample(i * every, rss(i * every), 40, 12, 0.001) for i in range(count)]  # type: ignore[operator]


def test_a_steady_leak_over_a_long_soak_is_growth() -> None:
    """1 MB a minute for 30 minutes: the fitted slope (60 MB/h) and its growth pass both limits."""
    verdicts = {v.limit.name: v for v in judge(series(30, lambda t: 80 + t / 60))}
    assert verdicts["rss_anon_mb"].grows
    assert 55 < verdicts["rss_anon_mb"].slope_per_hour < 65
    assert not verdicts["fds"].grows


def test_noise_and_a_warm_up_step_are_not_growth() -> None:
    """Alternating +-5 MB around a flat line, and a 30 MB jump in the first minutes: bounded."""
    assert not any(v.grows for v in judge(series(30, lambda t: 80 + (5 if int(t / 10) % 2 else -5))))
    assert not any(v.grows for v in judge(series(30, lambda t: 80 if t < 300 else 110)))


def test_one_minute_of_noise_stays_under_the_floor() -> None:
    """A one-minute run rising 4 MB (a steep slope, little growth) is not failed for it: the floor holds."""
    verdicts = {v.limit.name: v for v in judge(series(1, lambda t: 80 + t / 15))}
    assert verdicts["rss_anon_mb"].slope_per_hour > 30
    assert not verdicts["rss_anon_mb"].grows


@pytest.mark.timeout(int(MINUTES * 60) + 240)
def test_soak_no_resource_grows_without_bound(tmp_path: Path) -> None:
    """SOAK_MINUTES of flapping faults: every series is bounded (fitted slope and growth under their limits), the
    faults and the stream reconnections really happened, and the plot was written."""
    out = Path(os.environ.get("SOAK_DIR", tmp_path))
    try:
        result = run_soak(MINUTES, tmp_path, out)
    except ServerError as exc:
        if IN_CI:
            pytest.fail(f"CI needs PostgreSQL and Redis: {exc}")
        pytest.skip(f"no local PostgreSQL/Redis: {exc}")
    print()
    for line in report(result):
        print(line)
    assert len(result.samples) >= MINUTES * 6
    # A step every FLAP_EVERY (3) s, some of them slow (a PostgreSQL start): at least half of them, or the faults
    # did not really run.
    assert result.fault_steps >= MINUTES * 60 / 3 / 2, "the faults did not run"
    assert result.stream_reconnects >= MINUTES * 60 / 10, "the event stream was not reopened again and again"
    assert all(s.tasks > 0 and s.lag_s >= 0 for s in result.samples), "the daemon's gauges were not read"
    assert result.plot is not None
    assert result.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not result.failures, "\n".join(report(result))
