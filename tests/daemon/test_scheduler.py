"""failsoft.daemon.scheduler.DependencyScheduler: the deadline, exceptions turned into outcomes, no stacking of stuck
probes, and early re-probes when a kept connection drops.

The probes here are tiny in-process objects with the probe shape (no server is involved); real servers are in
tests/probes and tests/e2e.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable
from typing import Any

from support import until

from failsoft.daemon.breaker import Breaker
from failsoft.daemon.clock import SystemClock
from failsoft.daemon.config import Backoff, ProbeSettings
from failsoft.daemon.redact import Redactor
from failsoft.daemon.scheduler import DependencyScheduler
from failsoft.policies.cadence import Wakeups
from failsoft.policies.model import DependencyStatus, DepState
from failsoft.probes.base import OK, Outcome, ProbeFailure, Verdict

TIMEOUT = 0.3


class ScriptedProbe:
    """Runs ``behaviour`` on each check and counts the checks."""

    def __init__(self, behaviour: Callable[[ScriptedProbe], object], wake: Callable[[], None]) -> None:
        self.behaviour = behaviour
        self.wake = wake
        self.calls = 0
        self.cancelled = 0
        self.check_times: list[float] = []
        self.release = asyncio.Event()
        self.finished = asyncio.Event()
        self.closed = False

    async def check(self) -> Outcome:
        self.calls += 1
        self.check_times.append(time.monotonic())
        result = self.behaviour(self)
        if asyncio.iscoroutine(result):
            result = await result
        assert isinstance(result, Outcome)
        return result

    async def aclose(self) -> None:
        self.closed = True


class Reports(list[DependencyStatus]):
    """The statuses a scheduler reported, with a way to wait for the next ones (no polling)."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = asyncio.Condition()

    def append(self, status: DependencyStatus) -> None:
        super().append(status)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def until(self, predicate: Callable[[Reports], bool]) -> None:
        """Wait until ``predicate(self)`` holds (bounded by the caller's timeout)."""
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self))


def make(behaviour: Callable[[ScriptedProbe], object], settings: ProbeSettings | None = None,
         secrets: tuple[str, ...] = ()) -> tuple[DependencyScheduler, ScriptedProbe, Reports]:
    """A scheduler around a scripted probe; the statuses it reports are collected."""
    reports = Reports()
    holder: list[ScriptedProbe] = []

    def factory(wake: Callable[[], None]) -> ScriptedProbe:
        holder.append(ScriptedProbe(behaviour, wake))
        return holder[0]

    settings = settings or ProbeSettings(timeout=TIMEOUT)
    scheduler = DependencyScheduler(Breaker("dep", "tcp", settings), factory, reports.append, SystemClock(),
                                    Redactor(secrets))
    return scheduler, holder[0], reports


def raising_once_set(exc: Exception) -> tuple[asyncio.Event, Callable[[ScriptedProbe], object]]:
    """A probe behaviour that answers OK until the event is set, then raises ``exc`` on every check."""
    switch = asyncio.Event()

    def behaviour(_: ScriptedProbe) -> object:
        if switch.is_set():
            raise exc
        return OK

    return switch, behaviour


async def hang_ignoring_cancel(probe: ScriptedProbe) -> Outcome:
    """A probe stuck in something that does not honour cancellation until released (a blocked driver)."""
    while not probe.release.is_set():
        try:
            await probe.release.wait()
        except asyncio.CancelledError:
            probe.cancelled += 1
    probe.finished.set()
    return OK


