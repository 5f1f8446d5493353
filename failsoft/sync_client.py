"""``SyncServiceLevelClient``: the app's client for synchronous code (Django, Flask, any WSGI app, scripts).

The same client as ``ServiceLevelClient`` (same options, same reads: ``level``, ``capabilities``, ``allows()``,
``state``), run on its own event loop in one background thread. Reads are memory reads from the calling thread;
no request ever waits for the daemon.

Pre-forking servers (gunicorn, uWSGI) fork after the app module is imported, and a thread does not survive a fork:
the client starts on first use, and starts again in a process whose id is not the one it started in. Creating it
at import time is therefore fine; nothing runs until a worker reads it::

    levels = SyncServiceLevelClient("http://127.0.0.1:8765", failure_mode="fail_open")

    def checkout(request):
        if not levels.allows("write"):
            return render_paused_page()
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from failsoft.client import DEFAULT_URL, Change, ServiceLevelClient

T = TypeVar("T")
_START_TIMEOUT = 10.0


class SyncServiceLevelClient:
    """``ServiceLevelClient`` in a background thread, with the same reads and synchronous lifecycle methods."""

    def __init__(self, url: str = DEFAULT_URL, **options: Any) -> None:
        if "session" in options:
            raise ValueError("session= belongs to one event loop; the synchronous client makes its own")
        ServiceLevelClient(url, **options)  # validate the options now, in the caller's frame
        self.url = url
        self._options = options
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: ServiceLevelClient | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> SyncServiceLevelClient:
        """Start following the daemon in a background thread (returns at once; see ``wait_ready``)."""
        self._running()
        return self

    def _running(self) -> ServiceLevelClient:
        """The inner client, started in this process (again after a fork)."""
        client = self._client
        if client is not None and self._pid == os.getpid():
            return client
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._boot()
            assert self._client is not None
            return self._client

    def _boot(self) -> None:
        # After a fork the old thread and loop are gone from this process: drop them without touching them.
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="failsoft-client", daemon=True)
        thread.start()

        async def make() -> ServiceLevelClient:
            client = ServiceLevelClient(self.url, **self._options)
            await client.start()
            return client

        self._client = asyncio.run_coroutine_threadsafe(make(), loop).result(_START_TIMEOUT)
        self._loop, self._thread, self._pid = loop, thread, os.getpid()

    def _call(self, coro_fn: Callable[[ServiceLevelClient], Any], timeout: float | None) -> Any:
        client = self._running()
        assert self._loop is not None
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro_fn(client), self._loop)
        return future.result(timeout)

    def wait_ready(self, timeout: float, *, attempts: int | None = None) -> bool:
        """Block until a fresh State is held: True, or False after ``timeout`` s or ``attempts`` failed connections."""
        return bool(self._call(lambda c: c.wait_ready(timeout, attempts=attempts), timeout + _START_TIMEOUT))

    def close(self) -> None:
        """Stop following and stop the thread. Reads report the fallback afterwards; ``start`` starts again."""
        with self._lock:
            client, loop, thread = self._client, self._loop, self._thread
            self._client = self._loop = self._thread = None
            if client is None or loop is None or thread is None or self._pid != os.getpid():
                return
            asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(_START_TIMEOUT)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_START_TIMEOUT)
            loop.close()

    def __enter__(self) -> SyncServiceLevelClient:
        """``start()``."""
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """``close()``."""
        self.close()

    # -- reads: memory only --------------------------------------------------------------------------------

    @property
    def level(self) -> str:
        """The service level, or the fallback (see ``ServiceLevelClient.level``)."""
        return self._running().level

    @property
    def capabilities(self) -> tuple[str, ...]:
        """What the app may do now, or the fallback capabilities."""
        return self._running().capabilities

    def allows(self, capability: str) -> bool:
        """Whether ``capability`` is allowed now."""
        return self._running().allows(capability)

    @property
    def state(self) -> Mapping[str, Any] | None:
        """The daemon's State while it can be trusted, else None."""
        return self._running().state

    @property
    def fresh(self) -> bool:
        """True while connected and holding a State before its ``valid_until``."""
        return self._running().fresh

    @property
    def serving(self) -> str:
        """``live``, ``stale`` (fail_open) or ``fallback``."""
        return self._running().serving

    @property
    def last_error(self) -> str | None:
        """Why the last connection ended, if one did."""
        return self._running().last_error

    def report(self, dependency: str, ok: bool, **details: Any) -> None:
        """Report one call outcome (``ServiceLevelClient.report``: batched in the background, never blocks)."""
        client = self._running()
        assert self._loop is not None
        self._loop.call_soon_threadsafe(functools.partial(client.report, dependency, ok, **details))

    def on_change(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Call ``callback(change)`` on every change, in the client's thread (keep it short, lock what it shares).
        Returns an undo."""
        client = self._running()
        assert self._loop is not None
        registered: Future[Callable[[], None]] = Future()
        self._loop.call_soon_threadsafe(lambda: registered.set_result(client.on_change(callback)))
        undo = registered.result(_START_TIMEOUT)

        def remove() -> None:
            if self._loop is not None and self._client is client:
                self._loop.call_soon_threadsafe(undo)

        return remove
