"""Structured logs, configured once: structlog for our lines and the stdlib's (aiohttp, asyncpg, asyncio) alike.

Every line, ours or a library's, passes one redaction processor after exceptions have been rendered to text,
so a secret cannot reach the output whatever logged it: a field, a message, a traceback or an uncaught crash.

Loggers are cached on first use. Module-level ``structlog.get_logger()`` proxies are created at import time,
before :func:`configure` runs; that is fine because a proxy reads the configuration when it first logs, not when
it is created. The one rule: nothing may log before ``configure`` (``failsoft run`` calls it right after the
config is loaded), or that logger keeps structlog's defaults for the life of the process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, MutableMapping
from types import TracebackType
from typing import Any, TextIO

import orjson
import structlog

from failsoft.daemon import logguard, tracing
from failsoft.daemon.redact import Redactor

Redact = Callable[[str], str]
_PLAIN = (str, int, float, bool, type(None), dt.datetime, dt.date)


def _scrubber(redact: Redact) -> Callable[[Any], Any]:
    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, _PLAIN):
            return value
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [scrub(v) for v in value]
        if isinstance(value, BaseException):
            return redact(f"{type(value).__name__}: {value}")
        # Anything else (a URL object, a DSN, a config) is turned into text here, so the renderer never calls
        # str() on it after redaction has run.
        return redact(str(value))

    return scrub


def redacting(redact: Redact) -> structlog.types.Processor:
    """The processor that masks secrets in every value of an event (run it after exceptions are rendered)."""
    scrub = _scrubber(redact)

    def processor(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in event.items():
            if not key.startswith("_"):  # "_record" and "_from_structlog" are internal and removed before output
                event[key] = scrub(value)
        return event

    return processor


def _dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def _with_env_secrets(redact: Redact) -> Redact:
    """``redact``, plus the OTLP exporter's header values (API keys for a tracing backend) when set."""
    extra = tracing.header_secrets(os.environ)
    if not extra:
        return redact
    more = Redactor(extra)
    return lambda text: more(redact(text))


def configure(level: str = "info", fmt: str = "json", redact: Redact | None = None,
              *, stream: TextIO | None = None) -> None:
    """Set up structlog and the stdlib root logger to write one line per event to ``stream`` (stdout).

    ``fmt`` is ``json`` (one orjson object per line) or ``console`` (aligned, for people).
    """
    out = stream or sys.stdout
    # Bounded: every field is cut before it is redacted, so a line costs a bounded amount whatever it quotes.
    redact_all = logguard.bounded(_with_env_secrets(redact or Redactor()))
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        # Tracebacks become text before redaction: an exception message may quote a DSN.
        structlog.processors.format_exc_info,
        redacting(redact_all),
    ]
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback)
        if fmt == "console"
        else structlog.processors.JSONRenderer(serializer=_dumps)
    )
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log would print a line per request (every long-poll); keep it for debugging only.
    logging.getLogger("aiohttp.access").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    # Lines a client can cause at will (accept() failures, bad requests) are rate-limited at their logger.
    logguard.install_repeat_filters()
    # Python warnings and crashes would otherwise go to stderr unredacted.
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_crash


class Holdable:
    """A logger whose lines can be held for a moment and written after, in order.

    The state owner holds the lines of a change while it applies it, and writes them once the change is published
    (``state.run_owner``): rendering and redacting a line costs ~0.1 ms, and a level change logs two or three, so
    the apps learn of it that much sooner. Only the write is later; the ``timestamp`` of a held line is the time it
    was written, under a millisecond after.
    """

    def __init__(self, logger: Any) -> None:
        self._logger = logger
        self._held: list[tuple[str, str, dict[str, Any]]] | None = None

    def debug(self, event: str, **fields: Any) -> None:
        """Log at debug."""
        self._line("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        """Log at info."""
        self._line("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Log at warning."""
        self._line("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        """Log at error."""
        self._line("error", event, fields)

    def _line(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if self._held is None:
            getattr(self._logger, level)(event, **fields)
        else:
            self._held.append((level, event, fields))

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold every line logged inside the block; write them when it ends (also when it raises)."""
        self._held = []
        try:
            yield
        finally:
            held, self._held = self._held, None
            for level, event, fields in held:
                getattr(self._logger, level)(event, **fields)


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    structlog.get_logger("failsoft").critical("uncaught_exception", exc_info=(kind, exc, tb))


def _log_thread_crash(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None:
        return
    structlog.get_logger("failsoft").error(
        "thread_crashed", thread=args.thread.name if args.thread else None,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