async def hang_honouring_cancel(probe: ScriptedProbe) -> Outcome:
    """A probe that waits forever but unwinds at once when cancelled."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        probe.cancelled += 1
        raise
    return OK


async def test_a_hanging_probe_gives_a_timeout_outcome_promptly() -> None:
    """A probe that never answers becomes a failure with reason timeout at the deadline (reported as its
    latency), not whenever the probe would have ended (never)."""
    scheduler, probe, _ = make(hang_honouring_cancel)
    outcome, latency = await asyncio.wait_for(scheduler.probe_once(), 10)
    assert (outcome.verdict, outcome.reason) == (Verdict.FAILURE, "timeout")
    assert "300ms" in (outcome.error or "")
    assert latency >= TIMEOUT
    assert probe.cancelled == 1  # it was cancelled, not left running


async def test_a_probe_that_ignores_cancellation_is_not_awaited() -> None:
    """A probe stuck past its deadline that will not unwind is abandoned: probe_once returns anyway."""
    scheduler, probe, _ = make(hang_ignoring_cancel)
    outcome, _ = await asyncio.wait_for(scheduler.probe_once(), 10)
    assert outcome.reason == "timeout"
    assert not probe.finished.is_set()  # returned while the probe is still stuck: it was not awaited
    assert probe.cancelled == 1
    probe.release.set()
    await asyncio.wait_for(probe.finished.wait(), 5)  # the abandoned check ends; the test leaves no task behind


async def raise_timeout_when_cancelled(probe: ScriptedProbe) -> Outcome:
    """What aiohttp does when its own timer fires at the scheduler's deadline: the cancellation comes out as
    TimeoutError."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        probe.cancelled += 1
        raise TimeoutError from None
    return OK


async def test_an_abandoned_probe_that_fails_while_unwinding_leaves_no_unretrieved_exception() -> None:
    """A probe that ends with an exception during the unwind wait has that exception consumed: asyncio must not
    log "Task exception was never retrieved" (an error line in the daemon's log for every timeout)."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        scheduler, probe, _ = make(raise_timeout_when_cancelled)
        outcome, _ = await scheduler.probe_once()
        assert outcome.reason == "timeout"
        assert probe.cancelled == 1
        del scheduler, probe
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert [c["message"] for c in reported] == []


async def test_a_probe_in_flight_at_shutdown_leaves_no_unretrieved_exception() -> None:
    """At shutdown the scheduler is cancelled while a check is in flight; the check, cancelled with it, may end in
    an exception (aiohttp raises TimeoutError, asyncpg a closed connection): that exception is consumed, so
    asyncio logs no "Task exception was never retrieved" error while the daemon stops."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        scheduler, probe, _ = make(raise_timeout_when_cancelled, ProbeSettings(timeout=30))
        running = asyncio.create_task(scheduler.probe_once())
        for _ in range(5):
            await asyncio.sleep(0)  # probe_once starts its check, which parks
        assert probe.calls == 1
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        for _ in range(3):
            await asyncio.sleep(0)  # the check unwinds
        assert probe.cancelled == 1  # the check was cancelled with its scheduler, not left running
        del scheduler, probe, running
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert [c["message"] for c in reported] == []


async def test_a_stuck_probe_is_not_stacked() -> None:
    """While the previous check is still stuck, the next probe_once does not start another one: it reports a
    timeout at once. Once the stuck one has finished, checking resumes."""
    scheduler, probe, _ = make(hang_ignoring_cancel)
    await scheduler.probe_once()
    for _ in range(3):
        outcome, _ = await asyncio.wait_for(scheduler.probe_once(), 10)
        # Answered from the stuck check, without starting a probe or waiting for a deadline of its own.
        assert (outcome.verdict, outcome.reason, outcome.error) == (
            Verdict.FAILURE, "timeout", "the previous probe is still stuck")
    assert probe.calls == 1
    probe.release.set()
    await asyncio.wait_for(probe.finished.wait(), 5)
    probe.behaviour = lambda _: OK
    outcome, _ = await scheduler.probe_once()
    assert outcome == OK
    assert probe.calls == 2


async def test_exceptions_become_classified_outcomes() -> None:
    """A raised OS error is a failure with its reason and a human error text."""
    def refuse(_: ScriptedProbe) -> object:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)")

    scheduler, _, _ = make(refuse)
    outcome, _ = await scheduler.probe_once()
    assert (outcome.verdict, outcome.reason) == (Verdict.FAILURE, "connection_refused")
    assert outcome.error == "ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 1)"


