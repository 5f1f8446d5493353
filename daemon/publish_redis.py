"""The State key, the pub/sub channel and the stream in Redis, kept in step and never in the daemon's way.

A hub listener (synchronous, O(events)) only records the newest State and queues the events; one background task
does all the IO on its own connection (never the probe's), with no client-side retries and a short deadline per
write. Each write is one MULTI/EXEC, sent whole before a reply is read: ``SET P:S:state`` with the newest State,
then ``PUBLISH`` and ``XADD`` per event, so the key, the channel and the stream move together and in seq order.

Delivery around an outage:

- Events are only dropped from the queue once their MULTI succeeded, so every event made while Redis was
  unreachable, or back up but not yet reconnected to, is published once it answers, in order. Only when more than
  ``BACKLOG`` events pile up are the oldest dropped (the State and the ``resync`` carry the truth then).
- An EXEC whose answer was lost may have been applied: the batch is sent again. Readers see a duplicate seq at
  worst, never a gap; the seq tells them which copy to skip.
- After a failed write, and whenever the State key turns out to be gone or the connection to have been replaced
  (redis-py silently reconnects when a restarted server closed the old one), the key is rewritten and a
  ``resync`` event is published and appended once the queue is caught up. It repeats the current seq (a
  Redis-only notice, not a change) and carries ``level`` and the whole ``state``, so that a reader can
  resynchronise without another round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from typing import Any

import orjson
import structlog
from redis.asyncio.connection import AbstractConnection as Connection
from redis.asyncio.connection import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from failsoft.daemon.clock import Clock, SystemClock, iso
from failsoft.daemon.config import PublishSettings
from failsoft.daemon.hub import Hub, Published, PublishedEvent
from failsoft.daemon.metrics import Metrics
from failsoft.daemon.redact import Redactor, url_password
from failsoft.daemon.state import SCHEMA_VERSION

log = structlog.get_logger("failsoft.publish")

SINK = "redis"
BACKLOG = 1024  # events held while Redis is away; as many as the hub's ring
BATCH = 256  # events per MULTI: bounds one transaction's size after an outage
STREAM_MAXLEN = 10_000
SOCKET_TIMEOUT = 1.0  # a hung Redis costs the publisher a second per attempt, and the daemon nothing
RETRY_MIN, RETRY_MAX = 0.1, 2.0  # reconnect backoff: a restarted Redis is noticed within 2 s
CLOSE_FLUSH = 0.5  # at shutdown, what can be flushed in this long is flushed


class RedisPublisher:
    """Publishes every State and event to Redis without ever blocking the daemon."""

    def __init__(
        self, settings: PublishSettings, service: str, hub: Hub, metrics: Metrics, clock: Clock | None = None
    ) -> None:
        self.settings = settings
        self.service = service
        self.hub = hub
        self.metrics = metrics
        self.clock = clock or SystemClock()
        base = f"{settings.prefix}:{service}"
        self.key, self.channel, self.stream = f"{base}:state", f"{base}:events", f"{base}:stream"
        self._ttl_ms = max(1, round(3 * settings.heartbeat * 1000))
        self._redact = Redactor([pw] if (pw := url_password(settings.redis_url)) else [])
        self._latest: Published | None = None
        self._backlog: deque[PublishedEvent] = deque()
        self._resync = False  # a resync is owed once the backlog is published
        self._failing = False  # between publish_failed and publish_resumed
        self._client_id: int | None = None  # the server's id for our connection, to notice a silent reconnect
        self._written = False  # the key was written at least once, so finding it missing means it was lost
        self._wake = asyncio.Event()
        self._closed = False  # set by aclose: the writer loop ends even if a library swallowed the cancellation
        self._task: asyncio.Task[None] | None = None
        self._conn: Connection | None = None  # its own connection, made at start (``_connection``)

    # -- the hub side: synchronous, never blocks, never raises into the state owner ------------------------

    def on_publish(self, published: Published, events: list[PublishedEvent]) -> None:
        """Hub listener: keep the newest State, queue the events, wake the writer when something changed."""
        first = self._latest is None
        self._latest = published
        if events:
            self._backlog.extend(events)
            overflow = len(self._backlog) - BACKLOG
            for _ in range(max(0, overflow)):
                self._backlog.popleft()
            if overflow > 0:
                self._resync = True  # readers missed events: tell them to resynchronise from the State
        if events or first:
            self._wake.set()

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Follow the hub and start the writer task; connecting happens in the background."""
        self._conn = _connection(self.settings.redis_url)
        self.hub.add_listener(self.on_publish)
        if self.hub.current is not None:
            self._latest = self.hub.current
        self._task = asyncio.get_running_loop().create_task(self._run(), name="publish:redis")

    async def aclose(self) -> None:
        """Flush what can be flushed quickly, then close the connection."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=CLOSE_FLUSH)
        if self._conn is None:
            return
        if self._backlog and not self._failing:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._write(), CLOSE_FLUSH)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._conn.disconnect(), CLOSE_FLUSH)

    # -- the writer task -------------------------------------------------------------------------------------

    async def _run(self) -> None:
        """Write on every change and every heartbeat; after a failure, retry with capped, jittered backoff."""
        loop = asyncio.get_running_loop()
        heartbeat = self.settings.heartbeat
        next_beat = loop.time()
        delay = RETRY_MIN
        # Not `while True`: a cancellation lost inside the client library (seen once in ~50 runs: the task wrote
        # again on a new connection after aclose) must not leave a writer heartbeating a dead sidecar's key.
        while not self._closed:
            if self._failing:
                await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311 - jitter, not crypto
            else:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that lands as the event is
                # set, and this loop would then outlive aclose().
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, next_beat - loop.time())):
                        await self._wake.wait()
            self._wake.clear()
            if self._closed:
                return
            if self._latest is None:
                next_beat = loop.time() + heartbeat
                continue
            try:
                await self._write()
            except Exception as exc:  # noqa: BLE001 - whatever failed, publishing must go on: counted, logged, retried
                self._failed(exc)
                delay = min(RETRY_MAX, delay * 2)
                continue
            delay = RETRY_MIN
            if self._backlog or self._resync:
                self._wake.set()  # more to send: go round again without waiting
            else:
                next_beat = loop.time() + heartbeat

    async def _write(self) -> None:
        """One MULTI: the newest State, the next batch of events, and the resync once caught up."""
        assert self._latest is not None
        latest = self._latest
        batch = [self._backlog[i] for i in range(min(BATCH, len(self._backlog)))]
        resync = self._resync and len(batch) == len(self._backlog)
        commands: list[tuple[str | int | bytes, ...]] = [
            ("EXISTS", self.key), ("SET", self.key, latest.body, "PX", self._ttl_ms)]
        bodies = [e.body for e in batch] + ([self._resync_body(latest)] if resync else [])
        for body in bodies:
            commands.append(("PUBLISH", self.channel, body))
            commands.append(("XADD", self.stream, "MAXLEN", "~", STREAM_MAXLEN, "*", "event", body))
        commands.append(("CLIENT", "ID"))
        replies = await self._transaction(commands)
        # Only now, and by seq (the listener may have trimmed the backlog meanwhile): a batch whose EXEC failed
        # stays queued and is sent again.
        while batch and self._backlog and self._backlog[0].seq <= batch[-1].seq:
            self._backlog.popleft()
        if resync:
            self._resync = False
            log.info("publish_resync", seq=latest.seq, service_level=latest.snapshot.level)
        self._succeeded(existed=bool(replies[0]), client_id=int(replies[-1]))

    async def _transaction(self, commands: list[tuple[str | int | bytes, ...]]) -> list[Any]:
        """``commands`` in one MULTI/EXEC on the publisher's own connection; EXEC's replies.

        The connection is held, not taken from a pool per write, and the transaction is written to the socket
        in this very step, before any reply is read: a change reaches Redis's subscribers ~0.5 ms sooner than
        through redis-py's pipeline, which takes a connection, checks it can read, and, with a socket timeout,
        writes from a task of its own a loop iteration later. One deadline bounds the whole exchange instead. Any
        error disconnects (a half-read reply must not be read as the next one's; the next write reconnects) and
        is raised for ``_failed``.
        """
        conn = self._conn
        assert conn is not None
        try:
            async with asyncio.timeout(SOCKET_TIMEOUT):
                await conn.send_packed_command(conn.pack_commands([("MULTI",), *commands, ("EXEC",)]),
                                               check_health=False)
                for _ in range(len(commands) + 1):  # +OK for MULTI, then +QUEUED for each command
                    await conn.read_response()
                return _exec_replies(await conn.read_response())
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            if isinstance(exc, TimeoutError):
                raise RedisTimeoutError(f"no answer from Redis within {SOCKET_TIMEOUT:g}s") from None
            raise

    def _resync_body(self, latest: Published) -> bytes:
        snap = latest.snapshot
        return orjson.dumps({
            "schema_version": SCHEMA_VERSION,
            "type": "resync", "service": snap.service, "boot": snap.boot, "seq": snap.seq,
            "at": iso(self.clock.now()), "level": snap.level, "state": orjson.Fragment(latest.body),
        })

    def _failed(self, exc: BaseException) -> None:
        self.metrics.publish_failed(SINK)
        self._resync = True
        self._client_id = None
        if not self._failing:  # one line per outage, not one per attempt
            self._failing = True
            log.warning("publish_failed", sink=SINK, error=self._redact(_describe(exc)),
                        pending_events=len(self._backlog))

    def _succeeded(self, *, existed: bool, client_id: int) -> None:
        replaced = self._client_id is not None and client_id != self._client_id
        if self._written and not self._failing and (replaced or not existed):
            # Lost without a failure we saw: the server restarted (or was flushed) between two writes, or the
            # connection was replaced. Subscribers may have missed something: resynchronise them.
            self._resync = True
            log.info("publish_reconnected", sink=SINK, key_lost=not existed, connection_replaced=replaced)
        self._client_id = client_id
        self._written = True
        if self._failing:
            self._failing = False
            log.info("publish_resumed", sink=SINK, seq=self._latest.seq if self._latest else None)


def _exec_replies(replies: Any) -> list[Any]:
    """EXEC's replies; ResponseError when the transaction or one of its commands failed."""
    if not isinstance(replies, list):
        raise ResponseError(f"EXEC answered {replies!r}")
    for reply in replies:
        if isinstance(reply, Exception):  # an error of one command inside the transaction
            raise reply
    return replies


def _connection(url: str) -> Connection:
    """The publisher's own connection (never the probe's), not connected yet: the first write connects, and the
    next one after a failure reconnects. redis-py retries by default (with back-off, seconds each): here a failed
    write is reported at once and retried by our own loop, which keeps the newest State meanwhile. No socket
    timeout: ``_transaction`` bounds each exchange with one deadline."""
    pool = ConnectionPool.from_url(url, socket_connect_timeout=SOCKET_TIMEOUT, retry=Retry(NoBackoff(), 0),
                                   health_check_interval=0, client_name="failsoft-publisher")
    conn: Connection = pool.make_connection()  # type: ignore[no-untyped-call]
    return conn


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"

