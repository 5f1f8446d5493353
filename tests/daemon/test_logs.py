"""Logs: one structlog pipeline for our lines and the stdlib's, JSON or console, with every line redacted."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from failsoft.daemon import logs
from failsoft.daemon.redact import Redactor

SECRET = "s3cr3t-Pa55word"
DSN = f"postgresql://app:{SECRET}@db.internal:5432/shop"


@pytest.fixture
def capture(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., io.StringIO]]:
    """``configure`` into a buffer; the global logging setup is restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, sys.excepthook, threading.excepthook, structlog.get_config())
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_HEADERS", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", raising=False)

    def start(level: str = "info", fmt: str = "json", secrets: tuple[str, ...] = (SECRET,)) -> io.StringIO:
        buf = io.StringIO()
        logs.configure(level, fmt, Redactor(secrets), stream=buf)
        return buf

    yield start
    root.handlers[:], level, sys.excepthook, threading.excepthook, config = saved
    root.setLevel(level)
    logging.captureWarnings(False)
    structlog.configure(**config)


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    """The JSON objects written, one per line (every line must be JSON)."""
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_lines_carry_event_level_logger_time_and_fields(capture: Callable[..., io.StringIO]) -> None:
    """Each event is one JSON object with the stable event name, the level, the logger, a UTC time and the fields."""
    buf = capture()
    structlog.get_logger("failsoft.test").warning("breaker_opened", dependency="db", consecutive_failures=3)
    (line,) = lines(buf)
    assert line["event"] == "breaker_opened"
    assert line["level"] == "warning"
    assert line["logger"] == "failsoft.test"
    assert line["timestamp"].endswith("Z")
    assert (line["dependency"], line["consecutive_failures"]) == ("db", 3)


def test_held_lines_are_written_when_the_block_ends_in_order_and_redacted(capture: Callable[..., io.StringIO]) -> None:
    """``Holdable.held`` (the state owner publishes a change before it logs it): nothing is written inside the block,
    everything after it, in the order logged, through the same pipeline (level filter and redaction included);
    outside a block a line is written at once. A block that raises still writes its lines."""
    buf = capture()
    log = logs.Holdable(structlog.get_logger("failsoft.state"))
    with log.held():
        log.warning("override_set", service_level="cache_only", reason=f"from {DSN}")
        log.debug("hidden", n=1)
        log.info("level_changed", service_level="cache_only")
        assert buf.getvalue() == ""
    assert [(e["event"], e["level"]) for e in lines(buf)] == [("override_set", "warning"), ("level_changed", "info")]
    assert SECRET not in buf.getvalue()
    log.error("now", n=2)
    assert lines(buf)[-1]["event"] == "now"
    with pytest.raises(RuntimeError), log.held():
        log.info("before_the_crash")
        raise RuntimeError("boom")
    assert lines(buf)[-1]["event"] == "before_the_crash"


def test_a_logger_made_before_configure_uses_the_configuration_and_is_cached(
    capture: Callable[..., io.StringIO],
) -> None:
    """A module-level proxy created at import time follows the later configure, and is cached after first use."""
    early = structlog.get_logger("failsoft.early")  # as every module does at import, before configure
    buf = capture()
    early.info("listening", port=8765)
    assert lines(buf)[0]["event"] == "listening"
    assert "bind" in vars(early), "the proxy should have cached its bound logger on first use"
    early.info("stopped")
    assert [line["event"] for line in lines(buf)] == ["listening", "stopped"]


def test_debug_lines_are_dropped_at_info(capture: Callable[..., io.StringIO]) -> None:
    """At level info, debug lines (probe successes) are not written; at debug they are."""
    buf = capture("info")
    log = structlog.get_logger("failsoft.probe")
    log.debug("probe_ok", dependency="db")
    log.info("probe_failed", dependency="db")
    assert [line["event"] for line in lines(buf)] == ["probe_failed"]
    buf = capture("debug")
    structlog.get_logger("failsoft.probe2").debug("probe_ok", dependency="db")
    assert [line["event"] for line in lines(buf)] == ["probe_ok"]


def test_secrets_are_masked_in_fields_nested_values_and_objects(capture: Callable[..., io.StringIO]) -> None:
    """A known secret or a credential-shaped text is masked wherever it sits in an event, whatever its type."""

    class Url:
        def __str__(self) -> str:
            return DSN

    buf = capture()
    structlog.get_logger("failsoft.test").info(
        "configured", dsn=DSN, nested={"urls": [DSN, ("x", DSN)]}, obj=Url(), error=ValueError(DSN),
        header="Authorization: Bearer abcdefghijkl", note=f"the password is {SECRET}",
    )
    raw = buf.getvalue()
    assert SECRET not in raw
    assert "abcdefghijkl" not in raw
    (line,) = lines(buf)
    assert line["dsn"] == "postgresql://app:***@db.internal:5432/shop"
    assert line["obj"] == line["dsn"]
    assert line["error"].startswith("ValueError: postgresql://app:***@")


