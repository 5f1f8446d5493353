"""Metrics: the real breaker, state owner and hub drive ``Metrics`` with a hand-moved clock; the exposition is read
back with prometheus_client's parser (and promtool where it is installed), exactly as a scraper would.
"""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import yaml
from aiohttp import test_utils, web
from prometheus_client.parser import text_string_to_metric_families
from support import require_tool, until

from failsoft.daemon.breaker import Breaker
from failsoft.daemon.clock import ManualClock
from failsoft.daemon.config import Config, parse_config
from failsoft.daemon.hub import Hub
from failsoft.daemon.metrics import PROBE_OUTCOMES, Metrics, probe_outcome
from failsoft.daemon.state import ServiceState
from failsoft.policies.cadence import Wakeups
from failsoft.probes.base import OK, Outcome, Verdict

CONFIG = """
service: shop
http: {listen: "127.0.0.1:0"}
publish: {redis: "redis://127.0.0.1:9/0"}
defaults: {timeout: 500ms, slow_threshold: 100ms, unhealthy_threshold: 3, healthy_threshold: 2,
           fast_interval: 250ms, down_interval: {initial: 1s, max: 1s}}
dependencies:
  db: {kind: tcp, address: "127.0.0.1:9"}
  api: {kind: http, url: "http://127.0.0.1:9/health"}
policy:
  levels: [full, degraded, limited, cache_only]
  rules:
    - {level: cache_only, when: {any_down: [db]}}
    - {level: degraded, when: {any_not_healthy: [db, api]}}
  recover_after: 0s
"""
FAIL = Outcome(Verdict.FAILURE, "connection_refused", "ConnectionRefusedError: [Errno 111] Connect call failed")
TIMEOUT = Outcome(Verdict.FAILURE, "timeout", "no answer within 500ms")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by (sample name, labels), read by prometheus_client's parser."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """One sample's value, or None when the series is absent."""
    return samples.get((name, frozenset(labels.items())))


class Pipeline:
    """Breakers, the state owner's logic and the hub around one ``Metrics``, driven by hand."""

    def __init__(self, config: Config) -> None:
        self.clock = ManualClock()
        self.hub = Hub()
        self.metrics = Metrics(config, self.hub, clock=self.clock, lag_interval=0.02)
        self.hub.add_listener(self.metrics.observe)
        self.state = ServiceState(config, self.clock)
        self.breakers = {n: Breaker(n, d.kind, d.settings, random.Random(7)) for n, d in config.dependencies.items()}
        self.hub.publish(self.state.snapshot(), [])

    def probe(self, dep: str, outcome: Outcome, latency: float = 0.002, after: float = 1.0) -> None:
        """``after`` seconds pass, then a probe of ``dep`` takes ``latency`` and reports ``outcome``."""
        self.clock.advance(after + latency)
        self.metrics.on_probe(dep, outcome, latency)
        self.breakers[dep].record(outcome, latency, self.clock.now())
        events = self.state.update(self.breakers[dep].status)
        self.hub.publish(self.state.snapshot(), events)

    def command(self, events: list[Any]) -> None:
        """Publish what an override (or another owner input) produced."""
        self.hub.publish(self.state.snapshot(), events)

    def scrape(self) -> Samples:
        """The exposition as /metrics renders it, parsed."""
        return parse(self.metrics.render().decode())


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch) -> Config:
    """The test config; tracing variables removed so that no exporter is involved."""
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    return parse_config(CONFIG, env={})


@pytest.fixture
async def pipe(config: Config) -> Any:
    """A started pipeline, closed after the test."""
    p = Pipeline(config)
    yield p
    await p.metrics.aclose()


def test_probe_outcome_labels_form_a_fixed_set() -> None:
    """Each probe maps to one of a fixed set of outcome labels, whatever reason code the probe invented."""
    cases = [
        (OK, 0.05, "success"),
        (OK, 0.2, "slow"),
        (Outcome(Verdict.DEGRADED, "rate_limited"), 0.01, "rate_limited"),
        (Outcome(Verdict.DEGRADED, "read_only"), 0.01, "degraded"),
        (TIMEOUT, 0.5, "timeout"),
        (FAIL, 0.01, "failure"),
        (Outcome(Verdict.FAILURE, "http_418"), 0.01, "failure"),
        (Outcome(Verdict.FATAL, "auth"), 0.01, "auth"),
        (Outcome(Verdict.FATAL, "quota_exhausted"), 0.01, "quota_exhausted"),
        (Outcome(Verdict.FATAL, "misconfigured"), 0.01, "misconfigured"),
        (Outcome(Verdict.FATAL, "something new"), 0.01, "fatal"),
    ]
    for outcome, latency, expected in cases:
        assert probe_outcome(outcome, latency, slow_threshold=0.1) == expected
        assert expected in PROBE_OUTCOMES


