"""Optional traces: spans for probe failures, breaker transitions and level changes, sent over OTLP/HTTP.

Tracing is on only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set. Without
either, :func:`from_environment` returns None before importing anything from the OpenTelemetry trace SDK or the
exporter, so nothing is loaded and nothing is sent. With one set, the exporter reads the standard ``OTEL_*``
variables itself (endpoint, headers, timeout, compression, certificates), as do the batch processor
(``OTEL_BSP_*``), the sampler (``OTEL_TRACES_SAMPLER``) and the resource (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:  # only for annotations: the SDK is imported lazily, when tracing is on
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer
    from opentelemetry.util.types import AttributeValue

log = structlog.get_logger("failsoft.tracing")

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
HEADER_VARS = ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
PROTOCOL = "http/protobuf"
# Spans still queued at shutdown get this long to leave; a collector that hangs must not hold up SIGTERM.
SHUTDOWN_TIMEOUT = 1.0


def enabled(environ: Mapping[str, str]) -> bool:
    """True when the environment asks for traces (an OTLP endpoint is set and the SDK is not disabled)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARS)


def header_secrets(environ: Mapping[str, str]) -> list[str]:
    """The values of ``OTEL_EXPORTER_OTLP_*HEADERS`` (``api-key=...``): credentials, to be redacted from logs."""
    values = []
    for name in HEADER_VARS:
        for pair in environ.get(name, "").split(","):
            _, sep, value = pair.partition("=")
            if sep and value.strip():
                values += [value.strip(), urllib.parse.unquote(value.strip())]
    return values


class Tracing:
    """Emits finished spans to the batch processor; the export happens in the SDK's own thread."""

    def __init__(self, provider: TracerProvider, tracer: Tracer) -> None:
        self._provider = provider
        self._tracer = tracer

    def span(
        self,
        name: str,
        start_ns: int,
        end_ns: int,
        attributes: Mapping[str, AttributeValue],
        error: str | None = None,
    ) -> None:
        """Record one finished span from ``start_ns`` to ``end_ns`` (epoch nanoseconds); ``error`` marks it failed."""
        from opentelemetry.trace import Status, StatusCode

        span = self._tracer.start_span(name, start_time=start_ns, attributes=attributes)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=max(start_ns, end_ns))

    async def aclose(self, grace: float = SHUTDOWN_TIMEOUT) -> None:
        """Flush queued spans and stop the exporter, waiting at most ``grace`` seconds."""
        await _in_daemon_thread(self._provider.shutdown, grace)


async def _in_daemon_thread(work: Callable[[], object], grace: float) -> None:
    """Run blocking ``work`` in a daemon thread and wait for it at most ``grace`` seconds.

    Not ``asyncio.to_thread``: the default executor's threads are joined at interpreter exit, so an export stuck
    on a dead collector would hold the process past its shutdown deadline. A daemon thread is simply dropped.
    """
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def run() -> None:
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - an exporter failing to flush must not break shutdown
            log.warning("tracing_shutdown_failed", error=repr(exc))
        finally:
            with contextlib.suppress(RuntimeError):  # the loop may already be closed
                loop.call_soon_threadsafe(done.set)

    threading.Thread(target=run, name="failsoft-tracing-shutdown", daemon=True).start()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), grace)


def from_environment(service: str, version: str, environ: Mapping[str, str] | None = None) -> Tracing | None:
    """A :class:`Tracing` exporting over OTLP/HTTP when the environment asks for it, else None (nothing imported)."""
    environ = os.environ if environ is None else environ
    if not enabled(environ):
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:  # a trimmed install: say so, and run without traces rather than not at all
        log.warning("tracing_unavailable", error=str(exc), fix="pip install opentelemetry-exporter-otlp-proto-http")
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or PROTOCOL).strip()
    if protocol != PROTOCOL:
        log.warning("tracing_protocol_unsupported", protocol=protocol, using=PROTOCOL)
    resource = Resource.create({"service.version": version, "failsoft.service": service})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        # Neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES named the service: the process is failsoft.
        resource = resource.merge(Resource({SERVICE_NAME: "failsoft"}))
    # shutdown_on_exit=False: the SDK's atexit hook would wait up to 30 s on a dead collector; aclose bounds it.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    # The endpoint is logged through the redacting processor (a URL password is masked); headers never are.
    endpoint = next(environ[name] for name in ENDPOINT_VARS if environ.get(name, "").strip())
    log.info("tracing_enabled", endpoint=endpoint, protocol=PROTOCOL)
    return Tracing(provider, provider.get_tracer("failsoft", version))
