"""Observability of the real daemon: /metrics scraped and parsed during a real fault (and checked by promtool),
one log line per transition with its fields, no secret anywhere, and spans sent to a real OTLP/HTTP collector.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client.parser import text_string_to_metric_families
from support import SECRETS, require_tool, wait_for

from failsoft.devtools.localservers import free_port

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(d: Any) -> tuple[str, Samples]:
    """GET /metrics: the raw text and its samples, read by prometheus_client's parser."""
    status, body, headers = d.get("/metrics")
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain")
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for family in text_string_to_metric_families(body) for s in family.samples}
    return body, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """One sample, or None when the series is absent."""
    return samples.get((name, frozenset(labels.items())))


def transitions(samples: Samples, dep: str, frm: str, to: str) -> float | None:
    """failsoft_breaker_transitions_total for one move."""
    return value(samples, "failsoft_breaker_transitions_total", dependency=dep, **{"from": frm, "to": to})


def check_with_promtool(text: str) -> None:
    """``promtool check metrics`` on a scrape (the test is skipped without promtool, and fails in CI)."""
    promtool = require_tool("promtool", "apt-get install prometheus; make test installs it")
    result = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def find(lines: list[dict[str, Any]], event: str, **fields: Any) -> dict[str, Any] | None:
    """The first log line with this event name and these field values."""
    for line in lines:
        if line.get("event") == event and all(line.get(k) == v for k, v in fields.items()):
            return line
    return None


