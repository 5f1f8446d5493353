"""Reporting the outcomes of the app's real calls to the daemon (``POST /report``), batched in the background.

The app's call is never slowed down or failed by reporting: ``report`` appends to a bounded in-memory queue and
returns (beyond the bound the outcome is dropped and counted); a background task sends batches of up to 1,000
every ``flush_interval``; a daemon that is away or refuses a batch costs a log line, never an exception in the app.
Only aiohttp and the standard library are used, as in ``failsoft.client``::

    reporter = Reporter("http://127.0.0.1:8765")

    async with reporter.call("db"):          # timed; an exception is reported as a failure and re-raised
        rows = await pool.fetch(query)

    @reporter.track("openai")                 # the same, for every call of a function (sync or async)
    async def complete(prompt: str) -> str: ...

    with reporter.call("openai") as call:     # outcomes that are not exceptions
        resp = await http.post(url, json=body)
        if resp.status == 429:
            call.rate_limited(retry_after=resp.headers.get("retry-after"))

    await reporter.aclose()                   # sends what is pending (bounded), then stops
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast

import aiohttp

log = logging.getLogger("failsoft.reporting")

DEFAULT_URL = "http://127.0.0.1:8765"
MAX_BATCH = 1000  # the daemon's limit per request
MAX_PENDING = 10_000  # outcomes held while the daemon is slow or away; more are dropped and counted
WARN_EVERY = 30.0  # seconds between two warnings about failed sends: a daemon away must not flood the app's log
_MAX_RETRIES = 5  # bad reports removed from one batch (the daemon names them) before the batch is given up
_BAD_INDEX = re.compile(r"^report \[(\d+)\]:")

P = ParamSpec("P")
R = TypeVar("R")


def default_reason(exc: BaseException) -> str:
    """A reason code for an exception raised by a call: timeout, connection_refused, connection_reset or error."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection_refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "connection_reset"
    return "error"


