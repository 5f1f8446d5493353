"""Metrics with the OpenTelemetry SDK, exposed in the Prometheus format at ``GET /metrics`` on the API's port.

The SDK's ``PrometheusMetricReader`` writes into a registry of our own (never the process-global one), served
by prometheus_client's aiohttp handler. Counters and histograms are recorded as things happen; gauges that
describe the current State (level, dependency and breaker states, rate limits) are observable gauges read from
the newest snapshot at scrape time, so the hot path (one ``observe`` per probe result) does no per-label work.

Every label value is bounded: dependency names and kinds come from the config, levels from the policy, states,
outcomes and event types from fixed code tables. Error text never becomes a label.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from failsoft import __version__
from failsoft.daemon import httpguard, tracing
from failsoft.daemon.breaker import TRANSITIONS
from failsoft.daemon.clock import Clock, SystemClock
from failsoft.daemon.config import Config
from failsoft.daemon.hub import Hub, Published, PublishedEvent
from failsoft.policies.cadence import Wakeups
from failsoft.policies.model import BreakerState, DependencyStatus, DepState
from failsoft.probes.base import Outcome, Verdict

log = structlog.get_logger("failsoft.metrics")

# Probe latencies: 1 ms (a local Redis) to 10 s (a slow LLM API). Detection: a fast interval of 250 ms times a
# threshold, up to minutes with long intervals. Recovery: outages last seconds to hours.
PROBE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DETECTION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
RECOVERY_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)

DEP_STATES = tuple(str(s) for s in DepState)
BREAKER_STATES = tuple(str(s) for s in BreakerState)
RATELIMIT_KINDS = ("requests", "tokens")
UNKNOWN_LEVEL = "unknown"
# Outcome labels of failsoft_probes_total: fixed, whatever reason code a probe invents.
PROBE_OUTCOMES = ("success", "slow", "rate_limited", "degraded", "timeout", "failure",
                  "auth", "quota_exhausted", "misconfigured", "fatal")
_FATAL_REASONS = frozenset({"auth", "quota_exhausted", "misconfigured"})
REPORT_OUTCOMES = ("success", "failure", "rate_limited")  # outcome labels of failsoft_reports_total (daemon.report)

LAG_INTERVAL = 0.5  # seconds between event-loop lag samples, or at the next probe start (see _sample_lag)
LAG_WINDOW = 10  # samples kept: the lag gauge shows the worst of the last ~10 s, so a scrape sees short stalls


def probe_outcome(outcome: Outcome, latency: float, slow_threshold: float) -> str:
    """The bounded ``outcome`` label for one probe (an OK slower than ``slow_threshold`` is ``slow``)."""
    verdict, reason = outcome.verdict, outcome.reason
    if verdict is Verdict.OK:
        # Same rule as the breaker's: only a plain OK can be slow.
        return "slow" if latency > slow_threshold else "success"
    if verdict is Verdict.DEGRADED:
        return "rate_limited" if reason == "rate_limited" else "degraded"
    if verdict is Verdict.FATAL:
        return reason if reason in _FATAL_REASONS else "fatal"
    return "timeout" if reason == "timeout" else "failure"


@dataclass(slots=True)
class _Tracked:
    """What the metrics remember about one dependency (owned by the event loop; never handed out)."""

    name: str
    kind: str
    slow_threshold: float
    attrs: dict[str, str]  # {"dependency": name}: built once, reused on every record
    outcome_attrs: dict[str, dict[str, str]]
    status: DependencyStatus | None = None
    failing_since: float | None = None  # monotonic start of the first failed probe of the current run
    down_since: float | None = None  # monotonic time the state became down
    transition_attrs: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)


class Metrics:
    """Every figure the daemon exports. Called from the scheduler, the hub and the publishers.

    All methods run on the event loop (the aiohttp handler renders synchronously), so no locking is needed.
    """

    def __init__(self, config: Config, hub: Hub, *, clock: Clock | None = None,
                 lag_interval: float = LAG_INTERVAL, wakeups: Wakeups | None = None) -> None:
        self.config = config
        self.hub = hub
        self._clock = clock or SystemClock()
        self._redact = config.redactor()
        self.registry = CollectorRegistry(auto_describe=False)
        self._reader = PrometheusMetricReader(disable_target_info=True, scope_info_enabled=False,
                                              registry=self.registry)
        # shutdown_on_exit=False: aclose shuts it down; no atexit hook holds a reference to this instance.
        self._provider = MeterProvider(metric_readers=[self._reader], resource=Resource.get_empty(),
                                       shutdown_on_exit=False)
        self._deps = {
            name: _Tracked(name, d.kind, d.settings.slow_threshold, {"dependency": name},
                           {o: {"dependency": name, "outcome": o} for o in PROBE_OUTCOMES})
            for name, d in config.dependencies.items()
        }
        self._levels = (UNKNOWN_LEVEL, *config.policy.levels)
        self._snapshot: Published | None = None
        self._lag: deque[float] = deque(maxlen=LAG_WINDOW)
        self._lag_interval = lag_interval
        self._wakeups = wakeups or Wakeups()  # the daemon's plan of probe starts, which the lag samples join
        self._create_instruments()
        self.tracing = tracing.from_environment(config.service, __version__)
        self._lag_task = asyncio.get_running_loop().create_task(self._sample_lag(), name="metrics:loop-lag")

    # -- instruments -----------------------------------------------------------------------------------

    def _create_instruments(self) -> None:
        m = self._provider.get_meter("failsoft", __version__)
        self._probes = m.create_counter("failsoft_probes_total", description="Probes run, by outcome.")
        self._probe_duration = m.create_histogram(
            "failsoft_probe_duration_seconds", unit="s", description="How long each probe took, by outcome.",
            explicit_bucket_boundaries_advisory=PROBE_BUCKETS)
        self._detection = m.create_histogram(
            "failsoft_detection_seconds", unit="s",
            description="From the start of the first failed probe of a run to the dependency being down (MTTD).",
            explicit_bucket_boundaries_advisory=DETECTION_BUCKETS)
        self._recovery = m.create_histogram(
            "failsoft_recovery_seconds", unit="s",
            description="From a dependency being down to it being healthy again (MTTR).",
            explicit_bucket_boundaries_advisory=RECOVERY_BUCKETS)
        self._level_changes = m.create_counter("failsoft_level_changes_total",
                                               description="Published service level changes.")
        self._breaker_transitions = m.create_counter("failsoft_breaker_transitions_total",
                                                     description="Circuit breaker transitions.")
        self._events = m.create_counter("failsoft_events_total", description="Events published, by type.")
        self._publish_failures = m.create_counter("failsoft_publish_failures_total",
                                                  description="Failed attempts to publish to a sink.")
        self._reports = m.create_counter("failsoft_reports_total",
                                         description="Call outcomes the app reported (POST /report), by outcome.")
        self._reports_dropped = m.create_counter(
            "failsoft_reports_dropped_total", description="Reported call outcomes dropped: the queue was full.")
        gauges = (
            ("failsoft_service_level", self._observe_level, "1 for the published service level, 0 for the others."),
            ("failsoft_dependency_state", self._observe_dependencies,
             "1 for each dependency's current state, 0 for its other states."),
            ("failsoft_breaker_state", self._observe_breakers, "1 for each breaker's current state, 0 for the others."),
            ("failsoft_llm_ratelimit_remaining", self._observe_ratelimit_remaining,
             "Requests or tokens left in the provider's rate limit window, where the provider says."),
            ("failsoft_llm_ratelimit_limit", self._observe_ratelimit_limit,
             "Requests or tokens allowed per rate limit window, where the provider says."),
            ("failsoft_sse_subscribers", self._observe_subscribers, "Open event stream subscriptions."),
            ("failsoft_override_active", self._observe_override, "1 while an operator override forces the level."),
            ("failsoft_build_info", self._observe_build, "Always 1; the labels say which failsoft runs."),
        )
        for name, callback, description in gauges:
            m.create_observable_gauge(name, callbacks=[callback], description=description)
        m.create_observable_gauge("failsoft_event_loop_lag_seconds", callbacks=[self._observe_lag], unit="s",
                                  description="Worst event loop lag over the last ~10 seconds.")
        m.create_observable_gauge("failsoft_asyncio_tasks", callbacks=[self._observe_tasks],
                                  description="asyncio tasks alive in the daemon (a leak shows as steady growth).")
        if self.config.publish is not None:
            self._publish_failures.add(0, {"sink": "redis"})  # a series at 0, so rate() works from the first failure
        # Series at 0 for what is known in advance: increase() cannot see the first step of a series that is
        # born at 1, so the first breaker opening would otherwise be invisible to a flapping alert.
        for dep in self._deps.values():
            for o in ("success", "failure"):
                self._probes.add(0, dep.outcome_attrs[o])
            for frm, to in TRANSITIONS:
                self._breaker_transitions.add(0, self._transition_attrs(dep, str(frm), str(to)))
            for o in REPORT_OUTCOMES:
                self._reports.add(0, {"dependency": dep.name, "outcome": o})
        self._reports_dropped.add(0)

    # -- inputs ----------------------------------------------------------------------------------------

    def on_probe(self, dependency: str, outcome: Outcome, latency: float) -> None:
        """One probe finished (before the breaker judged it: a slow OK is still ``Verdict.OK`` here)."""
        dep = self._deps.get(dependency)
        if dep is None:  # not a configured dependency: never make a label of it
            return
        label = probe_outcome(outcome, latency, dep.slow_threshold)
        attrs = dep.outcome_attrs[label]
        self._probes.add(1, attrs)
        self._probe_duration.record(latency, attrs)
        if outcome.verdict in (Verdict.OK, Verdict.DEGRADED):
            dep.failing_since = None
            return
        now = self._clock.monotonic()
        if dep.failing_since is None:
            dep.failing_since = now - latency  # the fault was there when this probe started
        if self.tracing is not None:
            end = self._epoch_ns()
            self.tracing.span("probe_failed", end - int(latency * 1e9), end, {
                "failsoft.dependency": dependency, "failsoft.dependency.kind": dep.kind,
                "failsoft.probe.outcome": label, "failsoft.probe.reason": outcome.reason or "",
                "failsoft.probe.error": self._redact(outcome.error or ""), "error.type": outcome.reason or label,
            }, error=outcome.reason or label)

    def observe(self, published: Published, events: list[PublishedEvent]) -> None:
        """A hub listener: every new State and its events."""
        self._snapshot = published
        snapshot = published.snapshot
        for name, status in snapshot.dependencies.items():
            dep = self._deps.get(name)
            # Unchanged dependencies are the very same object in every snapshot: skip them at once.
            if dep is not None and status is not dep.status:
                self._dependency_moved(dep, status)
        for event in events:
            self._events.add(1, {"type": event.type})
            if event.type == "level_changed":
                self._level_changed(event.data)

    def on_reports(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Reports judged, by (dependency, outcome); both come from the config and a fixed table (daemon.report)."""
        for (dependency, outcome), n in counts.items():
            if dependency in self._deps and outcome in REPORT_OUTCOMES:
                self._reports.add(n, {"dependency": dependency, "outcome": outcome})

    def reports_dropped(self, count: int) -> None:
        """Reports dropped because the queue was full."""
        self._reports_dropped.add(count)

    def meter(self) -> Meter:
        """The daemon's meter, for instruments defined in their own module (fleet mode)."""
        return self._provider.get_meter("failsoft", __version__)

    def publish_failed(self, sink: str) -> None:
        """A publish to ``sink`` (redis) failed."""
        self._publish_failures.add(1, {"sink": sink})

    def _dependency_moved(self, dep: _Tracked, status: DependencyStatus) -> None:
        prev, dep.status = dep.status, status
        before_state = prev.state if prev is not None else DepState.UNKNOWN
        before_breaker = prev.breaker if prev is not None else BreakerState.CLOSED
        now = self._clock.monotonic()
        if status.breaker is not before_breaker:
            self._breaker_moved(dep, status, str(before_breaker), now)
        if status.state is DepState.DOWN and before_state is not DepState.DOWN:
            # Detection needs a known-good start: a dependency found down by its first probe was never "up".
            if before_state in (DepState.HEALTHY, DepState.DEGRADED) and dep.failing_since is not None:
                self._detection.record(max(0.0, now - dep.failing_since), dep.attrs)
            if dep.down_since is None:
                dep.down_since = now
        elif status.state is DepState.HEALTHY and dep.down_since is not None:
            self._recovery.record(max(0.0, now - dep.down_since), dep.attrs)
            dep.down_since = None
        if status.breaker is BreakerState.OPEN:
            dep.failing_since = None  # that run is accounted for; a failed re-probe starts a new one

    def _breaker_moved(self, dep: _Tracked, status: DependencyStatus, before: str, now: float) -> None:
        key = (before, str(status.breaker))
        self._breaker_transitions.add(1, self._transition_attrs(dep, *key))
        if self.tracing is None:
            return
        # The span covers what led to the move: the failing run for an opening, the outage for a closing.
        began = dep.failing_since if status.breaker is BreakerState.OPEN else dep.down_since
        end = self._epoch_ns()
        start = end - int(max(0.0, now - began) * 1e9) if began is not None else end
        self.tracing.span("breaker_transition", start, end, {
            "failsoft.dependency": dep.name, "failsoft.dependency.kind": dep.kind, "failsoft.breaker.from": key[0],
            "failsoft.breaker.to": key[1], "failsoft.dependency.state": str(status.state),
            "failsoft.reason": status.reason or "", "failsoft.consecutive_failures": status.consecutive_failures,
        })

    @staticmethod
    def _transition_attrs(dep: _Tracked, frm: str, to: str) -> dict[str, str]:
        attrs = dep.transition_attrs.get((frm, to))
        if attrs is None:
            attrs = dep.transition_attrs[(frm, to)] = {"dependency": dep.name, "from": frm, "to": to}
        return attrs

    def _level_changed(self, data: Mapping[str, Any]) -> None:
        level, previous = str(data.get("level")), str(data.get("previous"))
        self._level_changes.add(1, {"from": previous, "to": level})
        if self.tracing is not None:
            now = self._epoch_ns()
            self.tracing.span("level_changed", now, now, {
                "failsoft.service": self.config.service, "failsoft.level": level, "failsoft.level.previous": previous,
                "failsoft.reason": self._redact(str(data.get("reason") or "")),
            })

    def _epoch_ns(self) -> int:
        return int(self._clock.now().timestamp() * 1e9)

    # -- observable gauges (read at scrape time) -------------------------------------------------------

    def _observe_level(self, _: CallbackOptions) -> Iterable[Observation]:
        current = self._snapshot.snapshot.level if self._snapshot is not None else UNKNOWN_LEVEL
        return [Observation(int(level == current), {"level": level}) for level in self._levels]

    def _observe_dependencies(self, _: CallbackOptions) -> Iterable[Observation]:
        out = []
        for dep in self._deps.values():
            current = str(dep.status.state) if dep.status is not None else str(DepState.UNKNOWN)
            out += [Observation(int(s == current), {"dependency": dep.name, "kind": dep.kind, "state": s})
                    for s in DEP_STATES]
        return out

    def _observe_breakers(self, _: CallbackOptions) -> Iterable[Observation]:
        out = []
        for dep in self._deps.values():
            current = str(dep.status.breaker) if dep.status is not None else str(BreakerState.CLOSED)
            out += [Observation(int(s == current), {"dependency": dep.name, "state": s}) for s in BREAKER_STATES]
        return out

    def _ratelimits(self, field_name: str) -> Iterable[Observation]:
        for dep in self._deps.values():
            if dep.status is None:
                continue
            windows = dep.status.details.get("ratelimit")
            if not isinstance(windows, Mapping):
                continue
            for kind in RATELIMIT_KINDS:  # only known kinds: a provider's odd key must not become a label
                window = windows.get(kind)
                value = window.get(field_name) if isinstance(window, Mapping) else None
                if isinstance(value, int | float) and not isinstance(value, bool):
                    yield Observation(value, {"dependency": dep.name, "kind": kind})

    def _observe_ratelimit_remaining(self, _: CallbackOptions) -> Iterable[Observation]:
        return list(self._ratelimits("remaining"))

    def _observe_ratelimit_limit(self, _: CallbackOptions) -> Iterable[Observation]:
        return list(self._ratelimits("limit"))

    def _observe_subscribers(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.hub.subscribers)]

    def _observe_override(self, _: CallbackOptions) -> Iterable[Observation]:
        active = self._snapshot is not None and self._snapshot.snapshot.override is not None
        return [Observation(int(active))]

    def _observe_build(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(1, {"version": __version__})]

    def _observe_lag(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(max(self._lag, default=0.0))]

    def _observe_tasks(self, _: CallbackOptions) -> Iterable[Observation]:
        try:
            return [Observation(len(asyncio.all_tasks()))]
        except RuntimeError:  # rendered outside the event loop (a test calling render() directly)
            return []

    async def _sample_lag(self) -> None:
        """Measure how late a timer fires: the time the loop spent busy with something else.

        A sample is taken at the next probe start the daemon has planned (``Wakeups``), from a fifth of
        ``lag_interval`` to 3 x ``lag_interval`` ahead, else ``lag_interval`` ahead: sampling then costs the idle
        daemon no wake-up of its own.
        """
        loop = asyncio.get_running_loop()
        step = self._lag_interval
        while True:
            now = loop.time()
            at = self._wakeups.join(now, now + step / 5, now + 3 * step, now + step)
            await asyncio.sleep(at - now)
            self._lag.append(max(0.0, loop.time() - at))

    # -- output ----------------------------------------------------------------------------------------

    def render(self, accept: str = "") -> bytes:
        """The exposition as ``GET /metrics`` serves it (text format 0.0.4 unless ``accept`` asks for OpenMetrics)."""
        from prometheus_client.exposition import choose_encoder

        encoder, _ = choose_encoder(accept)
        return encoder(self.registry)

    def routes(self) -> list[web.RouteDef]:
        """``GET /metrics`` (and ``HEAD``)."""
        return [web.get("/metrics", httpguard.checked_accept(make_aiohttp_handler(self.registry)))]

    async def aclose(self) -> None:
        """Stop background work (event-loop lag sampling, exporters)."""
        self._lag_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._lag_task
        if self.tracing is not None:
            await self.tracing.aclose()
        self._provider.shutdown()
