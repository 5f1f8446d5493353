"""One task per dependency: probe under the deadline, classify, feed the breaker, report, wait.

Dependencies never wait for each other: each has its own task, and a probe stuck past its deadline is
abandoned (cancelled in the background), never awaited. Probes of one dependency may overlap while one is
suspect (``policies.cadence``): each has its own deadline, and at most ``unhealthy_threshold`` exist at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import structlog

from failsoft.daemon.breaker import Breaker
from failsoft.daemon.clock import Clock
from failsoft.daemon.redact import Redactor
from failsoft.policies.cadence import NEVER, Cadence, Flight, Wakeups, all_stuck, next_start
from failsoft.policies.classify import error_text, exception_reason
from failsoft.policies.model import BreakerState, DependencyStatus
from failsoft.probes.base import Outcome, Probe, Verdict

log = structlog.get_logger("failsoft.probe")

# How long a cancelled probe may take to unwind before we stop waiting for it (it keeps unwinding alone).
_UNWIND = 0.1
_CLOSE = 1.0  # closing a probe's connections is bounded too

Result = Callable[[Outcome, float], None]


@dataclass(eq=False, slots=True)
class _Attempt:
    """One probe in flight: its check task, the probe object it runs on, and its deadline timers."""

    start: float
    probe: Probe
    on_result: Result
    timer: asyncio.TimerHandle | None = None
    expired: bool = False  # the deadline passed and the check was cancelled
    reported: bool = False  # its outcome was handed over (a check abandoned at its deadline is still running)


class DependencyScheduler:
    """Runs one dependency's probe loop until stopped."""

    def __init__(
        self,
        breaker: Breaker,
        make_probe: Callable[[Callable[[], None]], Probe],
        report: Callable[[DependencyStatus], None],
        clock: Clock,
        redact: Redactor,
        *,
        on_probe: Callable[[str, Outcome, float], None] | None = None,
        wakeups: Wakeups | None = None,
    ) -> None:
        self.breaker = breaker
        self.name = breaker.status.name
        self._wake = asyncio.Event()
        self._early = False  # a kept connection dropped: probe now
        self._make_probe = make_probe
        self.probe = make_probe(self._connection_lost)
        self._report = report
        self._clock = clock
        self._redact = redact
        self._on_probe = on_probe
        self._wakeups = wakeups or Wakeups()  # the daemon's, shared by its dependencies: steady probes start together
        s = breaker.settings
        self.cadence = Cadence.of(s.fast_interval, s.slow_threshold, s.unhealthy_threshold)
        # The plan for the next probe, which the app's reports may move too (reported_failure, reported_rate_limit).
        self._due = 0.0  # monotonic time the breaker wants the next probe
        self._not_before = -math.inf  # no probe before this: a rate limit's retry_at
        self._attempts: dict[asyncio.Task[Outcome], _Attempt] = {}
        self._results: list[tuple[float, Outcome, float]] = []
        self._closing: set[asyncio.Task[None]] = set()

    def _connection_lost(self) -> None:
        """A probe's kept connection dropped: tell the breaker (it may prove a crash) and probe at once."""
        self.breaker.connection_lost()
        self._early = True
        self._wake.set()

    async def run(self) -> None:
        """Start probes when due, record their outcomes as they end, sleep until the next thing to do.

        Intervals are periods from one probe's start to the next one's, so a slow or timed-out probe does not
        stretch them; a suspect probe does not hold back the next one either (``policies.cadence``), so a hung
        server is confirmed ``timeout + (unhealthy_threshold - 1) x fast_interval`` after the first probe meets it.
        An outcome older than one already recorded (an early probe timing out after a later one answered) is
        stale and dropped: the newest evidence wins.
        """
        clock = self._clock
        self._due = clock.monotonic()
        newest = recorded = -math.inf  # starts of the newest probe launched and of the newest outcome recorded
        timeout = self.breaker.settings.timeout
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._wake.clear()
                recorded = self._take_results(newest, recorded)
                now = clock.monotonic()
                if self._early:
                    # A dropped connection wakes us early, but never before a rate limit's "not before".
                    self._early = False
                    self._due = min(self._due, now)
                flight = self._flight()
                if all_stuck(self.cadence, flight):
                    # Every probe allowed is still stuck after its deadline: that is an answer too, given when the
                    # next probe is due, without piling another one on top.
                    at = max(self._due, self._not_before)
                    if now >= at:
                        outcome = Outcome(Verdict.FAILURE, "timeout", "the previous probes are still stuck")
                        newest = recorded = now
                        self._due = now + self._record(outcome, timeout)
                        continue
                else:
                    is_open = self.breaker.status.breaker is BreakerState.OPEN
                    at = next_start(self.cadence, flight, self._due, self._not_before, is_open)
                    if now >= at:
                        newest, self._due = now, NEVER
                        self._launch(self._idle_probe(), now, self._collect(now))
                        continue
                # Sleep until something happens (a result, a dropped connection, a report) or ``at``: a timer that
                # sets the same event, not a timeout that cancels the wait (raising costs more than the probe).
                timer = None if at == NEVER else loop.call_later(max(0.0, at - now), self._wake.set)
                try:
                    await self._wake.wait()
                finally:
                    if timer is not None:
                        timer.cancel()
        finally:
            for task, attempt in list(self._attempts.items()):
                task.cancel()
                if attempt.timer is not None:
                    attempt.timer.cancel()

    def _take_results(self, newest: float, recorded: float) -> float:
        """Record the outcomes that came in since the last look; returns the start of the newest one recorded."""
        results, self._results = self._results, []
        for start, outcome, latency in results:
            if start < recorded:
                continue  # stale: a newer probe's outcome is already recorded
            recorded = start
            if self._clock.monotonic() < self._not_before:
                # A rate limit (reported by the app while this probe ran, or answered by a newer probe) is the newer
                # news, and nothing is sent before its retry_at: this answer is not recorded.
                if self._on_probe is not None:
                    self._on_probe(self.name, outcome, latency)
                continue
            delay = self._record(outcome, latency)
            self._due = self._plan(newest, delay)
            self._not_before = self._clock.monotonic() + (outcome.retry_after or 0.0)
        return recorded

    def _plan(self, start: float, delay: float) -> float:
        """When the next probe is due: ``delay`` after ``start``, or, for a steady dependency, a start another
        dependency planned inside the same window (``Wakeups``)."""
        window = self.breaker.window
        if window is None:
            return start + delay
        return self._wakeups.join(self._clock.monotonic(), start + window[0], start + window[1], start + delay)

    def reported_failure(self, reason: str, error: str) -> bool:
        """The app's reports tripped the outlier detector: open the breaker, tell the owner, re-plan the next probe
        (the breaker's backoff while open). False when nothing changed (already open)."""
        return self._replan(self.breaker.trip(reason, error, self._clock.now()), hold=False)

    def reported_rate_limit(self, retry_after: float, error: str) -> bool:
        """The app was told to wait ``retry_after`` seconds: rate limited until then, and no probe before it.
        False when nothing changed (down, not probed yet, or already held as long)."""
        return self._replan(self.breaker.hold(retry_after, error, self._clock.now()), hold=True)

    def _replan(self, delay: float | None, *, hold: bool) -> bool:
        if delay is None:
            return False
        self._report(self.breaker.status)  # the same inbox as probe results: the owner stays the only writer
        now = self._clock.monotonic()
        self._due = now + delay  # a probe in flight re-plans again when its result lands
        if hold:
            self._not_before = max(self._not_before, now + delay)
        self._wake.set()
        return True

    def _collect(self, start: float) -> Result:
        def collect(outcome: Outcome, latency: float) -> None:
            self._results.append((start, outcome, latency))
            self._wake.set()

        return collect

    def _record(self, outcome: Outcome, latency: float) -> float:
        delay = self.breaker.record(outcome, latency, self._clock.now())
        self._log(outcome, latency, delay)
        self._report(self.breaker.status)
        return delay

    def _flight(self) -> Flight:
        active = tuple(a.start for a in self._attempts.values() if not a.reported)
        return Flight(active, sum(1 for a in self._attempts.values() if a.reported))

    def _idle_probe(self) -> Probe:
        """The kept probe when it is free, else a spare (closed after its one check) for an overlapping probe."""
        if self._kept_probe_busy():
            return self._make_probe(self._connection_lost)
        return self.probe

    def _kept_probe_busy(self) -> bool:
        return any(a.probe is self.probe for a in self._attempts.values())

    async def probe_once(self) -> tuple[Outcome, float]:
        """One probe of the kept probe object under the deadline; exceptions become outcomes here and only here."""
        if self._kept_probe_busy():
            # The last probe is still unwinding after its deadline; do not pile another one on top.
            stuck = Outcome(Verdict.FAILURE, "timeout", "the previous probe is still stuck")
            return stuck, self.breaker.settings.timeout
        done: asyncio.Future[tuple[Outcome, float]] = asyncio.get_running_loop().create_future()

        def answer(outcome: Outcome, latency: float) -> None:
            if not done.done():
                done.set_result((outcome, latency))

        task = self._launch(self.probe, self._clock.monotonic(), answer)
        try:
            return await done
        except asyncio.CancelledError:
            # Stopping: the check goes with us (``_finished`` reads its last failure, never left unretrieved).
            task.cancel()
            raise

    def _launch(self, probe: Probe, start: float, on_result: Result) -> asyncio.Task[Outcome]:
        """Start one check with its deadline; ``on_result`` receives its outcome at the latest at the deadline
        plus ``_UNWIND``, whatever the check does."""
        loop = asyncio.get_running_loop()
        task = loop.create_task(probe.check())
        attempt = _Attempt(start, probe, on_result)
        attempt.timer = loop.call_later(self.breaker.settings.timeout, self._expire, task)
        self._attempts[task] = attempt
        task.add_done_callback(self._finished)
        return task

    def _expire(self, task: asyncio.Task[Outcome]) -> None:
        """The deadline: cancel the check and give it ``_UNWIND`` to end before it is abandoned."""
        attempt = self._attempts[task]
        attempt.expired = True
        task.cancel()
        attempt.timer = asyncio.get_running_loop().call_later(_UNWIND, self._abandon, task)

    def _abandon(self, task: asyncio.Task[Outcome]) -> None:
        """The check did not unwind: answer the timeout now and let it go on unwinding alone (it stays counted)."""
        attempt = self._attempts[task]
        attempt.timer = None
        self._hand_over(attempt, self._timed_out(attempt))

    def _timed_out(self, attempt: _Attempt) -> tuple[Outcome, float]:
        timeout = self.breaker.settings.timeout
        latency = max(timeout, self._clock.monotonic() - attempt.start)
        return Outcome(Verdict.FAILURE, "timeout", f"no answer within {timeout * 1000:g}ms"), latency

    def _finished(self, task: asyncio.Task[Outcome]) -> None:
        attempt = self._attempts.pop(task)
        if attempt.timer is not None:
            attempt.timer.cancel()
        exc = None if task.cancelled() else task.exception()  # always read: asyncio must not warn about it
        if attempt.probe is not self.probe:
            closing = asyncio.get_running_loop().create_task(_close(attempt.probe))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        if not attempt.reported:
            self._hand_over(attempt, self._timed_out(attempt) if attempt.expired else self._outcome(task, exc, attempt))
        else:
            self._wake.set()  # a stuck probe ended: its place is free again

    def _outcome(
        self, task: asyncio.Task[Outcome], exc: BaseException | None, attempt: _Attempt
    ) -> tuple[Outcome, float]:
        latency = self._clock.monotonic() - attempt.start
        if task.cancelled():  # cancelled by someone else than the deadline (shutdown)
            return Outcome(Verdict.FAILURE, "timeout", "the probe was cancelled"), latency
        if exc is None:
            outcome = task.result()
            # An answer can carry a server's text too (an OOM message, a provider's error): it is redacted here,
            # once for every probe, as exception text is below.
            if outcome.error:
                outcome = replace(outcome, error=self._redact(outcome.error))
            return outcome, latency
        reason, fatal = exception_reason(exc)
        verdict = Verdict.FATAL if fatal else Verdict.FAILURE
        return Outcome(verdict, reason, self._redact(error_text(exc))), latency

    def _hand_over(self, attempt: _Attempt, result: tuple[Outcome, float]) -> None:
        attempt.reported = True
        attempt.on_result(*result)

    def _log(self, outcome: Outcome, latency: float, delay: float) -> None:
        if self._on_probe is not None:
            self._on_probe(self.name, outcome, latency)
        if outcome.verdict in (Verdict.OK, Verdict.DEGRADED):
            log.debug("probe_ok", dependency=self.name, latency_ms=round(latency * 1000, 2), reason=outcome.reason)
            return
        # A dependency already known to be down is logged at debug: a sidecar must not flood the pod's logs.
        quiet = self.breaker.status.breaker is BreakerState.OPEN and self.breaker.status.consecutive_failures > 1
        # The first probe's result is logged once by the state owner (dependency_first_state).
        quiet = quiet or self.breaker.status.probes == 1
        (log.debug if quiet else log.info)(
            "probe_failed", dependency=self.name, kind=self.breaker.status.kind, reason=outcome.reason,
            error=outcome.error, latency_ms=round(latency * 1000, 2),
            consecutive_failures=self.breaker.status.consecutive_failures, next_probe_s=round(delay, 3),
        )

    async def aclose(self) -> None:
        """Release the probe's connections (bounded: a probe must not hang shutdown)."""
        await _close(self.probe)
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=_CLOSE)


async def _close(probe: Probe) -> None:
    with contextlib.suppress(Exception, TimeoutError):
        await asyncio.wait_for(probe.aclose(), timeout=_CLOSE)