class Reporter:
    """Batches call outcomes and sends them to the daemon in the background; never blocks, never raises."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        max_pending: int = MAX_PENDING,
        flush_interval: float = 0.2,
        timeout: float = 2.0,
        session: aiohttp.ClientSession | None = None,
        classify: Callable[[BaseException], str] = default_reason,
    ) -> None:
        self.url = url.rstrip("/")
        self.max_pending = max_pending
        self.flush_interval = flush_interval
        self.timeout = timeout
        self.classify = classify
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._session = session
        self._own_session = session is None
        self._pending: deque[dict[str, Any]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._last_warning = -WARN_EVERY
        self.sent = 0  # outcomes the daemon accepted
        self.dropped = 0  # outcomes lost: the queue was full, the daemon was away, or refused them

    # -- the app's side: no IO -------------------------------------------------------------------------------

    def report(self, dependency: str, ok: bool, *, reason: str | None = None, latency_ms: float | None = None,
               retry_after: float | str | None = None) -> None:
        """Queue one outcome (``reason`` a short code like ``timeout``; ``retry_after`` with ``rate_limited``).

        Returns at once; safe from any thread; beyond ``max_pending`` the outcome is dropped and counted.
        """
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return
        item: dict[str, Any] = {"dependency": dependency, "ok": ok}
        if reason is not None:
            item["reason"] = reason
        if latency_ms is not None:
            item["latency_ms"] = round(latency_ms, 3)
        if retry_after is not None:
            item["retry_after"] = retry_after
        self._pending.append(item)
        self._start_if_possible()

    def call(self, dependency: str) -> Call:
        """A context manager (``with`` or ``async with``) that times the block and reports its outcome."""
        return Call(self, dependency)

    def track(self, dependency: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """A decorator: every call of the function (sync or async) is timed and reported like ``call``."""

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            if inspect.iscoroutinefunction(fn):
                afn = cast(Callable[P, Awaitable[Any]], fn)

                @functools.wraps(fn)
                async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                    with self.call(dependency):
                        return await afn(*args, **kwargs)

                return cast(Callable[P, R], async_wrapper)

            @functools.wraps(fn)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                with self.call(dependency):
                    return fn(*args, **kwargs)

            return wrapper

        return decorate

    @property
    def pending(self) -> int:
        """Outcomes queued and not yet sent."""
        return len(self._pending)

    # -- the background sender -------------------------------------------------------------------------------

    def _start_if_possible(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # a thread without a loop: the task started by the app's loop (or start()) sends it
        if self._task is None or self._task.done():
            self._start(loop)
        elif loop is self._loop and self._wake is not None and len(self._pending) >= MAX_BATCH:
            self._wake.set()  # a full batch: no need to wait for the next tick

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._wake = asyncio.Event()
        self._task = loop.create_task(self._run(), name="failsoft-reporter")

    async def start(self) -> None:
        """Start the background sender now (``report`` also starts it when called on an event loop)."""
        if self._task is None or self._task.done():
            self._start(asyncio.get_running_loop())

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval):
                    await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Send everything pending now, in batches of up to 1,000 (a failed batch is dropped and counted)."""
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(MAX_BATCH, len(self._pending)))]
            await self._send(batch)

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        for _ in range(_MAX_RETRIES + 1):
            try:
                async with self._session.post(self.url + "/report", data=json.dumps(batch), headers=self._headers,
                                              timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                    body = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                self._lost(len(batch), f"the daemon at {self.url} did not take the reports ({type(exc).__name__})")
                return
            if resp.status == 202 and isinstance(body, dict):
                self.sent += int(body.get("accepted", 0))
                self.dropped += int(body.get("dropped", 0))
                return
            message = _error_message(body) or f"HTTP {resp.status}"
            bad = _BAD_INDEX.match(message)
            if resp.status != 400 or bad is None or int(bad[1]) >= len(batch):
                self._lost(len(batch), f"the daemon refused {len(batch)} reports: {message}")
                return
            # One bad report (a misspelt dependency, say) must not cost the whole batch: drop it, send the rest.
            del batch[int(bad[1])]
            self._lost(1, f"the daemon refused a report: {message}")
            if not batch:
                return
        self._lost(len(batch), "too many bad reports in one batch")

    def _lost(self, count: int, why: str) -> None:
        self.dropped += count
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY:
            self._last_warning = now
            log.warning("failsoft reporting: %s (%d outcomes dropped so far)", why, self.dropped)

    async def aclose(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109 - a bounded goodbye, not a deadline API
        """Send what is pending (for at most ``timeout`` seconds), stop the sender, close the session it made."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.flush()
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None


def _error_message(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = body["error"].get("message")
        return message if isinstance(message, str) else None
    return None


class Call:
    """One timed call: reports on exit, success unless an exception escaped or ``fail``/``rate_limited`` said so.

    An exception is reported with ``reporter.classify(exc)`` as its reason and always re-raised; a cancellation
    (or any ``BaseException`` that is not an ``Exception``) is not a dependency failure and is not reported.
    """

    def __init__(self, reporter: Reporter, dependency: str) -> None:
        self.reporter = reporter
        self.dependency = dependency
        self._start = 0.0
        self._failure: tuple[str, float | str | None] | None = None

    def fail(self, reason: str = "error") -> None:
        """Report this call as failed with ``reason`` (e.g. an HTTP 503 that raised nothing)."""
        self._failure = (reason, None)

    def rate_limited(self, retry_after: float | str | None = None) -> None:
        """Report this call as rate limited; ``retry_after`` in seconds or as a duration like ``10s``."""
        if isinstance(retry_after, str) and retry_after.strip().isdigit():
            retry_after = int(retry_after)
        self._failure = ("rate_limited", retry_after)

    def __enter__(self) -> Call:
        self._start = time.monotonic()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        latency_ms = (time.monotonic() - self._start) * 1000
        if exc is not None and not isinstance(exc, Exception):
            return  # cancelled or interrupted: says nothing about the dependency
        try:
            if exc is not None:
                self.reporter.report(self.dependency, False, reason=self.reporter.classify(exc), latency_ms=latency_ms)
            elif self._failure is not None:
                reason, retry_after = self._failure
                self.reporter.report(self.dependency, False, reason=reason, latency_ms=latency_ms,
                                     retry_after=retry_after)
            else:
                self.reporter.report(self.dependency, True, latency_ms=latency_ms)
        except Exception:  # reporting must never fail the app's call (a classify() that raises, say)
            log.debug("failsoft reporting: could not report a call", exc_info=True)

    async def __aenter__(self) -> Call:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)