async def test_before_any_probe_every_state_set_has_exactly_one_series_at_one(pipe: Pipeline) -> None:
    """At start the level is unknown, dependencies unknown, breakers closed; counters exist at 0."""
    s = pipe.scrape()
    assert value(s, "failsoft_service_level", level="unknown") == 1
    assert [value(s, "failsoft_service_level", level=lv) for lv in ("full", "degraded", "limited", "cache_only")] \
        == [0, 0, 0, 0]
    for dep, kind in (("db", "tcp"), ("api", "http")):
        states = {st: value(s, "failsoft_dependency_state", dependency=dep, kind=kind, state=st)
                  for st in ("healthy", "degraded", "down", "unknown")}
        assert states == {"healthy": 0, "degraded": 0, "down": 0, "unknown": 1}
        breakers = {st: value(s, "failsoft_breaker_state", dependency=dep, state=st)
                    for st in ("closed", "open", "half_open")}
        assert breakers == {"closed": 1, "open": 0, "half_open": 0}
        assert value(s, "failsoft_probes_total", dependency=dep, outcome="failure") == 0
        for frm, to in (("closed", "open"), ("open", "half_open"), ("half_open", "closed"), ("half_open", "open")):
            assert value(s, "failsoft_breaker_transitions_total", dependency=dep, **{"from": frm, "to": to}) == 0
    assert value(s, "failsoft_publish_failures_total", sink="redis") == 0
    assert value(s, "failsoft_override_active") == 0
    assert value(s, "failsoft_sse_subscribers") == 0
    build = [k for k in s if k[0] == "failsoft_build_info"]
    assert len(build) == 1 and s[build[0]] == 1 and dict(build[0][1])["version"]


async def test_a_fault_and_its_recovery_move_every_figure_as_caused(pipe: Pipeline) -> None:
    """Three failed probes take db down: detection time, breaker transitions, states and level all follow;
    two good probes bring it back: recovery time and the reverse transitions."""
    pipe.probe("api", OK)
    pipe.probe("db", OK, latency=0.003)
    pipe.probe("db", OK, latency=0.15)  # slower than slow_threshold: degraded, still up
    s = pipe.scrape()
    assert value(s, "failsoft_service_level", level="degraded") == 1
    assert value(s, "failsoft_probes_total", dependency="db", outcome="slow") == 1
    assert value(s, "failsoft_probe_duration_seconds_bucket", dependency="db", outcome="success", le="0.0025") == 0
    assert value(s, "failsoft_probe_duration_seconds_bucket", dependency="db", outcome="success", le="0.005") == 1

    # The fault: first failed probe starts at t0 (timeout, 0.5 s), two more at the fast interval.
    pipe.probe("db", TIMEOUT, latency=0.5, after=1.0)
    pipe.probe("db", FAIL, latency=0.01, after=0.25)
    assert value(pipe.scrape(), "failsoft_detection_seconds_count", dependency="db") is None  # not down yet
    pipe.probe("db", FAIL, latency=0.01, after=0.25)
    detection = 0.5 + (0.25 + 0.01) * 2
    s = pipe.scrape()
    assert value(s, "failsoft_detection_seconds_count", dependency="db") == 1
    assert value(s, "failsoft_detection_seconds_sum", dependency="db") == pytest.approx(detection)
    assert value(s, "failsoft_detection_seconds_bucket", dependency="db", le="1.0") == 0
    assert value(s, "failsoft_detection_seconds_bucket", dependency="db", le="2.0") == 1
    assert value(s, "failsoft_dependency_state", dependency="db", kind="tcp", state="down") == 1
    assert value(s, "failsoft_dependency_state", dependency="db", kind="tcp", state="degraded") == 0
    assert value(s, "failsoft_breaker_state", dependency="db", state="open") == 1
    assert value(s, "failsoft_breaker_transitions_total", dependency="db", **{"from": "closed", "to": "open"}) == 1
    assert value(s, "failsoft_service_level", level="cache_only") == 1
    assert value(s, "failsoft_level_changes_total", **{"from": "degraded", "to": "cache_only"}) == 1
    assert value(s, "failsoft_probes_total", dependency="db", outcome="timeout") == 1
    assert value(s, "failsoft_probes_total", dependency="db", outcome="failure") == 2
    # slow (degraded), the reason becoming timeout then connection_refused while degraded, then down
    assert value(s, "failsoft_events_total", type="dependency_changed") == 4

    # Still down: failed re-probes change nothing but the probe counters.
    pipe.probe("db", FAIL, latency=0.01, after=1.0)
    assert value(pipe.scrape(), "failsoft_detection_seconds_count", dependency="db") == 1

    pipe.probe("db", OK, latency=0.002, after=1.0)  # half open: still down
    s = pipe.scrape()
    assert value(s, "failsoft_breaker_state", dependency="db", state="half_open") == 1
    assert value(s, "failsoft_recovery_seconds_count", dependency="db") is None
    pipe.probe("db", OK, latency=0.002, after=0.25)  # closed: healthy
    recovery = (1.0 + 0.01) + (1.0 + 0.002) + (0.25 + 0.002)
    s = pipe.scrape()
    assert value(s, "failsoft_recovery_seconds_count", dependency="db") == 1
    assert value(s, "failsoft_recovery_seconds_sum", dependency="db") == pytest.approx(recovery)
    for frm, to in (("closed", "open"), ("open", "half_open"), ("half_open", "closed")):
        assert value(s, "failsoft_breaker_transitions_total", dependency="db", **{"from": frm, "to": to}) == 1
    assert value(s, "failsoft_dependency_state", dependency="db", kind="tcp", state="healthy") == 1
    assert value(s, "failsoft_service_level", level="full") == 1
    assert value(s, "failsoft_level_changes_total", **{"from": "cache_only", "to": "full"}) == 1
    # unknown -> full -> degraded -> cache_only -> full
    assert value(s, "failsoft_events_total", type="level_changed") == 4


