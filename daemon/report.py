"""``POST /report``: the outcomes of the app's real calls, so failures are seen without waiting for a probe.

IO in, pure decision, IO out, as everywhere else: the handler only authorises, parses and enqueues into a
bounded queue (a flood beyond the bound is dropped and counted, never waited for); one task takes the reports
off the queue in chunks and feeds each dependency's outlier detector (``policies.outlier``, pure); its verdicts go
to the dependency's scheduler, whose breaker they meet the probes in, and the new status reaches the owner through
the same inbox as every probe result. Reports can open a breaker or hold a rate limit; they never make a
dependency healthy: only the probes close a breaker, through half-open as usual.

Every bound on this untrusted input is a named constant below, with its reason.

Fleet mode: a report about a shared dependency moves the breaker of its prober when it lands there, and the
new status (a rate limit's ``retry_at`` included) reaches every pod as the prober's next shared result; a rate
limit that lands on a follower is relayed to the prober, a failure there is not applied
(``daemon.fleetparts.SlotReports``).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import math
import re
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard

import orjson
import structlog
from aiohttp import web

from failsoft.daemon.api import JSON, error, json_response
from failsoft.daemon.clock import Clock
from failsoft.daemon.config import Config, PassiveSettings
from failsoft.daemon.yamlread import parse_duration
from failsoft.policies.outlier import OutlierDetector
from failsoft.policies.ratelimit import MAX_WAIT

log = structlog.get_logger("failsoft.report")

MAX_BATCH = 1000  # reports in one body (the contract); more is 413: a client batches, it does not dump
MAX_BODY = 1 << 20  # bytes in one body: 1000 reports of up to ~1 KiB each; more is 413 before parsing
MAX_PENDING = 20_000  # reports waiting for the detector: 20 full bodies; beyond it they are dropped and counted
CHUNK = 1000  # reports judged between two yields to the event loop, so a flood never delays probes or answers
MAX_REASON = 64  # characters in a reason code; it becomes part of the State's reason (reported_<reason>)
MAX_LATENCY_MS = 86_400_000.0  # a call that took longer than a day is a unit mistake
MAX_RETRY_AFTER = MAX_WAIT  # a retry time further away than a day is not believed (as for the probes' headers)
DROP_LOG_EVERY = 10.0  # seconds between two warnings about dropped reports: a flood must not flood the logs too

FIELDS = ("dependency", "ok", "reason", "latency_ms", "retry_after")
RATE_LIMITED = "rate_limited"
OUTCOMES = ("success", "failure", RATE_LIMITED)  # the bounded outcome label of failsoft_reports_total
_REASON = re.compile(rf"[a-z0-9_]{{1,{MAX_REASON}}}")


@dataclass(frozen=True, slots=True)
class Report:
    """One reported call outcome, validated."""

    dependency: str
    ok: bool
    reason: str | None = None
    latency_ms: float | None = None
    retry_after: float | None = None  # seconds; only with reason rate_limited

    @property
    def outcome(self) -> str:
        """``success``, ``failure`` or ``rate_limited``: the metric's label (as the probes' outcomes)."""
        if self.ok:
            return "success"
        return RATE_LIMITED if self.reason == RATE_LIMITED else "failure"


class BadReport(Exception):
    """A body the client must fix: ``status`` (400 or 413) and a message naming the report and field."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# -- parsing (total: a list of reports, or BadReport) ------------------------------------------------------