async def test_a_fatal_probe_failure_becomes_a_fatal_outcome() -> None:
    """ProbeFailure(fatal=True) from a probe is a FATAL verdict with the probe's reason."""
    def deny(_: ScriptedProbe) -> object:
        raise ProbeFailure("auth", "password authentication failed for user \"app\"", fatal=True)

    scheduler, _, _ = make(deny)
    outcome, _ = await scheduler.probe_once()
    assert (outcome.verdict, outcome.reason) == (Verdict.FATAL, "auth")


async def test_error_text_is_redacted() -> None:
    """A secret that a driver puts into its exception text never reaches the outcome."""
    def leak(_: ScriptedProbe) -> object:
        raise OSError("cannot connect to postgresql://app:hunter2-secret@db:5432/app with token tk-123456789")

    scheduler, _, _ = make(leak, secrets=("tk-123456789",))
    outcome, _ = await scheduler.probe_once()
    assert "hunter2-secret" not in (outcome.error or "")
    assert "tk-123456789" not in (outcome.error or "")
    assert "***" in (outcome.error or "")


async def test_error_text_a_probe_returns_is_redacted_too() -> None:
    """A probe that answers (rather than raises) with a server's text holding a secret: the outcome that reaches
    the breaker, and so the State's last_error, has it masked by the same redactor."""
    def answer(_: ScriptedProbe) -> object:
        return Outcome(Verdict.DEGRADED, "oom", "OOM command not allowed for user app (password pw-987654321)")

    scheduler, _, _ = make(answer, secrets=("pw-987654321",))
    outcome, _ = await scheduler.probe_once()
    assert (outcome.verdict, outcome.reason) == (Verdict.DEGRADED, "oom")
    assert outcome.error == "OOM command not allowed for user app (password ***)"


async def test_run_reports_every_probe_and_a_dropped_connection_reprobes_at_once() -> None:
    """The loop reports each status; a probe calling connection_lost wakes it long before the next interval (an
    hour away: the second report within the deadline can only come from the wake-up)."""
    settings = ProbeSettings(interval=3600.0, timeout=TIMEOUT)
    scheduler, probe, reports = make(lambda _: OK, settings)
    task = asyncio.create_task(scheduler.run())
    try:
        async with asyncio.timeout(30):
            await reports.until(len)
            assert reports[0].state is DepState.HEALTHY
            probe.wake()  # what a probe's hooks.connection_lost does
            await reports.until(lambda r: len(r) >= 2)
        assert probe.calls == 2
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await scheduler.aclose()
    assert probe.closed


async def test_an_early_wake_never_probes_before_retry_after() -> None:
    """A rate limit's retry_after holds even when a dropped connection asks for an early re-probe: the next check
    starts no sooner than retry_after after the limited one (and it does come, long before the hour's interval)."""
    settings = ProbeSettings(interval=3600.0, timeout=TIMEOUT, down_interval=Backoff(0.05, 0.1, 2))
    limited = Outcome(Verdict.DEGRADED, "rate_limited", "HTTP 429", retry_after=0.6)
    scheduler, probe, reports = make(lambda p: limited if p.calls == 1 else OK, settings)
    task = asyncio.create_task(scheduler.run())
    try:
        async with asyncio.timeout(30):
            await reports.until(len)
            probe.wake()
            await reports.until(lambda r: len(r) >= 2)
        # A lower bound only (never before retry_after): a busy machine can only make the gap longer.
        assert probe.check_times[1] - probe.check_times[0] >= 0.6
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_failing_dependency_is_reprobed_at_fast_interval_then_opens() -> None:
    """Run with real time: a healthy dependency that starts failing is confirmed down after unhealthy_threshold
    probes spaced by fast_interval, not by the normal interval. The normal interval is an hour, so reaching down
    within the test's deadline is only possible at fast_interval (the first failure is probed at once by a wake-up,
    as a dropped connection does). The failures are resets, not refusals: after a dropped connection a refused
    connect would prove a crash and be down at once (test_a_crash_is_down_on_the_first_refused_reprobe)."""
    settings = ProbeSettings(interval=3600, timeout=TIMEOUT, fast_interval=0.05, unhealthy_threshold=3, jitter=0)
    failing, behaviour = raising_once_set(ConnectionResetError(104, "reset"))
    scheduler, probe, reports = make(behaviour, settings)
    task = asyncio.create_task(scheduler.run())
    try:
        async with asyncio.timeout(30):
            await reports.until(len)
            failing.set()
            probe.wake()
            await reports.until(lambda r: r[-1].state is DepState.DOWN)
        assert probe.calls == 1 + 3  # the healthy probe, then the three failures
        assert reports[-1].reason == "connection_reset"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- overlapping probes and their bound ----------------------------------------------------------------------------


