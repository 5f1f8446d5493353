"""A small client for apps: the current service level held in memory, kept current over the daemon's SSE stream.

Reading it (``level``, ``capabilities``, ``allows``) is a few attribute lookups and one clock read: no IO on the
app's hot path. A background task follows ``GET /service-level/events``; after each event it fetches the State
(events do not carry capabilities), and it refreshes the State before its ``valid_until`` runs out. When the
daemon cannot be reached, or the State it holds is past ``valid_until``, the client reports the fallback level and
capabilities instead of stale data, reconnects with capped exponential backoff, and resynchronises from a fresh
``snapshot``. It needs only aiohttp and the standard library (and redis-py for the Redis source)::

    async with ServiceLevelClient("http://127.0.0.1:8765", fallback_level="cache_only") as levels:
        if levels.allows("chat"):
            ...
        async for change in levels.changes():
            print(change.previous, "->", change.level)

What to report when the daemon cannot be trusted is the app's choice (``failure_mode``): ``fail_safe`` (the
default) reports the fallback at once; ``fail_open`` keeps the last level the daemon published for up to
``fail_open_max`` seconds past its ``valid_until`` (a crash-looping sidecar then does not pause the app), then
falls back. ``SyncServiceLevelClient`` (failsoft.sync_client) is the same for WSGI apps; a ``redis://`` URL with
``service=`` reads the daemon's Redis publication instead of its HTTP port (see docs/client.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp

from failsoft.redis_source import RedisSource
from failsoft.reporting import Reporter

if TYPE_CHECKING:
    from failsoft.sync_client import SyncServiceLevelClient  # noqa: F401 - re-exported, see __getattr__

log = logging.getLogger("failsoft.client")

DEFAULT_URL = "http://127.0.0.1:8765"
UNKNOWN = "unknown"
FAIL_SAFE, FAIL_OPEN = "fail_safe", "fail_open"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
CHANGES_BUFFER = 1000  # changes an ``async for`` consumer may fall behind before the oldest are dropped
_REFRESH_AT = 2 / 3  # refresh the State when this much of its validity has passed
_MIN_REFRESH = 0.2


@dataclass(frozen=True, slots=True)
class Change:
    """One thing the app may react to, with the level the client reports after it.

    ``type`` is the daemon's event type (``level_changed``, ``dependency_changed``, ``llm_failover``,
    ``override_set``, ``override_cleared``), ``snapshot`` (a fresh State after connecting), ``resync`` (Redis
    source: a fresh State after a gap), or ``unreachable`` (the connection was lost: the fallback, or with
    ``fail_open`` the last level, is reported until the next snapshot). ``event`` is the daemon's event,
    the State for a snapshot, or ``{"at", "reason"}`` for unreachable.
    """

    type: str
    level: str
    previous: str
    capabilities: tuple[str, ...]
    event: Mapping[str, Any]
    state: Mapping[str, Any] | None = None

    @property
    def seq(self) -> int | None:
        """The daemon's seq for this change, when it has one."""
        seq = self.event.get("seq")
        return seq if isinstance(seq, int) else None


class DaemonUnavailable(Exception):
    """The daemon did not answer as expected (the message says how); the client reconnects."""


@dataclass
class _Held:
    """The State the client holds and when to stop trusting it."""

    state: dict[str, Any]
    valid_until: float  # epoch seconds
    validity: float  # how long the daemon says a copy may be trusted (valid_until - updated_at)
    received: float = field(default_factory=time.monotonic)


class ChangeStream:
    """``async for change in client.changes()``: registered when created, so no change is missed from then on."""

    def __init__(self, client: ServiceLevelClient) -> None:
        self._client = client
        self._queue: asyncio.Queue[Change | None] = asyncio.Queue(maxsize=CHANGES_BUFFER)
        self._ended = False
        client._streams.add(self)

    def put(self, change: Change | None) -> None:
        """Queue a change (None ends the iteration); a consumer too far behind loses the oldest."""
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(change)

    def __aiter__(self) -> ChangeStream:
        """This object."""
        return self

    async def __anext__(self) -> Change:
        """The next change; ends when the client is closed."""
        item = None if self._ended else await self._queue.get()
        if item is None:
            self._ended = True
            self.close()
            raise StopAsyncIteration
        return item

    def close(self) -> None:
        """Stop receiving changes."""
        self._client._streams.discard(self)


