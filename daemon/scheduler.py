"""One task per dependency: probe under the deadline, classify, feed the breaker, report, wait.

Dependencies never wait for each other: each has its own task, and a probe stuck past its deadline is
abandoned (cancelled in the background), never awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import replace

import structlog

from failsoft.daemon.breaker import Breaker
from failsoft.daemon.clock import Clock
from failsoft.daemon.redact import Redactor
from failsoft.policies.classify import error_text, exception_reason
from failsoft.policies.model import BreakerState, DependencyStatus
from failsoft.probes.base import Outcome, Probe, Verdict

log = structlog.get_logger("failsoft.probe")

# How long a cancelled probe may take to unwind before we stop waiting for it (it keeps unwinding alone).
_UNWIND = 0.1


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
    ) -> None:
        self.breaker = breaker
        self.name = breaker.status.name
        self._wake = asyncio.Event()
        self.probe = make_probe(self._wake.set)
        self._report = report
        self._clock = clock
        self._redact = redact
        self._on_probe = on_probe
        self._stuck: asyncio.Task[Outcome] | None = None
        # The plan for the next probe, which the app's reports may move (reported_failure, reported_rate_limit).
        self._due = 0.0  # monotonic time the next probe is due
        self._not_before = 0.0  # no probe before this: a rate limit's retry_at
        self._waiting = False
        self._replanned = False

    async def run(self) -> None:
        """Probe, report, sleep until the next probe or an early wake-up (a dropped connection).

        Intervals are periods from one probe's start to the next one's, so a slow or timed-out probe does not
        stretch them: a hung server is confirmed after ``unhealthy_threshold`` deadlines, not deadlines plus gaps.
        """
        while True:
            self._wake.clear()
            started = self._clock.monotonic()
            outcome, latency = await self.probe_once()
            if self._clock.monotonic() < self._not_before:
                # The app reported a rate limit while this probe ran: the report is the newer news, and nothing is
                # sent before its retry_at, so this probe's answer is not recorded.
                if self._on_probe is not None:
                    self._on_probe(self.name, outcome, latency)
            else:
                delay = self.breaker.record(outcome, latency, self._clock.now())
                self._log(outcome, latency, delay)
                self._report(self.breaker.status)
                self._due = started + delay
                self._not_before = self._clock.monotonic() + (outcome.retry_after or 0.0)
            await self._sleep()

    async def _sleep(self) -> None:
        """Until the next probe is due or an early wake-up (a dropped connection); a report may move the plan."""
        self._waiting = True
        try:
            while True:
                self._replanned = False
                with contextlib.suppress(TimeoutError):  # asyncio.timeout: 3.11's wait_for can lose a cancellation
                    async with asyncio.timeout(max(0.0, self._due - self._clock.monotonic())):
                        await self._wake.wait()
                if not self._replanned:
                    break
                self._wake.clear()  # woken by a report that moved the plan: wait for the new one
        finally:
            self._waiting = False
        # A dropped connection wakes us early, but never before a rate limit's "not before" (which a report may
        # push further while we sleep).
        while (wait := self._not_before - self._clock.monotonic()) > 0:  # noqa: ASYNC110 - sleeps to a deadline
            await asyncio.sleep(wait)

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
        self._due = now + delay
        if hold:
            self._not_before = max(self._not_before, now + delay)
        if self._waiting:  # while a probe runs, its own result re-plans when it lands
            self._replanned = True
            self._wake.set()
        return True

    async def probe_once(self) -> tuple[Outcome, float]:
        """One probe under the deadline; exceptions become outcomes here and only here."""
        timeout = self.breaker.settings.timeout
        start = self._clock.monotonic()
        if self._stuck is not None and not self._stuck.done():
            # The last probe is still unwinding after its deadline; do not pile another one on top.
            return Outcome(Verdict.FAILURE, "timeout", "the previous probe is still stuck"), timeout
        task = asyncio.get_running_loop().create_task(self.probe.check())
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:
            # Stopping: the check goes with us, and its last failure is read (never logged as unretrieved).
            task.add_done_callback(_consume)
            task.cancel()
            raise
        latency = self._clock.monotonic() - start
        if not done:
            task.add_done_callback(_consume)  # it may still fail while unwinding: read that, never log it
            task.cancel()
            await asyncio.wait({task}, timeout=_UNWIND)
            if not task.done():
                self._stuck = task
            return Outcome(Verdict.FAILURE, "timeout", f"no answer within {timeout * 1000:g}ms"), latency
        exc = task.exception()
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
        with contextlib.suppress(Exception, TimeoutError):
            await asyncio.wait_for(self.probe.aclose(), timeout=1.0)


def _consume(task: asyncio.Task[Outcome]) -> None:
    """Retrieve a stuck probe's late result so asyncio does not warn that it was never read."""
    if not task.cancelled():
        task.exception()
