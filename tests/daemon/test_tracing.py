"""Traces: with an OTLP endpoint set, spans for probe failures, breaker transitions and level changes reach a real
OTLP/HTTP collector (an aiohttp server here, decoding the protobuf); without one, nothing is even imported.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
import structlog.testing
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from support import until

from failsoft.daemon import tracing
from failsoft.daemon.breaker import Breaker
from failsoft.daemon.clock import ManualClock
from failsoft.daemon.config import Config, parse_config
from failsoft.daemon.hub import Hub
from failsoft.daemon.metrics import Metrics
from failsoft.daemon.state import ServiceState
from failsoft.probes.base import OK, Outcome, Verdict

CONFIG = """
service: shop
http: {listen: "127.0.0.1:0"}
defaults: {unhealthy_threshold: 3, healthy_threshold: 2, down_interval: {initial: 1s, max: 1s}}
dependencies:
  db: {kind: tcp, address: "127.0.0.1:9"}
policy:
  levels: [full, cache_only]
  rules: [{level: cache_only, when: {any_down: [db]}}]
  recover_after: 0s
"""
SECRET = "db-pw-0123456789"
FAIL = Outcome(Verdict.FAILURE, "connection_refused", f"cannot reach postgresql://u:{SECRET}@db/x")
OTEL_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_HEADERS",
             "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER",
             "OTEL_BSP_SCHEDULE_DELAY", "OTEL_EXPORTER_OTLP_TIMEOUT")


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@dataclass
class ReceivedSpan:
    """One span as the collector decoded it."""

    name: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    duration: float
    error: bool


@dataclass
class Collector:
    """A real OTLP/HTTP trace receiver: POSTs of protobuf ExportTraceServiceRequest at ``path``."""

    path: str = "/v1/traces"
    spans: list[ReceivedSpan] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    async def receive(self, request: web.Request) -> web.Response:
        """Decode one export request and keep its spans."""
        assert request.content_type == "application/x-protobuf"
        self.headers.append(dict(request.headers))
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(await request.read())
        for rs in msg.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(ReceivedSpan(
                        s.name, {a.key: _value(a.value) for a in s.attributes}, resource,
                        (s.end_time_unix_nano - s.start_time_unix_nano) / 1e9,
                        s.status.code == Status.STATUS_CODE_ERROR))
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    def named(self, name: str) -> list[ReceivedSpan]:
        """The spans received with this name."""
        return [s for s in self.spans if s.name == name]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No OTEL_* variable from the outer environment leaks into a test."""
    for name in OTEL_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


