"""failsoft.daemon.report (POST /report) and where its verdicts land: the parser and the authorisation as pure
tables, the breaker's trip and hold with a manual clock, the scheduler re-planning its probes, and the handler in
process (aiohttp TestServer) with the real queue and judge. The daemon process is in tests/e2e/test_reports.py."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from support import until

from failsoft.daemon.api import Runtime, build_app
from failsoft.daemon.breaker import Breaker
from failsoft.daemon.clock import ManualClock, SystemClock
from failsoft.daemon.config import Backoff, PassiveSettings, ProbeSettings, load_config, parse_config
from failsoft.daemon.hub import Hub
from failsoft.daemon.redact import Redactor
from failsoft.daemon.report import (
    MAX_BATCH,
    MAX_BODY,
    BadReport,
    Report,
    Reports,
    authorize,
    is_loopback,
    parse_reports,
)
from failsoft.daemon.scheduler import DependencyScheduler
from failsoft.policies.model import BreakerState, DependencyStatus, DepState
from failsoft.probes.base import OK, Outcome

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
DEPS = {"db": None, "openai": None}
TOKEN = "report-token-for-tests-91c2"
CONFIG = f"""
http: {{listen: "127.0.0.1:0", report_token: "{TOKEN}"}}
dependencies:
  db: {{kind: tcp, address: "127.0.0.1:1"}}
  openai: {{kind: tcp, address: "127.0.0.1:2", passive: {{consecutive_failures: 2}}}}
  quiet: {{kind: tcp, address: "127.0.0.1:3", passive: {{enabled: false}}}}