def parse_reports(raw: bytes, dependencies: Mapping[str, Any]) -> list[Report]:
    """One report (a JSON object) or a JSON array of up to ``MAX_BATCH``; BadReport names what to fix."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadReport(400, f"the body is not valid JSON: {exc}") from None
    if isinstance(body, dict):
        return [parse_one(body, "the report", dependencies)]
    if not isinstance(body, list):
        raise BadReport(400, "the body must be a report object or an array of them")
    if len(body) > MAX_BATCH:
        raise BadReport(413, f"{len(body)} reports in one body; send at most {MAX_BATCH} per request")
    return [parse_one(item, f"report [{i}]", dependencies) for i, item in enumerate(body)]


def parse_one(item: Any, where: str, dependencies: Mapping[str, Any]) -> Report:
    """One report object; ``where`` names it in messages (``report [3]``)."""
    if not isinstance(item, dict):
        raise BadReport(400, f"{where}: expected an object like {{\"dependency\": \"db\", \"ok\": false}}")
    unknown = [k for k in item if k not in FIELDS]
    if unknown:
        raise BadReport(400, f"{where}: unknown field {str(unknown[0])[:40]!r} (expected: {', '.join(FIELDS)})")
    dep = item.get("dependency")
    if not isinstance(dep, str):
        raise BadReport(400, f"{where}: dependency is required: the name of a configured dependency")
    if dep not in dependencies:
        raise BadReport(400, f"{where}: unknown dependency {dep[:63]!r} (expected one of: {', '.join(dependencies)})")
    ok = item.get("ok")
    if not isinstance(ok, bool):
        raise BadReport(400, f"{where}: ok is required: true or false")
    # An optional field is absent or valid: null is not "absent" (the OpenAPI description says so too).
    reason = item.get("reason")
    if "reason" in item and not (isinstance(reason, str) and _REASON.fullmatch(reason)):
        raise BadReport(400, f"{where}: reason must be a short code of lowercase letters, digits and _ "
                             f"(like timeout or connection_refused), at most {MAX_REASON} characters")
    latency = item.get("latency_ms")
    if "latency_ms" in item and not (_number(latency) and 0 <= latency <= MAX_LATENCY_MS):
        raise BadReport(400, f"{where}: latency_ms must be a number of milliseconds from 0 to {MAX_LATENCY_MS:.0f}")
    retry_after = _retry_after(item, where, ok, reason)
    return Report(dep, ok, reason, float(latency) if latency is not None else None, retry_after)


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _retry_after(item: dict[str, Any], where: str, ok: bool, reason: str | None) -> float | None:
    if reason == RATE_LIMITED and ok:
        raise BadReport(400, f"{where}: reason rate_limited needs ok: false")
    if "retry_after" not in item:
        return None
    if reason != RATE_LIMITED:
        raise BadReport(400, f"{where}: retry_after goes with reason rate_limited")
    try:
        seconds = parse_duration(item["retry_after"])
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= MAX_RETRY_AFTER:
        raise BadReport(400, f"{where}: retry_after must be a duration like 10s or 500ms, or a number of seconds, "
                             f"at most {MAX_RETRY_AFTER:g}s")
    return seconds


# -- who may report ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request may not report: HTTP status, error code and what to do."""

    status: int
    code: str
    message: str


def authorize(peer: str | None, authorization: str | None, token: str) -> Refusal | None:
    """None when the request may report: from a loopback peer without credentials, or from anywhere with
    ``Authorization: Bearer <http.report_token>``. Credentials that are given must be right, even from loopback:
    a wrong token is a misconfigured client that should hear about it."""
    if authorization is not None:
        scheme, _, given = authorization.strip().partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            return Refusal(401, "unauthorized", "Authorization must be 'Bearer <http.report_token>'")
        if not token:
            return Refusal(403, "forbidden", "this daemon has no http.report_token: report from loopback without "
                                             "an Authorization header, or set http.report_token")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return Refusal(403, "forbidden", "wrong report token (http.report_token)")
        return None
    if is_loopback(peer):
        return None
    if token:
        return Refusal(401, "unauthorized", "reports from other hosts need Authorization: Bearer <http.report_token>")
    return Refusal(403, "forbidden", "reports are accepted from loopback only; set http.report_token to accept "
                                     "them from other hosts")


def is_loopback(peer: str | None) -> bool:
    """Whether ``peer`` (the TCP peer's address) is loopback: 127.0.0.0/8, ::1, or ::ffff:127.x."""
    if not peer:
        return False
    try:
        addr = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    return bool(addr.is_loopback or (mapped is not None and mapped.is_loopback))


# -- the queue and the judge -------------------------------------------------------------------------------


class PassiveTarget(Protocol):
    """Where one dependency's verdicts go: its scheduler (``daemon.scheduler.DependencyScheduler``)."""

    def reported_failure(self, reason: str, error: str) -> bool:
        """Open the breaker (False when it already was)."""
        ...

    def reported_rate_limit(self, retry_after: float, error: str) -> bool:
        """Hold a rate limit until ``retry_after`` seconds from now (False when nothing changed)."""
        ...