async def test_a_dependency_down_from_its_first_probe_has_no_detection_time(pipe: Pipeline) -> None:
    """Found down at start, a dependency was never up: no detection figure, but its recovery is measured."""
    pipe.probe("api", OK)
    pipe.probe("db", FAIL, latency=0.01)
    s = pipe.scrape()
    assert value(s, "failsoft_breaker_transitions_total", dependency="db", **{"from": "closed", "to": "open"}) == 1
    assert value(s, "failsoft_detection_seconds_count", dependency="db") is None
    pipe.probe("db", OK, after=1.0)
    pipe.probe("db", OK, after=0.25)
    assert value(pipe.scrape(), "failsoft_recovery_seconds_count", dependency="db") == 1


async def test_a_fatal_answer_is_detected_in_one_probe(pipe: Pipeline) -> None:
    """An auth failure takes a healthy dependency down at once: detection equals that probe's duration."""
    pipe.probe("api", OK)
    pipe.probe("db", OK)
    pipe.probe("db", Outcome(Verdict.FATAL, "auth", "credentials were refused"), latency=0.04)
    s = pipe.scrape()
    assert value(s, "failsoft_probes_total", dependency="db", outcome="auth") == 1
    assert value(s, "failsoft_detection_seconds_sum", dependency="db") == pytest.approx(0.04)


async def test_override_subscribers_events_and_publish_failures_are_counted(pipe: Pipeline) -> None:
    """An override shows in the override gauge and the level; subscriptions and publish failures are counted."""
    pipe.probe("api", OK)
    pipe.probe("db", OK)
    pipe.command(pipe.state.set_override("limited", 60, "maintenance"))
    sub = pipe.hub.subscribe()
    pipe.metrics.publish_failed("redis")
    pipe.metrics.publish_failed("redis")
    s = pipe.scrape()
    assert value(s, "failsoft_override_active") == 1
    assert value(s, "failsoft_service_level", level="limited") == 1
    assert value(s, "failsoft_events_total", type="override_set") == 1
    assert value(s, "failsoft_sse_subscribers") == 1
    assert value(s, "failsoft_publish_failures_total", sink="redis") == 2
    sub.close()
    pipe.command(pipe.state.clear_override("deleted"))
    s = pipe.scrape()
    assert value(s, "failsoft_override_active") == 0
    assert value(s, "failsoft_sse_subscribers") == 0
    assert value(s, "failsoft_service_level", level="full") == 1
    assert value(s, "failsoft_events_total", type="override_cleared") == 1