"""


# -- parsing ----------------------------------------------------------------------------------------------


def test_one_report_or_an_array() -> None:
    """A single object and an array both parse; durations in retry_after are seconds; optional fields default."""
    assert parse_reports(b'{"dependency": "db", "ok": false, "reason": "timeout", "latency_ms": 512}', DEPS) == [
        Report("db", False, "timeout", 512.0)]
    got = parse_reports(orjson.dumps([
        {"dependency": "db", "ok": True},
        {"dependency": "openai", "ok": False, "reason": "rate_limited", "retry_after": "10s"},
        {"dependency": "openai", "ok": False, "reason": "rate_limited", "retry_after": 2.5},
    ]), DEPS)
    assert got == [Report("db", True), Report("openai", False, "rate_limited", None, 10.0),
                   Report("openai", False, "rate_limited", None, 2.5)]
    assert [r.outcome for r in got] == ["success", "rate_limited", "rate_limited"]
    assert parse_reports(b"[]", DEPS) == []


@pytest.mark.parametrize(("body", "words"), [
    (b'{"dependency": "nope", "ok": false}', "the report: unknown dependency 'nope' (expected one of: db, openai)"),
    (b'[{"dependency": "db", "ok": true}, {"dependency": "db", "ok": "no"}]', "report [1]: ok is required"),
    (b'{"ok": false}', "the report: dependency is required"),
    (b'{"dependency": 7, "ok": false}', "the report: dependency is required"),
    (b'{"dependency": "db", "ok": false, "reason": "Timed Out!"}', "the report: reason must be a short code"),
    (b'{"dependency": "db", "ok": false, "reason": 5}', "the report: reason must be a short code"),
    (b'{"dependency": "db", "ok": false, "reason": null}', "the report: reason must be a short code"),
    (b'{"dependency": "db", "ok": false, "latency_ms": null}', "the report: latency_ms must be a number"),
    (b'{"dependency": "db", "ok": false, "reason": "rate_limited", "retry_after": null}', "retry_after must be"),
    (b'{"dependency": "db", "ok": false, "latency_ms": -1}', "the report: latency_ms must be a number"),
    (b'{"dependency": "db", "ok": false, "latency_ms": "5"}', "the report: latency_ms must be a number"),
    (b'{"dependency": "db", "ok": false, "latency_ms": true}', "the report: latency_ms must be a number"),
    (b'{"dependency": "db", "ok": false, "retry_after": "10s"}', "retry_after goes with reason rate_limited"),
    (b'{"dependency": "db", "ok": false, "reason": "rate_limited", "retry_after": "soon"}', "retry_after must be"),
    (b'{"dependency": "db", "ok": false, "reason": "rate_limited", "retry_after": "2d"}', "retry_after must be"),
    (b'{"dependency": "db", "ok": false, "reason": "rate_limited", "retry_after": 90000}', "at most 86400s"),
    (b'{"dependency": "db", "ok": true, "reason": "rate_limited"}', "reason rate_limited needs ok: false"),
    (b'{"dependency": "db", "ok": false, "dependancy": "db"}', "the report: unknown field 'dependancy'"),
    (b'[1]', "report [0]: expected an object"),
    (b'"db"', "the body must be a report object or an array"),
    (b'{"dependency": ', "the body is not valid JSON"),
])
def test_bad_reports_are_refused_naming_the_report_and_field(body: bytes, words: str) -> None:
    """Each bad body is a 400 whose message names the report (by index in an array) and the field to fix."""
    with pytest.raises(BadReport) as caught:
        parse_reports(body, DEPS)
    assert caught.value.status == 400
    assert words in str(caught.value)


def test_more_than_a_thousand_reports_is_413() -> None:
    """1,001 reports in one body is 413 with the count and the limit; 1,000 is fine."""
    one = {"dependency": "db", "ok": True}
    assert len(parse_reports(orjson.dumps([one] * MAX_BATCH), DEPS)) == MAX_BATCH
    with pytest.raises(BadReport) as caught:
        parse_reports(orjson.dumps([one] * (MAX_BATCH + 1)), DEPS)
    assert caught.value.status == 413
    assert "1001 reports in one body; send at most 1000" in str(caught.value)


# -- who may report ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("peer", "header", "token", "expected"), [
    ("127.0.0.1", None, "", None),
    ("127.8.9.10", None, "", None),
    ("::1", None, "", None),
    ("::ffff:127.0.0.1", None, "", None),
    ("127.0.0.1", None, TOKEN, None),
    ("127.0.0.1", f"Bearer {TOKEN}", TOKEN, None),
    ("10.1.2.3", f"Bearer {TOKEN}", TOKEN, None),
    ("2001:db8::7", f"bearer  {TOKEN} ", TOKEN, None),
    ("127.0.0.1", "Bearer wrong", TOKEN, 403),  # a wrong token is refused even from loopback
    ("127.0.0.1", "Bearer anything", "", 403),  # credentials where none are configured: refused, said why
    ("127.0.0.1", f"Basic {TOKEN}", TOKEN, 401),
    ("127.0.0.1", "Bearer", TOKEN, 401),
    ("10.1.2.3", None, TOKEN, 401),
    ("10.1.2.3", "Bearer wrong", TOKEN, 403),
    ("10.1.2.3", None, "", 403),
    ("192.168.1.5", f"Bearer {TOKEN}", "", 403),
    (None, None, "", 403),
    ("not-an-address", None, "", 403),
])
def test_who_may_report(peer: str | None, header: str | None, token: str, expected: int | None) -> None:
    """Loopback peers report without credentials; other peers need the report token; given credentials must be
    right wherever they come from; without a configured token, other hosts are refused with what to set."""
    refusal = authorize(peer, header, token)
    assert (refusal.status if refusal else None) == expected
    if refusal is not None:
        assert refusal.message
        assert TOKEN not in refusal.message


def test_loopback_detection() -> None:
    """127.0.0.0/8, ::1 and IPv4-mapped loopback are loopback; other and malformed addresses are not."""
    assert all(is_loopback(p) for p in ("127.0.0.1", "127.255.0.1", "::1", "::ffff:127.0.0.1"))
    assert not any(is_loopback(p) for p in ("10.0.0.1", "::ffff:10.0.0.1", "fe80::1%eth0", "", None, "localhost"))


# -- the breaker ---------------------------------------------------------------------------------------------

SETTINGS = ProbeSettings(interval=1.0, timeout=0.5, jitter=0.0, unhealthy_threshold=3, healthy_threshold=2,
                         fast_interval=0.25, down_interval=Backoff(initial=1.0, max=30.0, multiplier=2.0))


def healthy_breaker(clock: ManualClock) -> Breaker:
    """A breaker whose dependency was probed once, healthy."""
    b = Breaker("db", "postgres", SETTINGS, random.Random(3))
    b.record(OK, 0.001, clock.now())
    return b


def test_a_trip_opens_the_breaker_and_only_probes_close_it() -> None:
    """A trip makes a healthy dependency down/open with the reported reason at once; a second trip changes nothing;
    recovery is the probes' half-open: one success is half_open (still down, same reason), the second closes."""
    clock = ManualClock()
    b = healthy_breaker(clock)
    delay = b.trip("reported_timeout", "the app reported 5 failed calls in a row", clock.now())
    assert delay is not None
    assert 1.0 <= delay <= 2.0  # down_interval backoff, as for a breaker opened by probes
    s = b.status
    assert (s.state, s.breaker, s.reason, s.since) == (DepState.DOWN, OPEN, "reported_timeout", clock.now())
    assert b.trip("reported_timeout", "again", clock.now()) is None
    clock.advance(delay)
    b.record(OK, 0.001, clock.now())
    assert (b.status.state, b.status.breaker, b.status.reason) == (DepState.DOWN, HALF_OPEN, "reported_timeout")
    assert b.trip("reported_reset", "half open", clock.now()) is not None  # a trip in half-open reopens
    assert b.status.breaker is OPEN
    clock.advance(30)
    b.record(OK, 0.001, clock.now())
    b.record(OK, 0.001, clock.now())
    assert (b.status.state, b.status.breaker, b.status.reason) == (DepState.HEALTHY, CLOSED, None)