class ReportMetrics(Protocol):
    """The figures reports feed (``daemon.metrics.Metrics``)."""

    def on_reports(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Reports judged, by (dependency, outcome)."""
        ...

    def reports_dropped(self, count: int) -> None:
        """Reports dropped because the queue was full."""
        ...


@dataclass
class _Dependency:
    settings: PassiveSettings
    interval: float
    detector: OutlierDetector | None
    target: PassiveTarget | None


class Reports:
    """The intake (``POST /report``), the bounded queue and the task that judges what was queued."""

    def __init__(self, config: Config, targets: Mapping[str, PassiveTarget], clock: Clock,
                 metrics: ReportMetrics | None = None, *, max_pending: int = MAX_PENDING) -> None:
        self.config = config
        self._clock = clock
        self._metrics = metrics
        self._max_pending = max_pending
        self._pending: deque[Report] = deque()
        self._ready = asyncio.Event()
        self.accepted = 0  # counts since start, for tests and logs
        self.dropped = 0
        self._last_drop_log = -math.inf
        self._deps: dict[str, _Dependency] = {}
        for name, dep in config.dependencies.items():
            p = dep.settings.passive
            detector = OutlierDetector(consecutive_failures=p.consecutive_failures, failure_ratio=p.failure_ratio,
                                       window=p.window, min_requests=p.min_requests) if p.enabled else None
            self._deps[name] = _Dependency(p, dep.settings.interval, detector, targets.get(name))

    # -- IO in ----------------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        """``POST /report``: authorise, parse, enqueue; 202 ``{"accepted": n, "dropped": m}``."""
        refusal = authorize(request.remote, request.headers.get("Authorization"), self.config.http.report_token)
        if refusal is not None:
            extra = {"WWW-Authenticate": 'Bearer realm="failsoft"'} if refusal.status == 401 else {}
            return error(refusal.status, refusal.code, refusal.message, **extra)
        if request.content_type != JSON:
            got = request.headers.get("Content-Type", "none")[:80]
            return error(400, "bad_request", f"send Content-Type: application/json (got {got})")
        try:
            raw = await _read_bounded(request)
            reports = parse_reports(raw, self.config.dependencies)
        except BadReport as exc:
            code = "too_large" if exc.status == 413 else "bad_request"
            return error(exc.status, code, str(exc))
        accepted = self.offer(reports)
        return json_response({"accepted": accepted, "dropped": len(reports) - accepted}, status=202)

    def offer(self, reports: list[Report]) -> int:
        """Queue what fits under the bound (never waits); count and drop the rest. Returns how many were queued."""
        room = max(0, self._max_pending - len(self._pending))
        taken = reports if len(reports) <= room else reports[:room]
        self._pending.extend(taken)
        self.accepted += len(taken)
        lost = len(reports) - len(taken)
        if lost:
            self.dropped += lost
            if self._metrics is not None:
                self._metrics.reports_dropped(lost)
            now = self._clock.monotonic()
            if now - self._last_drop_log >= DROP_LOG_EVERY:
                self._last_drop_log = now
                log.warning("reports_dropped", dropped=lost, dropped_total=self.dropped, pending=len(self._pending),
                            max_pending=self._max_pending)
        if taken:
            self._ready.set()
        return len(taken)

    # -- the judge ------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Judge queued reports in chunks of ``CHUNK``, yielding to the event loop between chunks."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._pending:
                chunk = [self._pending.popleft() for _ in range(min(CHUNK, len(self._pending)))]
                self.judge(chunk)
                await asyncio.sleep(0)

    def judge(self, reports: list[Report]) -> None:
        """Feed each report to its dependency's detector and send the verdicts to the breakers."""
        now = self._clock.monotonic()
        counts: Counter[tuple[str, str]] = Counter()
        for report in reports:
            counts[(report.dependency, report.outcome)] += 1
            dep = self._deps.get(report.dependency)
            if dep is None or dep.detector is None or dep.target is None:
                continue  # passive: {enabled: false}: counted, not judged
            if report.outcome == RATE_LIMITED:
                wait = report.retry_after if report.retry_after is not None else dep.interval
                dep.target.reported_rate_limit(wait, f"the app reported a rate limit; retry after {wait:g}s")
                continue
            trip = dep.detector.observe(report.ok, report.reason, now)
            if trip is not None:
                reason = f"reported_{trip.reason or 'failure'}"
                if dep.target.reported_failure(reason, trip.describe()):
                    log.info("reports_opened_breaker", dependency=report.dependency, reason=reason, rule=trip.rule,
                             failures=trip.failures, total=trip.total)
        if self._metrics is not None:
            self._metrics.on_reports(counts)

    def routes(self) -> list[web.RouteDef]:
        """``POST /report``."""
        return [web.post("/report", self.handle)]


async def _read_bounded(request: web.Request) -> bytes:
    """The body, refused with 413 beyond ``MAX_BODY`` (as soon as Content-Length says so, or while reading)."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BadReport(413, f"the body is {request.content_length} bytes; at most {MAX_BODY} "
                             f"(and at most {MAX_BATCH} reports) per request")
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY:
            raise BadReport(413, f"the body is over {MAX_BODY} bytes; send at most {MAX_BATCH} reports per request")
        chunks.append(chunk)
    if not size:
        raise BadReport(400, 'the body is empty; send a report like {"dependency": "db", "ok": false}')
    return b"".join(chunks)