def test_metrics_and_logs_follow_a_database_crash_and_recovery(run_daemon, own_postgres, redis_server) -> None:
    """Kill -9 PostgreSQL, then restart it: the scraped states, counters and MTTD/MTTR histograms move exactly as
    caused, promtool accepts every scrape, each transition has its log line, and no secret is printed anywhere."""
    admin_token = "adm-" + secrets.token_hex(12)
    api_token = "tok-" + secrets.token_hex(12)
    SECRETS.update({admin_token, api_token})
    d = run_daemon(f"""
service: obs-e2e
http: {{listen: "127.0.0.1:0", admin_token: "${{ADMIN_TOKEN}}"}}
log: {{level: info, format: json}}
defaults: {{interval: 200ms, fast_interval: 100ms, timeout: 500ms, unhealthy_threshold: 2, healthy_threshold: 2,
           down_interval: {{initial: 200ms, max: 400ms}}}}
dependencies:
  db: {{kind: postgres, dsn: "${{DB_DSN}}"}}
  cache: {{kind: redis, url: "{redis_server.url}"}}
  search:
    kind: http
    url: "http://127.0.0.1:{free_port()}/health"
    headers: {{Authorization: "Bearer ${{API_TOKEN}}"}}
policy:
  levels: [full, degraded, limited, cache_only]
  rules:
    - {{level: cache_only, when: {{any_down: [db]}}}}
    - {{level: degraded, when: {{any_not_healthy: [db, cache]}}}}
  recover_after: 500ms
""", env={"ADMIN_TOKEN": admin_token, "API_TOKEN": api_token, "DB_DSN": own_postgres.dsn})
    d.wait_state(lambda s: s["level"] == "full" and s["dependencies"]["db"]["state"] == "healthy", 30, "level full")
    text, s = scrape(d)
    check_with_promtool(text)
    assert value(s, "failsoft_service_level", level="full") == 1
    assert value(s, "failsoft_service_level", level="cache_only") == 0
    assert value(s, "failsoft_dependency_state", dependency="db", kind="postgres", state="healthy") == 1
    assert value(s, "failsoft_dependency_state", dependency="search", kind="http", state="down") == 1
    assert value(s, "failsoft_breaker_state", dependency="db", state="closed") == 1
    assert value(s, "failsoft_probes_total", dependency="db", outcome="success") >= 1
    assert value(s, "failsoft_probe_duration_seconds_count", dependency="db", outcome="success") >= 1
    assert value(s, "failsoft_sse_subscribers") == 0
    assert value(s, "failsoft_override_active") == 0
    assert value(s, "failsoft_event_loop_lag_seconds") is not None
    assert [k for k in s if k[0] == "failsoft_build_info"]
    assert value(s, "failsoft_detection_seconds_count", dependency="db") is None
    failed_before = sum(v for (n, labels), v in s.items() if n == "failsoft_probes_total"
                        and ("dependency", "db") in labels and ("outcome", "success") not in labels)

    own_postgres.kill()
    state = d.wait_state(lambda s: s["dependencies"]["db"]["state"] == "down" and s["level"] == "cache_only",
                         30, "db down")
    assert state["dependencies"]["db"]["breaker"] == "open"
    text, s = scrape(d)
    check_with_promtool(text)
    assert value(s, "failsoft_dependency_state", dependency="db", kind="postgres", state="down") == 1
    assert value(s, "failsoft_dependency_state", dependency="db", kind="postgres", state="healthy") == 0
    assert value(s, "failsoft_breaker_state", dependency="db", state="open") == 1
    assert transitions(s, "db", "closed", "open") == 1
    assert value(s, "failsoft_service_level", level="cache_only") == 1
    assert value(s, "failsoft_service_level", level="full") == 0
    assert value(s, "failsoft_level_changes_total", **{"from": "full", "to": "cache_only"}) == 1
    assert value(s, "failsoft_detection_seconds_count", dependency="db") == 1
    # A crash: the kept connection dropped and the re-probe was refused, which is down at once (policies/evidence.py).
    assert 0 < value(s, "failsoft_detection_seconds_sum", dependency="db") < 5
    failed_after = sum(v for (n, labels), v in s.items() if n == "failsoft_probes_total"
                       and ("dependency", "db") in labels and ("outcome", "success") not in labels)
    assert failed_after - failed_before >= 1
    assert value(s, "failsoft_events_total", type="dependency_changed") >= 1

    own_postgres.start()
    d.wait_state(lambda s: s["dependencies"]["db"]["state"] == "healthy" and s["level"] == "full", 60, "recovery")
    text, s = scrape(d)
    check_with_promtool(text)
    assert value(s, "failsoft_recovery_seconds_count", dependency="db") == 1
    assert value(s, "failsoft_recovery_seconds_sum", dependency="db") > 0
    assert transitions(s, "db", "open", "half_open") == 1
    assert transitions(s, "db", "half_open", "closed") == 1
    assert value(s, "failsoft_level_changes_total", **{"from": "cache_only", "to": "full"}) == 1
    assert value(s, "failsoft_breaker_state", dependency="db", state="closed") == 1
    assert value(s, "failsoft_detection_seconds_count", dependency="db") == 1  # a recovery is not a detection

    lines = d.lines()
    assert len(lines) == len(d.output().splitlines()), "every line the daemon prints is JSON"
    assert find(lines, "probe_failed", dependency="db") is not None
    failed = find(lines, "probe_failed", dependency="db")
    assert failed["reason"] and "latency_ms" in failed and "consecutive_failures" in failed
    assert find(lines, "breaker_opened", dependency="db") is not None
    down = find(lines, "dependency_changed", dependency="db", state="down")
    assert down is not None and down["previous"] == "healthy" and down["breaker"] == "open" and down["reason"]
    assert down["level"] == "warning"
    assert find(lines, "level_changed", service_level="cache_only", previous="full") is not None
    assert "db" in find(lines, "level_changed", service_level="cache_only")["reason"]
    assert find(lines, "breaker_half_open", dependency="db") is not None
    assert find(lines, "breaker_closed", dependency="db") is not None
    assert find(lines, "dependency_changed", dependency="db", state="healthy", previous="down") is not None
    assert find(lines, "level_changed", service_level="full", previous="cache_only") is not None
    assert not [line for line in lines if line.get("event") == "probe_ok"], "successes are not logged at info"
    assert not find(lines, "tracing_enabled"), "no OTLP endpoint: no tracing"

    output = d.output() + text
    for secret in (admin_token, api_token, own_postgres.password, redis_server.password):
        assert secret not in output