def test_a_trip_before_the_first_probe_still_recovers_through_half_open() -> None:
    """Reports that open the breaker before any probe: the first probe's success is half-open, not healthy."""
    clock = ManualClock()
    b = Breaker("db", "postgres", SETTINGS, random.Random(3))
    assert b.trip("reported_timeout", "x", clock.now()) is not None
    b.record(OK, 0.001, clock.now())
    assert (b.status.state, b.status.breaker) == (DepState.DOWN, HALF_OPEN)


def test_a_reported_rate_limit_holds_until_retry_at_and_never_lifts_a_down_dependency() -> None:
    """A rate limit makes a healthy dependency degraded/rate_limited with retry_at = now + retry_after; the same or a
    slightly later one changes nothing (no flood of changes); a down or never-probed dependency is left alone."""
    clock = ManualClock()
    b = healthy_breaker(clock)
    assert b.hold(10.0, "the app reported a rate limit", clock.now()) == 10.0
    s = b.status
    assert (s.state, s.breaker, s.reason, s.retry_at) == (
        DepState.DEGRADED, CLOSED, "rate_limited", clock.now() + timedelta(seconds=10))
    assert b.hold(10.5, "again", clock.now()) is None
    assert b.hold(30.0, "longer", clock.now()) == 30.0
    clock.advance(30)
    b.record(OK, 0.001, clock.now())  # the probe at retry_at decides
    assert (b.status.state, b.status.retry_at) == (DepState.HEALTHY, None)

    b.trip("reported_timeout", "x", clock.now())
    assert b.hold(10.0, "x", clock.now()) is None
    assert b.status.state is DepState.DOWN
    fresh = Breaker("db", "postgres", SETTINGS)
    assert fresh.hold(10.0, "x", clock.now()) is None
    assert fresh.status.state is DepState.UNKNOWN


# -- the scheduler: reports move the probe plan ---------------------------------------------------------------


class OkProbe:
    """A probe that always answers, counting and timing its checks."""

    def __init__(self, clock: SystemClock) -> None:
        self.clock = clock
        self.times: list[float] = []

    async def check(self) -> Outcome:
        self.times.append(self.clock.monotonic())
        return OK

    async def aclose(self) -> None:
        return None