async def test_rate_limit_gauges_come_from_the_dependency_details_when_known(pipe: Pipeline) -> None:
    """Remaining and limit per kind are exported when a probe reported them; odd shapes are ignored."""
    pipe.probe("db", OK)
    pipe.probe("api", OK)
    assert not [k for k in pipe.scrape() if k[0].startswith("failsoft_llm_ratelimit")]
    ratelimit = {"requests": {"remaining": 42, "limit": 500, "reset": "1s"},
                 "tokens": {"remaining": 1500.0, "limit": 30000},
                 "images": {"remaining": 1, "limit": 2},  # unknown kind: never a label
                 }
    pipe.probe("api", Outcome(Verdict.OK, details={"ratelimit": ratelimit}))
    s = pipe.scrape()
    assert value(s, "failsoft_llm_ratelimit_remaining", dependency="api", kind="requests") == 42
    assert value(s, "failsoft_llm_ratelimit_limit", dependency="api", kind="requests") == 500
    assert value(s, "failsoft_llm_ratelimit_remaining", dependency="api", kind="tokens") == 1500
    assert value(s, "failsoft_llm_ratelimit_limit", dependency="api", kind="tokens") == 30000
    assert not [k for k in s if dict(k[1]).get("kind") == "images"]
    for odd in ("nonsense", {"requests": "many"}, {"requests": {"remaining": True, "limit": None}}):
        pipe.probe("api", Outcome(Verdict.OK, details={"ratelimit": odd}))
        assert not [k for k in pipe.scrape() if k[0].startswith("failsoft_llm_ratelimit")]


async def test_label_values_stay_bounded_and_never_carry_error_text(pipe: Pipeline) -> None:
    """Unknown dependency names are dropped and error strings (with a secret in them) never reach the exposition."""
    secret = "hunter2-very-secret"
    pipe.probe("api", OK)
    pipe.probe("db", Outcome(Verdict.FAILURE, "http_599", f"HTTP 599 for postgres://u:{secret}@db/x"))
    pipe.metrics.on_probe("not-configured", FAIL, 0.01)
    text = pipe.metrics.render().decode()
    assert secret not in text
    allowed = {
        "dependency": {"db", "api"}, "kind": {"tcp", "http"},
        "state": {"healthy", "degraded", "down", "unknown", "closed", "open", "half_open"},
        "outcome": set(PROBE_OUTCOMES), "level": {"unknown", "full", "degraded", "limited", "cache_only"},
        "from": {"unknown", "full", "degraded", "limited", "cache_only", "closed", "open", "half_open"},
        "to": {"full", "degraded", "limited", "cache_only", "closed", "open", "half_open"},
        "type": {"level_changed", "dependency_changed"}, "sink": {"redis"},
    }
    for (_, labels) in parse(text):
        for key, val in labels:
            if key in allowed:
                assert val in allowed[key], (key, val)
            else:
                assert key in ("le", "version"), key




async def test_event_loop_lag_shows_a_stalled_loop(pipe: Pipeline) -> None:
    """A callback that blocks the loop for 0.3 s shows as at least that much lag in the next scrapes."""
    await until(lambda: pipe.metrics._lag, what="a first lag sample")
    assert value(pipe.scrape(), "failsoft_event_loop_lag_seconds") < 0.25
    # The fault itself: a callback that blocks the event loop (not a wait for a condition).
    asyncio.get_running_loop().call_soon(time.sleep, 0.3)
    lag = await until(lambda: (v := value(pipe.scrape(), "failsoft_event_loop_lag_seconds")) >= 0.25 and v,
                            what="the stall to show as lag")
    assert lag < 5


async def test_asyncio_tasks_are_counted(pipe: Pipeline) -> None:
    """``failsoft_asyncio_tasks`` counts the live tasks: ten more tasks parked on an event show as ten more."""
    before = value(pipe.scrape(), "failsoft_asyncio_tasks")
    assert before >= 1  # at least the lag sampler
    release = asyncio.Event()
    parked = [asyncio.create_task(release.wait()) for _ in range(10)]
    await asyncio.sleep(0)
    assert value(pipe.scrape(), "failsoft_asyncio_tasks") == before + 10
    release.set()
    await asyncio.gather(*parked)
    assert value(pipe.scrape(), "failsoft_asyncio_tasks") == before