def test_publish_failures_are_counted_while_redis_is_down(run_daemon, own_redis) -> None:
    """Killing the Redis the level is published to makes failsoft_publish_failures_total{sink="redis"} grow and
    logs publish_failed once; the cache dependency on the same server shows down in the same scrape."""
    d = run_daemon(f"""
http: {{listen: "127.0.0.1:0"}}
defaults:
  {{interval: 200ms, fast_interval: 100ms, unhealthy_threshold: 2, down_interval: {{initial: 200ms, max: 400ms}}}}
dependencies:
  cache: {{kind: redis, url: "{own_redis.url}"}}
publish: {{redis: cache, heartbeat: 200ms}}
""")
    d.wait_state(lambda s: s["dependencies"]["cache"]["state"] == "healthy", 30, "cache healthy")
    _, s = scrape(d)
    assert value(s, "failsoft_publish_failures_total", sink="redis") == 0
    own_redis.kill()
    s = wait_for(lambda: (s := scrape(d)[1]) and (value(s, "failsoft_publish_failures_total", sink="redis") or 0) > 0
                 and value(s, "failsoft_dependency_state", dependency="cache", kind="redis", state="down") == 1 and s,
                 30, what="publish failures counted and cache down")
    assert value(s, "failsoft_breaker_state", dependency="cache", state="open") == 1
    failures = [line for line in d.lines() if line.get("event") == "publish_failed"]
    assert len(failures) == 1 and failures[0]["sink"] == "redis"
    assert own_redis.password not in d.output()

class ThreadedCollector:
    """A real OTLP/HTTP receiver on its own thread and loop, so the synchronous test can poll it."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, dict[str, Any]]] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),),
                                        name="otlp-collector", daemon=True)

    async def _receive(self, request: web.Request) -> web.Response:
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(await request.read())
        for rs in msg.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    attrs = {a.key: getattr(a.value, a.value.WhichOneof("value") or "string_value")
                             for a in span.attributes}
                    self.spans.append((span.name, attrs))
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/traces", self._receive)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def start(self) -> ThreadedCollector:
        """Listen on a free loopback port."""
        self._thread.start()
        assert self._ready.wait(15)
        return self

    def stop(self) -> None:
        """Stop listening and end the thread."""
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    def names(self) -> list[str]:
        """Span names received so far."""
        return [name for name, _ in list(self.spans)]


@pytest.fixture
def collector() -> Iterator[ThreadedCollector]:
    """A running OTLP/HTTP collector."""
    c = ThreadedCollector().start()
    yield c
    c.stop()


def test_the_daemon_sends_spans_when_an_otlp_endpoint_is_set(run_daemon, collector: ThreadedCollector) -> None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set, a dependency that refuses connections yields probe failure, breaker
    and level spans at the collector; the daemon still stops on SIGTERM with exit 0 (the test's stop would
    SIGKILL it after 10 s, and that exit status is not 0)."""
    d = run_daemon(f"""
http: {{listen: "127.0.0.1:0"}}
defaults: {{fast_interval: 100ms, down_interval: {{initial: 200ms, max: 200ms}}}}
dependencies:
  broker: {{kind: tcp, address: "127.0.0.1:{free_port()}"}}
""", env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}", "OTEL_BSP_SCHEDULE_DELAY": "100",
          "OTEL_SERVICE_NAME": "failsoft-e2e"})
    wait_for(lambda: {"probe_failed", "breaker_transition", "level_changed"} <= set(collector.names()), 30,
             what="spans at the collector")
    failed = next(attrs for name, attrs in collector.spans if name == "probe_failed")
    assert failed["failsoft.dependency"] == "broker"
    assert failed["error.type"] == "connection_refused"
    opened = next(attrs for name, attrs in collector.spans if name == "breaker_transition")
    assert (opened["failsoft.breaker.from"], opened["failsoft.breaker.to"]) == ("closed", "open")
    assert find(d.lines(), "tracing_enabled") is not None
    d.stop()
    assert d.wait_exit(1) == 0