async def test_scheduler_trip_reports_down_at_once_then_recovers_by_probing() -> None:
    """reported_failure puts a down/open status in the inbox at once, the next probe is re-planned to the open
    breaker's backoff (sooner than the healthy interval, but not at once), and the probes' successes bring it back
    through half-open to healthy."""
    clock = SystemClock()
    settings = ProbeSettings(interval=5.0, timeout=0.5, jitter=0.0, healthy_threshold=2, fast_interval=0.05,
                             down_interval=Backoff(initial=0.3, max=0.3, multiplier=1.0))
    probe = OkProbe(clock)
    inbox: list[DependencyStatus] = []
    sched = DependencyScheduler(Breaker("db", "tcp", settings), lambda wake: probe, inbox.append, clock, Redactor())
    task = asyncio.create_task(sched.run())
    try:
        await until(lambda: bool(inbox) and inbox[-1].state is DepState.HEALTHY)  # then 5 s until the next probe
        tripped_at = clock.monotonic()
        probes_before = len(probe.times)
        assert sched.reported_failure("reported_timeout", "the app reported 5 failed calls in a row")
        assert (inbox[-1].state, inbox[-1].breaker, inbox[-1].reason) == (DepState.DOWN, OPEN, "reported_timeout")
        assert not sched.reported_failure("reported_timeout", "again")
        await until(lambda: inbox[-1].state is DepState.HEALTHY)
        states = [(s.state, s.breaker) for s in inbox]
        assert (DepState.DOWN, HALF_OPEN) in states
        first_after = probe.times[probes_before]
        # Re-planned to the open breaker's backoff: not at once, and not at the end of the 5 s healthy interval.
        assert 0.29 <= first_after - tripped_at < 4.5
    finally:
        task.cancel()


async def test_scheduler_rate_limit_holds_probes_until_retry_at() -> None:
    """reported_rate_limit publishes degraded/rate_limited with retry_at at once and no probe is sent before it;
    the probe at retry_at makes the dependency healthy again."""
    clock = SystemClock()
    settings = ProbeSettings(interval=0.05, timeout=0.5, jitter=0.0, fast_interval=0.05)
    probe = OkProbe(clock)
    inbox: list[DependencyStatus] = []
    sched = DependencyScheduler(Breaker("llm", "tcp", settings), lambda wake: probe, inbox.append, clock, Redactor())
    task = asyncio.create_task(sched.run())
    try:
        await until(lambda: len(probe.times) >= 2)
        held_at = clock.monotonic()
        assert sched.reported_rate_limit(0.5, "the app reported a rate limit; retry after 0.5s")
        assert (inbox[-1].state, inbox[-1].reason) == (DepState.DEGRADED, "rate_limited")
        assert inbox[-1].retry_at is not None
        await until(lambda: inbox[-1].state is DepState.HEALTHY)
        after = [t for t in probe.times if t > held_at]
        # One probe may have been in flight when the report came (its answer is discarded); none started later.
        assert all(t - held_at >= 0.49 for t in after[1:])
        assert after[-1] - held_at >= 0.49
    finally:
        task.cancel()


# -- the handler and the judge in process -------------------------------------------------------------------


class Target:
    """A recording stand-in for a scheduler's two report entry points (the real ones are tested above)."""

    def __init__(self) -> None:
        self.failures: list[tuple[str, str]] = []
        self.holds: list[tuple[float, str]] = []

    def reported_failure(self, reason: str, error: str) -> bool:
        self.failures.append((reason, error))
        return True

    def reported_rate_limit(self, retry_after: float, error: str) -> bool:
        self.holds.append((retry_after, error))
        return True


class Counts:
    """A recording stand-in for the metrics (the real counter is checked end to end)."""

    def __init__(self) -> None:
        self.by: dict[tuple[str, str], int] = {}
        self.dropped = 0

    def on_reports(self, counts: Any) -> None:
        for key, n in counts.items():
            self.by[key] = self.by.get(key, 0) + n

    def reports_dropped(self, count: int) -> None:
        self.dropped += count