class ServiceLevelClient:
    """The daemon's State in memory, followed over SSE; a configurable fallback when it cannot be trusted."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        fallback_level: str = "cache_only",
        fallback_capabilities: Iterable[str] = (),
        timeout: float = 5.0,
        idle_timeout: float = 40.0,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        session: aiohttp.ClientSession | None = None,
        wall_clock: Callable[[], float] = time.time,
        failure_mode: str = FAIL_SAFE,
        fail_open_max: float = 300.0,
        service: str | None = None,
        prefix: str = "failsoft",
    ) -> None:
        if failure_mode not in (FAIL_SAFE, FAIL_OPEN):
            raise ValueError(f"failure_mode must be {FAIL_SAFE!r} or {FAIL_OPEN!r}, got {failure_mode!r}")
        if fail_open_max < 0:
            raise ValueError("fail_open_max must be 0 or more seconds")
        self.failure_mode = failure_mode
        self.fail_open_max = fail_open_max  # fail_open: how long past valid_until the last level is still reported
        # The Redis source: the daemon's `publish.redis` key and channel, for apps that cannot reach its port.
        self._redis: RedisSource | None = None
        if url.startswith(REDIS_SCHEMES):
            if not service:
                raise ValueError("a redis:// URL needs service= (the daemon's `service`, part of its key names)")
            self._redis = RedisSource(url, f"{prefix}:{service}")
        self.url = url.rstrip("/")
        self.fallback_level = fallback_level
        self.fallback_capabilities = tuple(fallback_capabilities)
        self.timeout = timeout  # connecting, and each State fetch
        self.idle_timeout = idle_timeout  # no byte (not even a keep-alive comment) for this long: reconnect
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._wall = wall_clock
        self._session = session
        self._own_session = session is None
        self._held: _Held | None = None  # the newest State fetched (may be a few events ahead of the stream)
        # What is reported: (level, capabilities) as of the last event handed out, so that each change says
        # exactly which level it moved from and to, even when the State fetched for it was already newer.
        self._view: tuple[str, tuple[str, ...]] | None = None
        self._capabilities_of: dict[str, tuple[str, ...]] = {}  # learnt from every State of this boot
        self._connected = False
        self._last_event: tuple[str, int] | None = None  # (boot, seq) of the newest event handed out
        self.failed_attempts = 0
        self.last_error: str | None = None
        self._callbacks: list[Callable[[Change], None]] = []
        self._streams: set[ChangeStream] = set()
        self._progress: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._reporter: Reporter | None = None

    # -- reads: no IO ----------------------------------------------------------------------------------------

    @property
    def fresh(self) -> bool:
        """True while connected to the daemon and holding a State before its ``valid_until``."""
        held = self._held
        return self._connected and held is not None and self._wall() < held.valid_until

    @property
    def state(self) -> Mapping[str, Any] | None:
        """The daemon's State while it can be trusted, else None."""
        return self._held.state if self.fresh and self._held is not None else None

    @property
    def level(self) -> str:
        """The service level, or the fallback level when the daemon is unreachable or its State too old."""
        view = self._reported()
        return view[0] if view is not None else self.fallback_level

    @property
    def capabilities(self) -> tuple[str, ...]:
        """What the app may do now (the policy's list for the level), or the fallback capabilities."""
        view = self._reported()
        return view[1] if view is not None else self.fallback_capabilities

    @property
    def serving(self) -> str:
        """``live`` (a fresh State), ``stale`` (fail_open: the last level, the daemon unreachable) or ``fallback``."""
        if self._reported() is None:
            return "fallback"
        return "live" if self.fresh else "stale"

    def _reported(self) -> tuple[str, tuple[str, ...]] | None:
        """The (level, capabilities) to report, or None for the fallback."""
        view = self._view
        if view is None or view[0] == UNKNOWN:
            return None
        if self.fresh:
            return view
        held = self._held
        if self.failure_mode == FAIL_OPEN and held is not None and self._wall() < held.valid_until + self.fail_open_max:
            return view  # fail_open: the daemon's last word, for a bounded time
        return None

    def allows(self, capability: str) -> bool:
        """Whether ``capability`` (e.g. ``"chat"``) is allowed now."""
        return capability in self.capabilities

    # -- reporting the app's calls (failsoft.reporting) -------------------------------------------------------

    @property
    def reporter(self) -> Reporter:
        """The background reporter of call outcomes to this daemon (made on first use); ``reporter.call(dep)`` and
        ``reporter.track(dep)`` time a call and report it."""
        if self._redis is not None:  # reports go to the sidecar's port, which a Redis reader does not have
            raise ValueError("a client reading Redis cannot send reports: use Reporter('http://<sidecar>:8765')")
        if self._reporter is None:
            self._reporter = Reporter(self.url)
        return self._reporter

    def report(self, dependency: str, ok: bool, *, reason: str | None = None, latency_ms: float | None = None,
               retry_after: float | str | None = None) -> None:
        """Report one call outcome (``POST /report``, batched in the background): never blocks, never raises."""
        self.reporter.report(dependency, ok, reason=reason, latency_ms=latency_ms, retry_after=retry_after)

    # -- following changes -----------------------------------------------------------------------------------

    def on_change(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Call ``callback(change)`` on every change (in the client's task: keep it short). Returns an undo."""
        self._callbacks.append(callback)

        def undo() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return undo

    def changes(self) -> ChangeStream:
        """An async iterator of changes from now on; it ends when the client is closed."""
        return ChangeStream(self)

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start following the daemon in the background (returns at once; see ``wait_ready``)."""
        if self._task is not None:
            return
        if self._session is None and self._redis is None:
            self._session = aiohttp.ClientSession()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="failsoft-client")

    # ASYNC109: a deadline argument reads better here than asking every app to wrap this in asyncio.timeout.
    async def wait_ready(self, timeout: float, *, attempts: int | None = None) -> bool:  # noqa: ASYNC109
        """Wait until a fresh State is held: True, or False after ``timeout`` s or ``attempts`` failed connections."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.fresh:
            remaining = deadline - loop.time()
            if remaining <= 0 or (attempts is not None and self.failed_attempts >= attempts):
                return False
            if self._progress is None or self._progress.done():
                self._progress = loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._progress), remaining)
        return True

    async def aclose(self) -> None:
        """Stop following, end every ``changes()`` iterator, close the HTTP session if the client made it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._connected = False
        if self._reporter is not None:
            await self._reporter.aclose()
        for stream in list(self._streams):
            stream.put(None)
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> ServiceLevelClient:
        """``start()``."""
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """``aclose()``."""
        await self.aclose()

    # -- the background task ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.backoff_initial
        while True:
            try:
                await self._follow()
                reason = "the daemon closed the event stream"
            except Exception as exc:  # noqa: BLE001 - whatever ended the connection, the answer is to reconnect
                reason = _describe(exc)
                log.debug("failsoft connection ended: %s", reason)
            if self._connected:
                delay = self.backoff_initial  # it worked for a while: come back quickly
            else:
                self.failed_attempts += 1
            self.last_error = reason
            self._lost(reason)
            await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311 - jitter, not crypto
            delay = min(self.backoff_max, delay * 2)

    async def _follow(self) -> None:
        """One connection: read the stream while refreshing the State; returns or raises when it ends."""
        if self._redis is not None:
            async with self._redis.connect(self.timeout) as events:
                await self._dispatch("snapshot", await self._redis.state())
                await self._until_first_ends(self._read_redis(events), self._refresh())
            return
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=self.idle_timeout)
        async with self._session.get(self.url + "/service-level/events", timeout=timeout,
                                     headers={"Accept": "text/event-stream"}) as resp:
            if resp.status != 200 or not resp.content_type.startswith("text/event-stream"):
                raise DaemonUnavailable(f"GET /service-level/events answered {resp.status} {resp.content_type}")
            await self._until_first_ends(self._read(resp), self._refresh())

    @staticmethod
    async def _until_first_ends(*coros: Any) -> None:
        """Run the reader and the refresher together; when one ends, stop the other and raise what ended it."""
        tasks = [asyncio.ensure_future(c) for c in coros]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()  # the failure that ended this connection, if any

    async def _read_redis(self, events: AsyncIterator[bytes]) -> None:
        """Events from the Redis channel, with the gap rules of a reader that cannot ask for a replay.

        ``seq`` counts per ``boot``: an event from another boot, or one that skips a seq, means something was
        missed, so the State is read again from the key (a ``resync``); a ``resync`` event carries the State.
        """
        async for data in events:
            body = json.loads(data)
            if not isinstance(body, dict):
                raise DaemonUnavailable("a Redis event that is not a JSON object")
            boot, seq, last = str(body.get("boot")), body.get("seq"), self._last_event
            if body.get("type") == "resync" and isinstance(body.get("state"), dict):
                await self._dispatch("resync", json.dumps(body["state"]).encode())
            elif isinstance(seq, int) and last is not None and (boot != last[0] or seq > last[1] + 1):
                await self._dispatch("resync", await self._redis_state())
            else:
                await self._dispatch(str(body.get("type")), data)

    async def _redis_state(self) -> bytes:
        assert self._redis is not None
        return await self._redis.state()

    async def _read(self, resp: aiohttp.ClientResponse) -> None:
        """Parse Server-Sent Events (``event``/``data`` lines, comments, blank line = dispatch)."""
        event_type = "message"
        data: list[bytes] = []
        async for raw in resp.content:
            line = raw.rstrip(b"\r\n")
            if not line:
                if data:
                    await self._dispatch(event_type, b"\n".join(data))
                event_type, data = "message", []
            elif line.startswith(b":"):
                continue  # a keep-alive comment: the read timeout restarts, nothing else to do
            else:
                name, _, value = line.partition(b":")
                value = value.removeprefix(b" ")
                if name == b"event":
                    event_type = value.decode()
                elif name == b"data":
                    data.append(value)

    async def _dispatch(self, event_type: str, data: bytes) -> None:
        body = json.loads(data)
        if not isinstance(body, dict):
            raise DaemonUnavailable(f"a {event_type} event that is not a JSON object")
        if event_type in ("snapshot", "resync"):
            before = self.level
            self._hold(body, reset=True)
            self._view = (str(body.get("level")), tuple(body.get("capabilities") or ()))
            self._connected = True
            if isinstance(body.get("seq"), int):
                self._last_event = (str(body.get("boot")), body["seq"])
            self._signal_progress()
            self._emit(Change(event_type, self.level, before, self.capabilities, body, self.state))
            return
        boot, seq = str(body.get("boot")), body.get("seq")
        last = self._last_event
        if not isinstance(seq, int) or (last is not None and last[0] == boot and seq <= last[1]):
            return  # already handed out (or not an event at all)
        before = self.level
        held = self._held
        if held is None or held.state.get("boot") != boot or int(held.state.get("seq", -1)) < seq:
            self._hold(await self._fetch_state())  # events carry the level but not the capabilities
        if event_type == "level_changed" and isinstance(body.get("level"), str):
            level = body["level"]
            # Unknown only if the level came and went before any State showed it: be as careful as the fallback.
            self._view = (level, self._capabilities_of.get(level, self.fallback_capabilities))
        self._last_event = (boot, seq)
        self._emit(Change(event_type, self.level, before, self.capabilities, body, self.state))

    async def _refresh(self) -> None:
        """Fetch the State before its ``valid_until``, so that a quiet stream does not look like a stale one."""
        while True:
            held = self._held
            wait = _MIN_REFRESH if held is None else held.received + held.validity * _REFRESH_AT - time.monotonic()
            await asyncio.sleep(max(_MIN_REFRESH, wait))
            held = self._held
            if held is None or not self._connected:
                continue  # no snapshot on this connection yet
            if self._wall() >= held.valid_until:
                raise DaemonUnavailable("the State is past its valid_until")
            state = await self._fetch_state()
            current = held.state
            # Only the same State renewed: a newer one arrives through the stream with its event.
            if (state.get("boot"), state.get("seq")) == (current.get("boot"), current.get("seq")):
                self._hold(state)

    async def _fetch_state(self) -> dict[str, Any]:
        if self._redis is not None:
            body = json.loads(await self._redis.state())
            if not isinstance(body, dict) or "seq" not in body:
                raise DaemonUnavailable("the Redis state key does not hold a State")
            return body
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with self._session.get(self.url + "/service-level", timeout=timeout) as resp:
            if resp.status not in (200, 503):  # 503: starting, the body is still a State with level "unknown"
                raise DaemonUnavailable(f"GET /service-level answered {resp.status}")
            body = await resp.json(content_type=None)
        if not isinstance(body, dict) or "seq" not in body:
            raise DaemonUnavailable("GET /service-level did not answer with a State")
        return body

    # -- bookkeeping -----------------------------------------------------------------------------------------

    def _hold(self, state: dict[str, Any], *, reset: bool = False) -> None:
        if reset or (self._held is not None and self._held.state.get("boot") != state.get("boot")):
            self._capabilities_of = {}  # another daemon (or a restart): its policy may differ
        if isinstance(state.get("level"), str):
            self._capabilities_of[state["level"]] = tuple(state.get("capabilities") or ())
        valid_until = _epoch(state.get("valid_until"))
        updated_at = _epoch(state.get("updated_at"))
        validity = max(1.0, valid_until - updated_at) if valid_until and updated_at else 15.0
        self._held = _Held(state, valid_until or self._wall() + validity, validity)

    def _lost(self, reason: str) -> None:
        self._signal_progress()
        if not self._connected:
            return
        before = self.level
        self._connected = False
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self._emit(Change("unreachable", self.level, before, self.capabilities, {"at": now, "reason": reason}))

    def _emit(self, change: Change) -> None:
        for callback in list(self._callbacks):
            try:
                callback(change)
            except Exception:
                log.exception("a failsoft on_change callback failed")
        for stream in list(self._streams):
            stream.put(change)

    def _signal_progress(self) -> None:
        if self._progress is not None and not self._progress.done():
            self._progress.set_result(None)


def _epoch(text: Any) -> float:
    if not isinstance(text, str):
        return 0.0
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _dependency_change(e: Mapping[str, Any]) -> str:
    """``db healthy -> down (breaker open)``, or ``db still down, breaker half_open`` when only the breaker moved."""
    if e.get("state") == e.get("previous"):
        return f"{e.get('dependency')} still {e.get('state')}, breaker {e.get('breaker')}"
    return f"{e.get('dependency')} {e.get('previous')} -> {e.get('state')} (breaker {e.get('breaker')})"


def format_change(change: Change) -> str:
    """One line for ``failsoft watch``: ``<at> seq=<n> <type> <what changed> (<reason>)``."""
    e = change.event
    head = str(e.get("at") or e.get("updated_at") or "")
    if change.seq is not None:
        head += f" seq={change.seq}"
    what = {
        "level_changed": lambda: f"{e.get('previous')} -> {e.get('level')}",
        "dependency_changed": lambda: _dependency_change(e),
        "llm_failover": lambda: f"{e.get('previous')} -> {e.get('active_llm')}",
        "override_set": lambda: f"{e.get('level')} until {e.get('until')}",
        "override_cleared": lambda: str(e.get("level")),
        "snapshot": lambda: f"level={e.get('level')}",
        "resync": lambda: f"level={e.get('level')}",
        "unreachable": lambda: f"reporting {change.level} until the daemon answers",
    }.get(change.type, lambda: "")()
    line = f"{head} {change.type} {what}".rstrip()
    return f"{line} ({e['reason']})" if e.get("reason") else line




def __getattr__(name: str) -> Any:
    """``from failsoft.client import SyncServiceLevelClient``: the synchronous client lives in its own module (which
    imports this one), loaded on first use."""
    if name == "SyncServiceLevelClient":
        from failsoft.sync_client import SyncServiceLevelClient

        return SyncServiceLevelClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