def test_stdlib_loggers_are_routed_formatted_and_redacted(capture: Callable[..., io.StringIO]) -> None:
    """aiohttp's and asyncpg's stdlib records come out as the same JSON, %-args formatted, then redacted."""
    buf = capture()
    logging.getLogger("aiohttp.server").error("Error handling request from %s: %s", "127.0.0.1", DSN)
    logging.getLogger("asyncpg.pool").warning("connection to %s lost", DSN)
    logging.getLogger("aiohttp.access").info("GET /service-level 200")  # the access log is quiet at info
    out = lines(buf)
    assert [(line["logger"], line["level"]) for line in out] == [("aiohttp.server", "error"),
                                                                  ("asyncpg.pool", "warning")]
    assert out[0]["event"] == "Error handling request from 127.0.0.1: postgresql://app:***@db.internal:5432/shop"
    assert SECRET not in buf.getvalue()


def test_exceptions_are_rendered_then_redacted(capture: Callable[..., io.StringIO]) -> None:
    """Tracebacks, from structlog or stdlib loggers, are text in the line with the secret masked."""
    buf = capture()

    def connect() -> None:
        raise ConnectionError(f"could not connect to {DSN}")

    try:
        connect()
    except ConnectionError:
        structlog.get_logger("failsoft.test").exception("task_crashed", task="owner")
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
    out = lines(buf)
    assert len(out) == 2
    for line in out:
        assert "Traceback (most recent call last)" in line["exception"]
        assert "ConnectionError: could not connect to postgresql://app:***@" in line["exception"]
    assert SECRET not in buf.getvalue()


def test_python_warnings_go_through_the_pipeline(capture: Callable[..., io.StringIO]) -> None:
    """A warnings.warn from a library is a redacted log line, not raw stderr."""
    buf = capture()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(f"deprecated use of {DSN}", DeprecationWarning, stacklevel=1)
    (line,) = lines(buf)
    assert line["logger"] == "py.warnings"
    assert SECRET not in line["event"]


def test_a_crashing_thread_is_logged_redacted(capture: Callable[..., io.StringIO]) -> None:
    """An exception escaping a thread (an exporter's, a library's) is one redacted error line."""
    buf = capture()

    def crash() -> None:
        raise RuntimeError(f"export to {DSN} failed")

    t = threading.Thread(target=crash, name="exporter")
    t.start()
    t.join(10)
    (line,) = lines(buf)
    assert (line["event"], line["thread"], line["level"]) == ("thread_crashed", "exporter", "error")
    assert "RuntimeError: export to postgresql://app:***@" in line["exception"]


def test_tracing_header_values_are_redacted(
    capture: Callable[..., io.StringIO], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The OTLP exporter's header values (a tracing backend's API key) are secrets too."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-honeycomb-team=hc-key-123456,other=plain%20value")
    buf = capture(secrets=())
    structlog.get_logger("failsoft.test").info("sent", headers="x-honeycomb-team=hc-key-123456 other=plain value")
    raw = buf.getvalue()
    assert "hc-key-123456" not in raw
    assert "plain value" not in raw


def test_console_format_is_for_people(capture: Callable[..., io.StringIO]) -> None:
    """``log.format: console`` writes aligned text lines with key=value fields, redacted, no JSON."""
    buf = capture(fmt="console")
    structlog.get_logger("failsoft.state").info("level_changed", service_level="cache_only", reason=DSN)
    text = buf.getvalue()
    assert "level_changed" in text
    assert "service_level=cache_only" in text
    assert SECRET not in text
    with pytest.raises(ValueError):
        json.loads(text)


def test_an_uncaught_exception_in_the_process_is_logged_redacted() -> None:
    """A crash of the whole process goes through the pipeline: a JSON line without the secret, on stdout."""
    code = (
        "from daemon import logs\n"
        "from daemon.redact import Redactor\n"
        f"logs.configure('info', 'json', Redactor([{SECRET!r}]))\n"
        f"raise RuntimeError('cannot reach ' + {DSN!r})\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
                            check=False)
    assert result.returncode == 1
    assert SECRET not in result.stdout + result.stderr
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert (line["event"], line["level"]) == ("uncaught_exception", "critical")
    assert "RuntimeError: cannot reach postgresql://app:***@" in line["exception"]