class Fleet:
    """A probe factory that builds a new ScriptedProbe per call and counts how many checks run at once."""

    def __init__(self, behaviour: Callable[[ScriptedProbe], object]) -> None:
        self.probes: list[ScriptedProbe] = []
        self.running = 0
        self.most = 0
        self.behaviour = behaviour

    def __call__(self, wake: Callable[[], None]) -> ScriptedProbe:
        async def counted(probe: ScriptedProbe) -> object:
            self.running += 1
            self.most = max(self.most, self.running)
            try:
                result = self.behaviour(probe)
                return await result if asyncio.iscoroutine(result) else result
            finally:
                self.running -= 1

        probe = ScriptedProbe(counted, wake)
        self.probes.append(probe)
        return probe


async def _run_until(scheduler: DependencyScheduler, predicate: Callable[[], bool], within: float = 10) -> None:
    task = asyncio.create_task(scheduler.run())
    try:
        await until(predicate, within)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_stuck_probes_never_exceed_unhealthy_threshold() -> None:
    """Probes that ignore cancellation and never end: however long it runs, no more than unhealthy_threshold checks
    exist at once (abandoned ones included), and the scheduler still reports a timeout at each due time."""
    settings = ProbeSettings(interval=0.05, timeout=0.05, fast_interval=0.02, slow_threshold=0.02,
                             unhealthy_threshold=3, down_interval=Backoff(0.02, 0.05, 2))
    fleet = Fleet(hang_ignoring_cancel)
    reports = Reports()
    scheduler = DependencyScheduler(Breaker("dep", "tcp", settings), fleet, reports.append, SystemClock(),
                                    Redactor(()))
    await _run_until(scheduler, lambda: len(reports) >= 15)
    assert fleet.most == 3
    assert sum(p.calls for p in fleet.probes) == 3  # the three stuck ones were never joined by a fourth
    assert reports[-1].state is DepState.DOWN and reports[-1].reason == "timeout"
    for probe in fleet.probes:
        probe.release.set()


async def test_a_hung_dependency_is_probed_by_overlapping_probes_each_with_its_own_deadline() -> None:
    """A hang: each check waits until cancelled at its deadline. While the first is still running a second and a
    third start beside it (on spare probe objects, closed afterwards), so the three timeouts arrive fast_interval
    apart and the breaker opens; at no time do more than unhealthy_threshold run."""
    settings = ProbeSettings(interval=30.0, timeout=0.3, fast_interval=0.05, slow_threshold=0.05,
                             unhealthy_threshold=3, jitter=0)
    hung = asyncio.Event()

    async def behaviour(probe: ScriptedProbe) -> Outcome:
        if hung.is_set():
            return await hang_honouring_cancel(probe)
        return OK

    fleet = Fleet(behaviour)
    reports = Reports()
    scheduler = DependencyScheduler(Breaker("dep", "tcp", settings), fleet, reports.append, SystemClock(),
                                    Redactor(()))
    task = asyncio.create_task(scheduler.run())
    try:
        async with asyncio.timeout(10):
            await reports.until(len)
            hung.set()
            fleet.probes[0].wake()  # probe now, into the hang
            await reports.until(lambda r: r[-1].state is DepState.DOWN)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await scheduler.aclose()
    starts = sorted(t for p in fleet.probes for t in p.check_times)[1:4]  # the three probes into the hang
    assert starts[1] - starts[0] < settings.timeout  # the second began before the first's deadline
    assert reports[-1].reason == "timeout" and reports[-1].consecutive_failures == 3
    assert fleet.most <= 3
    assert len(fleet.probes) >= 2 and all(p.closed for p in fleet.probes[1:])  # spares are released