async def test_metrics_are_served_over_http_in_both_formats(pipe: Pipeline) -> None:
    """GET /metrics answers the text format by default and OpenMetrics when asked, from the daemon's own routes."""
    pipe.probe("api", OK)
    app = web.Application()
    app.add_routes(pipe.metrics.routes())
    async with test_utils.TestClient(test_utils.TestServer(app, host="127.0.0.1")) as client:
        resp = await client.get("/metrics")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert value(parse(await resp.text()), "failsoft_probes_total", dependency="api", outcome="success") == 1
        resp = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await resp.text()).rstrip().endswith("# EOF")


async def test_metrics_use_their_own_registry(config: Config) -> None:
    """Two daemons' metrics in one process do not collide, and the process-global registry stays untouched."""
    first, second = Pipeline(config), Pipeline(config)
    try:
        first.probe("db", OK)
        assert value(first.scrape(), "failsoft_probes_total", dependency="db", outcome="success") == 1
        assert value(second.scrape(), "failsoft_probes_total", dependency="db", outcome="success") == 0
        global_names = {f.name for f in prometheus_client.REGISTRY.collect()}
        assert not {n for n in global_names if n.startswith("failsoft")}
    finally:
        await first.metrics.aclose()
        await second.metrics.aclose()


async def test_the_lag_sampler_wakes_with_the_next_planned_probe_start(config: Config) -> None:
    """The lag is sampled at a probe start the daemon planned (``Wakeups``), so it costs no wake-up of its own:
    with a start planned 0.3 s ahead and a 1 s sampling interval, the first sample is taken at that start, and
    measures the lateness against it."""

    class Watched(Wakeups):
        def __init__(self) -> None:
            super().__init__()
            self.answers: list[float] = []

        def join(self, now: float, lo: float, hi: float, own: float) -> float:
            self.answers.append(super().join(now, lo, hi, own))
            return self.answers[-1]

    loop = asyncio.get_running_loop()
    wakeups = Watched()
    planned = wakeups.join(loop.time(), loop.time(), loop.time() + 1, loop.time() + 0.3)
    metrics = Metrics(config, Hub(), clock=ManualClock(), lag_interval=1.0, wakeups=wakeups)
    try:
        await until(lambda: metrics._lag, within=5, what="a lag sample")
        assert wakeups.answers[1] == planned  # the sampler's first wait ended at the planned start
        assert loop.time() >= planned
        assert 0 <= metrics._lag[0] < 5
    finally:
        await metrics.aclose()


async def test_aclose_stops_the_lag_sampler_and_unregisters(config: Config) -> None:
    """After aclose no task is left running and the registry no longer exposes the metrics."""
    p = Pipeline(config)
    task = p.metrics._lag_task
    await p.metrics.aclose()
    assert task.done()
    assert p.metrics.render() == b""


@pytest.fixture
def promtool() -> Iterator[str]:
    """The path of promtool (Debian's ``prometheus`` package): skipped without it locally, a failure in CI."""
    yield require_tool("promtool", "apt-get install prometheus; make test installs it")


async def test_promtool_accepts_the_exposition_during_a_fault(pipe: Pipeline, promtool: str) -> None:
    """``promtool check metrics`` finds no problem in the exposition with every kind of series present."""
    pipe.probe("api", OK)
    pipe.probe("db", OK)
    for _ in range(3):
        pipe.probe("db", FAIL, latency=0.01, after=0.25)
    pipe.metrics.publish_failed("redis")
    text = pipe.metrics.render()
    proc = await asyncio.create_subprocess_exec(promtool, "check", "metrics", stdin=subprocess.PIPE,
                                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(text), 60)
    assert proc.returncode == 0, out.decode()
    assert b"failsoft_detection_seconds_bucket" in text


ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "alerts.yaml"
DOCS = ROOT / "docs" / "monitoring.md"  # holds the PromQL examples and the metrics table


def _rendered(template: str, labels: dict[str, str]) -> str:
    """An alert annotation as Prometheus renders it (only ``{{ $labels.x }}`` is used in ours)."""
    return re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), template)


def _expected_alert(name: str, labels: dict[str, str]) -> dict[str, Any]:
    rule = next(r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if r["alert"] == name)
    return {"exp_labels": {**labels, **rule.get("labels", {})},
            "exp_annotations": {k: _rendered(v, labels) for k, v in rule.get("annotations", {}).items()}}