async def start_collector(path: str = "/v1/traces") -> tuple[Collector, web.AppRunner]:
    """A collector listening on a free loopback port."""
    collector = Collector(path)
    app = web.Application()
    app.router.add_post(path, collector.receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    collector.url = f"http://127.0.0.1:{port}"
    return collector, runner


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    """A running collector at /v1/traces."""
    c, runner = await start_collector()
    yield c
    await runner.cleanup()


class Pipeline:
    """The breaker, state owner logic and hub around one ``Metrics``, driven by hand."""

    def __init__(self, config: Config) -> None:
        self.clock = ManualClock()
        self.hub = Hub()
        self.metrics = Metrics(config, self.hub, clock=self.clock)
        self.hub.add_listener(self.metrics.observe)
        self.state = ServiceState(config, self.clock)
        self.breaker = Breaker("db", "tcp", config.dependencies["db"].settings, random.Random(3))
        self.hub.publish(self.state.snapshot(), [])

    def probe(self, outcome: Outcome, latency: float = 0.01, after: float = 0.25) -> None:
        """``after`` seconds pass, then a probe takes ``latency`` and reports ``outcome``."""
        self.clock.advance(after + latency)
        self.metrics.on_probe("db", outcome, latency)
        self.breaker.record(outcome, latency, self.clock.now())
        events = self.state.update(self.breaker.status)
        self.hub.publish(self.state.snapshot(), events)




async def test_spans_for_failures_breaker_moves_and_level_changes_reach_the_collector(
    clean_env: pytest.MonkeyPatch, collector: Collector,
) -> None:
    """Failed probes, the breaker opening and the level change arrive as spans with their figures; the standard
    variables for headers and batching are honoured; the error text is redacted."""
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    clean_env.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20trace-token-42")
    clean_env.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    config = dataclasses.replace(parse_config(CONFIG, env={}), secrets=(SECRET,))
    pipe = Pipeline(config)
    try:
        assert pipe.metrics.tracing is not None
        pipe.probe(OK)
        pipe.probe(OK)  # healthy: no span for successes
        pipe.probe(FAIL, latency=0.5, after=1.0)
        pipe.probe(FAIL)
        pipe.probe(FAIL)
        await until(lambda: collector.named("level_changed") and collector.named("breaker_transition")
                         and len(collector.named("probe_failed")) == 3, what="the spans of the fault")
    finally:
        await pipe.metrics.aclose()
    assert collector.headers[0]["Authorization"] == "Bearer trace-token-42"
    first = collector.named("probe_failed")[0]
    assert first.error
    assert first.duration == pytest.approx(0.5)
    assert first.attributes["failsoft.dependency"] == "db"
    assert first.attributes["failsoft.probe.outcome"] == "failure"
    assert first.attributes["error.type"] == "connection_refused"
    assert SECRET not in json.dumps([s.attributes for s in collector.spans])
    assert "***" in first.attributes["failsoft.probe.error"]
    (opened,) = collector.named("breaker_transition")
    assert (opened.attributes["failsoft.breaker.from"], opened.attributes["failsoft.breaker.to"]) == ("closed", "open")
    assert opened.attributes["failsoft.consecutive_failures"] == 3
    assert opened.duration == pytest.approx(0.5 + 2 * 0.26)  # the detection window: first failure to open
    levels = [(s.attributes["failsoft.level.previous"], s.attributes["failsoft.level"])
              for s in collector.named("level_changed")]
    assert levels == [("unknown", "full"), ("full", "cache_only")]
    assert first.resource["service.name"] == "failsoft"
    assert first.resource["failsoft.service"] == "shop"
    assert not collector.named("probe_ok")


async def test_traces_endpoint_and_service_name_variables_win_and_aclose_flushes(clean_env: pytest.MonkeyPatch) -> None:
    """OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used as given and OTEL_SERVICE_NAME names the resource; spans still
    queued (the default batch delay is 5 s) are sent by aclose."""
    collector, runner = await start_collector("/custom/traces")
    try:
        clean_env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", collector.url + "/custom/traces")
        clean_env.setenv("OTEL_SERVICE_NAME", "shop-sidecar")
        pipe = Pipeline(parse_config(CONFIG, env={}))
        pipe.probe(Outcome(Verdict.FATAL, "auth", "HTTP 401"))
        assert not collector.spans
        await pipe.metrics.aclose()
        await until(lambda: collector.named("breaker_transition"), what="spans flushed at close")
        assert collector.spans[0].resource["service.name"] == "shop-sidecar"
        assert collector.named("probe_failed")[0].attributes["failsoft.probe.outcome"] == "auth"
    finally:
        await runner.cleanup()


async def test_a_hanging_collector_does_not_hold_up_shutdown(clean_env: pytest.MonkeyPatch) -> None:
    """A collector that accepts and never answers: aclose still returns within its grace, not the export timeout."""
    accepted = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def hang(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        accepted.set()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        clean_env.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "600")  # the exporter alone would hold on for 10 minutes
        clean_env.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
        pipe = Pipeline(parse_config(CONFIG, env={}))
        pipe.probe(FAIL)
        await asyncio.wait_for(accepted.wait(), 15)  # the exporter is now blocked in its request
        # Bounded by the daemon's own shutdown timeout, not by the exporter's 600 s.
        await asyncio.wait_for(pipe.metrics.aclose(), tracing.SHUTDOWN_TIMEOUT + 60)
    finally:
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


def test_tracing_is_off_unless_an_endpoint_is_set() -> None:
    """Only an OTLP endpoint turns tracing on; OTEL_SDK_DISABLED or OTEL_TRACES_EXPORTER=none turn it off."""
    assert not tracing.enabled({})
    assert not tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": " "})
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert not tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"})
    assert not tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_TRACES_EXPORTER": "none"})
    assert tracing.from_environment("shop", "1.0", {}) is None


def test_without_an_endpoint_no_exporter_or_trace_sdk_is_imported() -> None:
    """A process that runs the metrics through a fault, without OTEL_* variables, never imports the OTLP exporter
    or the trace SDK, and starts no export thread."""
    code = f"""
import asyncio, json, sys, threading
from failsoft.daemon.config import parse_config
from failsoft.daemon.hub import Hub
from failsoft.daemon.metrics import Metrics
from failsoft.probes.base import Outcome, Verdict

async def main():
    hub = Hub()
    m = Metrics(parse_config({CONFIG!r}, env={{}}), hub)
    m.on_probe("db", Outcome(Verdict.FAILURE, "timeout"), 0.5)
    m.render()
    await m.aclose()
    return m.tracing

tracer = asyncio.run(main())
loaded = sorted(n for n in sys.modules if n.startswith(("opentelemetry.exporter.otlp", "opentelemetry.sdk.trace",
                                                         "opentelemetry.proto", "requests")))
print(json.dumps({{"tracing": repr(tracer), "loaded": loaded, "threads": [t.name for t in threading.enumerate()]}}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
                            check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["tracing"] == "None"
    assert report["loaded"] == []
    assert not [t for t in report["threads"] if "Otel" in t]


def test_a_missing_exporter_package_means_no_traces_not_no_daemon(clean_env: pytest.MonkeyPatch) -> None:
    """With an endpoint set but the OTLP exporter not installed, tracing is off with a warning that says how to
    fix it; nothing raises."""
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    clean_env.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with structlog.testing.capture_logs() as logged:
        assert tracing.from_environment("shop", "1.0") is None
    [warning] = [e for e in logged if e["event"] == "tracing_unavailable"]
    assert warning["log_level"] == "warning"
    assert "opentelemetry-exporter-otlp-proto-http" in warning["fix"]