async def test_a_late_outcome_of_an_older_probe_is_not_recorded_over_a_newer_one() -> None:
    """An early probe that times out after a later probe already answered must not count as the newest news: the
    dependency that answered stays healthy, with no failure counted."""
    settings = ProbeSettings(interval=30.0, timeout=0.3, fast_interval=0.05, slow_threshold=0.05,
                             unhealthy_threshold=3, jitter=0)
    first_hangs = asyncio.Event()

    async def behaviour(probe: ScriptedProbe) -> Outcome:
        if first_hangs.is_set():
            first_hangs.clear()  # only this one hangs; the overlapping one answers at once
            return await hang_honouring_cancel(probe)
        return OK

    fleet = Fleet(behaviour)
    reports = Reports()
    scheduler = DependencyScheduler(Breaker("dep", "tcp", settings), fleet, reports.append, SystemClock(),
                                    Redactor(()))
    task = asyncio.create_task(scheduler.run())
    try:
        async with asyncio.timeout(10):
            await reports.until(len)
            first_hangs.set()
            fleet.probes[0].wake()
            await reports.until(lambda r: len(r) >= 2)
            # The hung one reaches its deadline after the overlapping one answered; its outcome is then taken in.
            await until(lambda: fleet.probes[0].cancelled and not scheduler._attempts and not scheduler._results, 5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await scheduler.aclose()
    assert all(r.state is DepState.HEALTHY and r.consecutive_failures == 0 for r in reports)


async def test_a_crash_is_down_on_the_first_refused_reprobe() -> None:
    """A kept connection drops (connection_lost) and the re-probe is refused: the scheduler reports down after
    that one probe, not after unhealthy_threshold of them."""
    settings = ProbeSettings(interval=30.0, timeout=TIMEOUT, unhealthy_threshold=3)
    crashed, behaviour = raising_once_set(ConnectionRefusedError(111, "Connect call failed"))
    scheduler, probe, reports = make(behaviour, settings)
    task = asyncio.create_task(scheduler.run())
    try:
        async with asyncio.timeout(5):
            await reports.until(len)
            crashed.set()
            probe.wake()
            await reports.until(lambda r: len(r) >= 2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert (reports[1].state, reports[1].reason, probe.calls) == (DepState.DOWN, "connection_refused", 2)


async def test_steady_probes_of_dependencies_sharing_wakeups_start_together() -> None:
    """Timer coalescing (``policies.cadence.Wakeups``): each healthy dependency may start anywhere in its window
    (interval 50 ms, jitter 100 %: a 50 ms window), and with the daemon's shared plan they start at the very same
    planned times, so the event loop wakes once for all of them. Apart, they would start at independent random
    points of their windows."""
    settings = ProbeSettings(timeout=TIMEOUT, interval=0.05, jitter=1.0)
    wakeups = Wakeups()
    probes: list[ScriptedProbe] = []
    schedulers = []
    for name in ("a", "b", "c"):
        def factory(wake: Callable[[], None]) -> ScriptedProbe:
            probes.append(ScriptedProbe(lambda _: OK, wake))
            return probes[-1]

        schedulers.append(DependencyScheduler(Breaker(name, "tcp", settings), factory, lambda _: None, SystemClock(),
                                              Redactor(), wakeups=wakeups))
    tasks = [asyncio.create_task(s.run()) for s in schedulers]
    try:
        await until(lambda: all(p.calls >= 8 for p in probes), 10)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    first = probes[0].check_times
    for probe in probes[1:]:
        # Every start after the first (the first probes start when the schedulers do) is one of a's starts: the
        # same planned time, fired by the same loop iteration (a few ms apart at most on a loaded machine).
        for t in probe.check_times[1:7]:
            assert min(abs(t - u) for u in first) < 0.005, (t, first)