def test_alert_rules_fire_as_intended(promtool: str, tmp_path: Path) -> None:
    """``promtool test rules``: below full for 5 minutes fires, not during an override; three breaker openings in
    15 minutes fire, two do not; a publish failure that persists fires."""
    target = {"job": "failsoft", "instance": "10.0.0.7:8765"}
    sel = ",".join(f'{k}="{v}"' for k, v in target.items())
    breaker = {**target, "dependency": "db", "to": "open"}
    tests = {"rule_files": [str(ALERTS)], "evaluation_interval": "1m", "tests": [
        {"interval": "1m", "input_series": [
            {"series": f'failsoft_service_level{{level="full",{sel}}}', "values": "1 1 0x20"},
            {"series": f"failsoft_override_active{{{sel}}}", "values": "0x20"},
            {"series": f'failsoft_breaker_transitions_total{{dependency="db",from="closed",to="open",{sel}}}',
             "values": "0 0 1 1 1 2 2 2 2 2 2 2 2 2 2 2 2 2 2 2 2"},
            {"series": f'failsoft_breaker_transitions_total{{dependency="db",from="half_open",to="open",{sel}}}',
             "values": "0 0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1"},
            {"series": f'failsoft_publish_failures_total{{sink="redis",{sel}}}', "values": "0+1x20"},
        ], "alert_rule_test": [
            {"eval_time": "6m", "alertname": "FailsoftServiceLevelBelowFull", "exp_alerts": []},
            {"eval_time": "8m", "alertname": "FailsoftServiceLevelBelowFull",
             "exp_alerts": [_expected_alert("FailsoftServiceLevelBelowFull", {**target, "level": "full"})]},
            {"eval_time": "4m", "alertname": "FailsoftBreakerFlapping", "exp_alerts": []},
            {"eval_time": "6m", "alertname": "FailsoftBreakerFlapping",
             "exp_alerts": [_expected_alert("FailsoftBreakerFlapping", breaker)]},
            {"eval_time": "5m", "alertname": "FailsoftPublishFailing", "exp_alerts": []},
            {"eval_time": "16m", "alertname": "FailsoftPublishFailing",
             "exp_alerts": [_expected_alert("FailsoftPublishFailing", {**target, "sink": "redis"})]},
        ]},
        {"interval": "1m", "input_series": [
            {"series": f'failsoft_service_level{{level="full",{sel}}}', "values": "0x20"},
            {"series": f"failsoft_override_active{{{sel}}}", "values": "1x20"},
        ], "alert_rule_test": [
            {"eval_time": "15m", "alertname": "FailsoftServiceLevelBelowFull", "exp_alerts": []},
        ]},
    ]}
    spec = tmp_path / "alerts_test.yaml"
    spec.write_text(yaml.safe_dump(tests))
    for args in (["check", "rules", str(ALERTS)], ["test", "rules", str(spec)]):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_documented_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """Every ```promql block of docs/monitoring.md parses (promtool checks it as a recording rule)."""
    queries = re.findall(r"```promql\n(.*?)```", DOCS.read_text(), re.S)
    assert len(queries) >= 3
    rules = {"groups": [{"name": "docs", "rules": [{"record": f"docs:query{i}", "expr": q}
                                                   for i, q in enumerate(queries)]}]}
    path = tmp_path / "docs_rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


async def test_alerts_and_docs_only_name_metrics_that_exist(pipe: Pipeline) -> None:
    """Every failsoft_* name in the alert rules and the monitoring docs is a series the daemon really exports."""
    pipe.probe("api", Outcome(Verdict.OK, details={"ratelimit": {"requests": {"remaining": 1, "limit": 2}}}))
    pipe.probe("db", OK)
    for _ in range(3):
        pipe.probe("db", FAIL, after=0.25)
    pipe.probe("db", OK)
    pipe.probe("db", OK, after=0.25)
    exported = {name for name, _ in pipe.scrape()}
    families = {f.name for f in text_string_to_metric_families(pipe.metrics.render().decode())}
    for source in (ALERTS, DOCS):
        named = set(re.findall(r"\bfailsoft_[a-z_]+[a-z]", source.read_text()))
        unknown = {n for n in named if n not in exported and n not in families}
        assert not unknown, f"{source.name} names metrics that do not exist: {sorted(unknown)}"