def peer_as(address: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Middleware making the server see the TCP peer as ``address`` (how a request from another host looks)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Callable[..., Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        return await handler(request.clone(remote=address))

    return middleware


class Served:
    """A Reports instance behind a real HTTP server, and what it sent to its targets and metrics."""

    def __init__(self, reports: Reports, client: TestClient[Any, Any], targets: dict[str, Target],
                 counts: Counts) -> None:
        self.reports, self.client, self.targets, self.counts = reports, client, targets, counts

    async def post(self, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """POST /report with a JSON body (bytes are sent as they are)."""
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        resp = await self.client.post("/report", data=data,
                                      headers={"Content-Type": "application/json", **(headers or {})})
        return resp.status, await resp.json()


async def serve(peer: str | None = None, max_pending: int = 20_000) -> AsyncIterator[Served]:
    """The report route on a loopback port (seen as ``peer`` when given), the judge task running."""
    config = parse_config(CONFIG, {})
    targets = {name: Target() for name in config.dependencies}
    counts = Counts()
    reports = Reports(config, targets, SystemClock(), counts, max_pending=max_pending)
    runtime = Runtime(config=config, hub=Hub(), inbox=asyncio.Queue())
    app = build_app(runtime, reports.routes())
    if peer is not None:
        app.middlewares.insert(0, peer_as(peer))
    judge = asyncio.create_task(reports.run())
    try:
        async with TestServer(app, host="127.0.0.1", port=0) as server, TestClient(server) as client:
            yield Served(reports, client, targets, counts)
    finally:
        judge.cancel()


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    """Reports from a loopback peer."""
    async for s in serve():
        yield s


async def test_reports_are_accepted_judged_and_counted(served: Served) -> None:
    """202 {accepted, dropped}; two failures in a row trip openai (consecutive_failures: 2) with reason
    reported_<reason>; a rate limit goes to the hold with its retry_after; a dependency with passive disabled is
    counted but never judged; the metric counts by (dependency, outcome)."""
    status, body = await served.post([
        {"dependency": "openai", "ok": False, "reason": "timeout", "latency_ms": 500},
        {"dependency": "openai", "ok": False, "reason": "connection_reset"},
        {"dependency": "openai", "ok": False, "reason": "rate_limited", "retry_after": "10s"},
        {"dependency": "db", "ok": True, "latency_ms": 2},
        {"dependency": "quiet", "ok": False}, {"dependency": "quiet", "ok": False},
        {"dependency": "quiet", "ok": False}, {"dependency": "quiet", "ok": False},
        {"dependency": "quiet", "ok": False}, {"dependency": "quiet", "ok": False},
    ])
    assert (status, body) == (202, {"accepted": 10, "dropped": 0})
    await until(lambda: sum(served.counts.by.values()) == 10)
    assert served.targets["openai"].failures == [
        ("reported_connection_reset", "the app reported 2 failed calls in a row (last: connection_reset)")]
    assert served.targets["openai"].holds == [(10.0, "the app reported a rate limit; retry after 10s")]
    assert served.targets["quiet"].failures == []
    assert served.targets["db"].failures == []
    assert served.counts.by == {("openai", "failure"): 2, ("openai", "rate_limited"): 1, ("db", "success"): 1,
                                ("quiet", "failure"): 6}


async def test_bad_bodies_are_400_or_413_with_the_contract_error(served: Served) -> None:
    """Unknown dependency and wrong types are 400 naming them, 10,000 reports are 413, a body over 1 MiB is 413
    before it is parsed, a wrong content type or an empty body is 400; nothing of a refused body is queued."""
    status, body = await served.post({"dependency": "nope", "ok": False})
    assert status == 400
    assert body["error"]["code"] == "bad_request"
    assert "unknown dependency 'nope'" in body["error"]["message"]
    status, body = await served.post([{"dependency": "db", "ok": True}] * 10_000)
    assert status == 413
    assert body["error"]["code"] == "too_large"
    assert "10000 reports" in body["error"]["message"]
    status, body = await served.post(b"[" + b" " * (MAX_BODY + 10) + b"]")
    assert (status, body["error"]["code"]) == (413, "too_large")
    resp = await served.client.post("/report", data=b'{"dependency": "db", "ok": true}',
                                    headers={"Content-Type": "text/plain"})
    assert resp.status == 400
    assert "Content-Type: application/json" in (await resp.json())["error"]["message"]
    status, body = await served.post(b"")
    assert (status, "empty" in body["error"]["message"]) == (400, True)
    assert served.reports.accepted == 0


async def test_a_wrong_token_is_refused_even_from_loopback(served: Served) -> None:
    """From loopback, the right token is accepted, a wrong one is 403 and a non-bearer scheme is 401."""
    ok = {"dependency": "db", "ok": True}
    assert (await served.post(ok, {"Authorization": f"Bearer {TOKEN}"}))[0] == 202
    status, body = await served.post(ok, {"Authorization": "Bearer nope"})
    assert (status, body["error"]["code"]) == (403, "forbidden")
    resp = await served.client.post("/report", data=orjson.dumps(ok), headers={
        "Content-Type": "application/json", "Authorization": f"Token {TOKEN}"})
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_another_host_needs_the_token() -> None:
    """A peer that is not loopback (10.1.2.3) is 401 without a token, 403 with a wrong one, 202 with the right one."""
    ok = {"dependency": "db", "ok": True}
    async for s in serve(peer="10.1.2.3"):
        status, body = await s.post(ok)
        assert status == 401
        assert "need Authorization: Bearer <http.report_token>" in body["error"]["message"]
        assert (await s.post(ok, {"Authorization": "Bearer nope"}))[0] == 403
        assert await s.post(ok, {"Authorization": f"Bearer {TOKEN}"}) == (202, {"accepted": 1, "dropped": 0})


def all_judged(counts: Counts, n: int) -> bool:
    """Whether ``n`` reports were judged."""
    return sum(counts.by.values()) == n


async def test_a_flood_beyond_the_bound_is_dropped_and_counted() -> None:
    """With room for 1,500 pending reports and the judge not running yet, two bodies of 1,000 queue 1,500 and
    drop 500 (said in the answer and counted), and the queue never grows past its bound."""
    async for s in serve(max_pending=1500):
        body = [{"dependency": "db", "ok": True}] * 1000
        first = s.reports.offer(parse_reports(orjson.dumps(body), DEPS))
        second = s.reports.offer(parse_reports(orjson.dumps(body), DEPS))
        assert (first, second) == (1000, 500)
        assert s.reports.dropped == 500
        assert s.counts.dropped == 500
        status, answer = await s.post(body)  # the judge may have drained some by now: whatever fits is taken
        assert status == 202
        assert answer["accepted"] + answer["dropped"] == 1000
        await until(partial(all_judged, s.counts, 1500 + answer["accepted"]))


def test_passive_settings_from_the_config_file() -> None:
    """Defaults apply to every dependency; a dependency's own passive keys override only those keys."""
    config = load_config(Path(__file__).parent / "testdata" / "valid" / "passive.yaml",
                         env={"REPORT_TOKEN": "report-example-secret-0000"})
    assert config.http.report_token == "report-example-secret-0000"
    assert config.dependencies["db"].settings.passive == PassiveSettings(
        enabled=True, consecutive_failures=3, failure_ratio=0.25, window=30.0, min_requests=50)
    assert config.dependencies["cache"].settings.passive == PassiveSettings(
        enabled=False, consecutive_failures=3, failure_ratio=0.5, window=30.0, min_requests=20)
    assert parse_config(CONFIG, {}).dependencies["db"].settings.passive == PassiveSettings()


def test_judge_with_real_detectors_is_deterministic_on_a_manual_clock() -> None:
    """The judge alone on a manual clock: with the defaults, 19 mixed reports do nothing, the 20th (half failed)
    trips the ratio rule once."""
    config = parse_config("""
dependencies:
  db: {kind: tcp, address: "127.0.0.1:1"}
""", {})
    target = Target()
    reports = Reports(config, {"db": target}, ManualClock())
    reports.judge([Report("db", i % 2 == 0, None if i % 2 == 0 else "reset") for i in range(19)])
    assert target.failures == []
    reports.judge([Report("db", False, "reset")])
    assert target.failures == [("reported_reset", "the app reported 10 failed calls of 20 (50%) within 10s "
                                                  "(last: reset)")]


def test_an_unknown_outcome_reason_keeps_a_failure_name() -> None:
    """A failure reported without a reason trips as reported_failure."""
    config = parse_config("dependencies: {db: {kind: tcp, address: '127.0.0.1:1'}}", {})
    target = Target()
    Reports(config, {"db": target}, ManualClock()).judge([Report("db", False)] * 5)
    assert target.failures[0][0] == "reported_failure"


def test_verdict_statuses_are_plain_dependency_statuses() -> None:
    """What a trip sends to the owner is a DependencyStatus like any probe result (one inbox, one writer)."""
    clock = ManualClock()
    inbox: list[DependencyStatus] = []
    sched = DependencyScheduler(healthy_breaker(clock), lambda wake: OkProbe(SystemClock()), inbox.append, clock,
                                Redactor())
    assert sched.reported_failure("reported_timeout", "x")
    assert isinstance(inbox[-1], DependencyStatus)
    assert inbox[-1].reason == "reported_timeout"
