"""``/service-level/events`` (Server-Sent Events), ``/history`` and ``/override``.

Streams are plain aiohttp ``StreamResponse``s that write the bytes the hub built once per event
(``PublishedEvent.frame``). aiohttp-sse was not used: it formats every message again for every connection and runs
a ping task per connection, which is exactly what a thousand idle subscribers must not cost.
"""

from __future__ import annotations

import asyncio
import hmac
import re
from typing import Any, cast

import orjson
import structlog
from aiohttp import web

from failsoft.daemon import fanout
from failsoft.daemon.api import JSON, RUNTIME, Runtime, error, parse_http_duration
from failsoft.daemon.hub import RING_SIZE, Published, PublishedEvent, Subscription, sse_frame, state_id
from failsoft.daemon.identity import parse_state_id
from failsoft.daemon.state import OverrideCommand
from failsoft.daemon.yamlread import parse_duration

log = structlog.get_logger("failsoft.stream")

KEEPALIVE = 15.0  # a comment line this often keeps proxies (and our own client) from calling the stream dead
STREAM_QUEUE = 256  # events a stream may fall behind before it is dropped (references to shared frames: cheap)
MAX_STREAMS = 10_000  # beyond this, new streams get 503 rather than exhausting memory or file descriptors
DEFAULT_HISTORY = 100
DEFAULT_TTL = 30 * 60.0  # an override without a ttl lasts 30 minutes: forgetting one must not be forever
MAX_TTL = 7 * 24 * 3600.0
MAX_REASON = 300
MAX_OVERRIDE_BODY = 4096
OVERRIDE_KEYS = ("level", "ttl", "reason")
OWNER_TIMEOUT = 5.0  # the state owner answers in microseconds; this only guards against a wedged daemon
_DIGITS = re.compile(r"[0-9]{1,18}")
_KEEPALIVE_FRAME = b": keep-alive\n\n"
STARTING_WAIT = 5.0  # how long a stream opened before the first State waits for it
RETRY_MS = 1000  # the SSE reconnection time a browser uses after the stream ends (its default is about 3-5 s)
# Sent as the first line of the first message (not a message of its own, which some readers turn into an empty
# event): every EventSource then reconnects after RETRY_MS, e.g. to the next process after a restart.
_RETRY_FIELD = b"retry: %d\n" % RETRY_MS


class BadRequest(Exception):
    """A request the client must fix; ``str(exc)`` says how."""


class EventStreams:
    """The SSE endpoint and the open streams it serves, so that shutdown can end them all at once."""

    def __init__(
        self, keepalive: float = KEEPALIVE, queue_size: int = STREAM_QUEUE, max_streams: int = MAX_STREAMS
    ) -> None:
        self.keepalive = keepalive
        self.queue_size = queue_size
        self.max_streams = max_streams
        self._open: set[Subscription] = set()
        self._closer: asyncio.Task[None] | None = None

    @property
    def open_streams(self) -> int:
        """How many streams are being served right now."""
        return len(self._open)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /service-level/events``: ``snapshot`` (or the replay after ``Last-Event-ID``), then every event."""
        rt = request.app[RUNTIME]
        pub = rt.hub.current
        if pub is None and not rt.stopping.is_set():
            # Listening starts a moment before the first State: wait for it, for a 503 would make a browser's
            # EventSource give up for good instead of reconnecting (as it does after a restart).
            pub = await rt.hub.wait_past(-1, STARTING_WAIT)
        if pub is None:
            if rt.stopping.is_set():
                return error(503, "stopping", "the daemon is shutting down")
            return error(503, "starting", "the daemon is starting")
        if len(self._open) >= self.max_streams:
            return error(503, "too_many_streams", f"{self.max_streams} event streams are open; try again later")
        if request.method == "HEAD":
            return await _head(request, pub)
        transport = request.transport
        # Subscribe before choosing the first frames, with no await in between: every event published from here
        # on is either in those frames or in the queue (the seq filter in ``_drain`` drops the overlap).
        sub = rt.hub.subscribe(self.queue_size, on_overflow=lambda: _drop(transport, self.queue_size))
        self._track(rt, sub)
        first, floor = _first_frames(rt, pub, request.headers.get("Last-Event-ID"))
        resp = _stream_response(pub)
        try:
            await resp.prepare(request)
            fanout.bound_send_buffer(transport)
            await resp.write(first)
            # Stopping: the current State, then the end of the stream (not a 503, after which a browser would
            # not reconnect), so that the reader comes back after ``retry:`` to the next process.
            if not rt.stopping.is_set():
                floor = await _catch_up(resp, sub, floor)
                if transport is not None:
                    # No await since the queue was found empty: every later event goes straight to the socket.
                    chunked = resp.headers.get("Transfer-Encoding", "").lower() == "chunked"
                    sub.deliver_directly(fanout.direct_writer(transport, floor, chunked))
                await self._follow(resp, sub, floor)
            await resp.write_eof()
        except ConnectionError:
            pass  # the reader went away, or was cut off for not reading: there is no one left to answer
        finally:
            sub.close()
            self._untrack(sub)
        return resp

    async def _follow(self, resp: web.StreamResponse, sub: Subscription, floor: int) -> None:
        loop = asyncio.get_running_loop()
        last_write = loop.time()
        while True:
            await sub.wait(max(0.0, last_write + self.keepalive - loop.time()))
            if sub.closed or sub.overflowed.is_set():
                return
            frames = _drain(sub, floor)
            if frames:
                floor = frames[-1].seq
                await resp.write(frames[0].frame if len(frames) == 1 else b"".join(f.frame for f in frames))
            elif loop.time() - last_write >= self.keepalive:
                await resp.write(_KEEPALIVE_FRAME)
            else:
                continue
            last_write = loop.time()

    def _track(self, rt: Runtime, sub: Subscription) -> None:
        self._open.add(sub)
        if self._closer is None:
            self._closer = asyncio.get_running_loop().create_task(self._close_all_on_stop(rt.stopping))

    def _untrack(self, sub: Subscription) -> None:
        self._open.discard(sub)
        if not self._open and self._closer is not None:
            self._closer.cancel()
            self._closer = None

    async def _close_all_on_stop(self, stopping: asyncio.Event) -> None:
        """One task for all streams (not one per stream): at shutdown, wake each so that it ends cleanly."""
        await stopping.wait()
        for sub in list(self._open):
            sub.close()


def _stream_response(pub: Published) -> web.StreamResponse:
    resp = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no",
        "X-Failsoft-Index": str(pub.seq),
    })
    resp.force_close()  # when the stream ends (shutdown, dropped), the connection ends with it
    return resp


async def _head(request: web.Request, pub: Published) -> web.StreamResponse:
    """``HEAD /service-level/events``: the stream's status and headers, no body, and the exchange ends."""
    resp = _stream_response(pub)
    await resp.prepare(request)
    await resp.write_eof()
    return resp


def _drop(transport: asyncio.BaseTransport | None, queued: int) -> None:
    """Cut off a reader that stopped reading: its write may be blocked, so only closing the socket frees it."""
    peer = transport.get_extra_info("peername") if transport is not None else None
    log.info("stream_dropped", reason="the reader fell too far behind", queued=queued, peer=str(peer))
    # Not isinstance(transport, asyncio.WriteTransport): uvloop's transports do not derive from asyncio's classes.
    if transport is not None:
        cast(asyncio.Transport, transport).abort()


async def _catch_up(resp: web.StreamResponse, sub: Subscription, floor: int) -> int:
    """Write what was queued while the first frames were being written, until the queue is empty; the new floor."""
    while frames := _drain(sub, floor):
        floor = frames[-1].seq
        await resp.write(b"".join(f.frame for f in frames))
    return floor


def _drain(sub: Subscription, floor: int) -> list[PublishedEvent]:
    out = []
    while not sub.queue.empty():
        event = sub.queue.get_nowait()
        if event.seq > floor:
            out.append(event)
    return out


def _first_frames(rt: Runtime, pub: Published, last_event_id: str | None) -> tuple[bytes, int]:
    """The frames a new stream starts with and the seq they reach, after the ``retry:`` field.

    The events after ``Last-Event-ID`` when it is ``<boot>-<seq>`` of this process and the ring still holds them
    all; otherwise (no id, another boot's -- the reader was connected before a restart --, a bare number, anything
    else, or one too old) a fresh ``snapshot``.
    """
    last = parse_state_id(last_event_id)
    same_boot = last is not None and last[0] == pub.snapshot.boot and last[1] <= pub.seq
    replay = rt.hub.events_after(last[1]) if last is not None and same_boot else None
    if replay is None:
        return _RETRY_FIELD + sse_frame("snapshot", state_id(pub.snapshot.boot, pub.seq), pub.body), pub.seq
    if not replay:
        # Nothing missed: an empty chunk would end a chunked response, so send a comment to open the stream. No
        # ``retry:`` here (it needs a message to ride on): this reader got it with the message that gave it its id.
        return _KEEPALIVE_FRAME, pub.seq
    return _RETRY_FIELD + b"".join(e.frame for e in replay), replay[-1].seq


# -- history ----------------------------------------------------------------------------------------------


async def history(request: web.Request) -> web.Response:
    """``GET /history?limit=N``: the last N events (default 100, at most the ring's 1024), oldest first."""
    rt = request.app[RUNTIME]
    raw = request.query.get("limit")
    limit = DEFAULT_HISTORY
    if raw is not None:
        if not _DIGITS.fullmatch(raw):
            return error(400, "bad_limit", f"limit must be a whole number from 0 to {RING_SIZE}, got {raw[:40]!r}")
        limit = min(int(raw), RING_SIZE)
    events = list(rt.hub.ring)[-limit:] if limit else []
    body = b"[" + b",".join(e.body for e in events) + b"]"  # the bytes serialised once at publish time
    seq = rt.hub.current.seq if rt.hub.current else 0
    return web.Response(body=body, content_type=JSON, headers={"X-Failsoft-Index": str(seq),
                                                               "Cache-Control": "no-cache"})


# -- override ---------------------------------------------------------------------------------------------


def _authorise(request: web.Request) -> web.Response | None:
    """None when the bearer token matches ``http.admin_token``, else the error to answer."""
    token = request.app[RUNTIME].config.http.admin_token
    if not token:
        return error(403, "admin_disabled", "admin endpoints are disabled: set http.admin_token")
    scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return error(401, "unauthorized", "send Authorization: Bearer <http.admin_token>",
                     **{"WWW-Authenticate": 'Bearer realm="failsoft"'})
    # Constant time, on bytes (compare_digest refuses non-ASCII str): the answer's timing says nothing.
    if not hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token.encode()):
        return error(403, "forbidden", "the bearer token is not the admin token")
    return None


def parse_override(body: bytes, levels: tuple[str, ...]) -> tuple[str, float, str]:
    """(level, ttl seconds, reason) from a ``POST /override`` body; BadRequest says what is wrong."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest('the body must be a JSON object like {"level": "cache_only", "ttl": "30m", '
                         '"reason": "db maintenance"}') from None
    if not isinstance(data, dict):
        raise BadRequest(f"the body must be a JSON object, got {type(data).__name__}")
    unknown = sorted(str(k)[:40] for k in data if k not in OVERRIDE_KEYS)
    if unknown:
        raise BadRequest(f"unknown key(s) {', '.join(unknown)}; expected {', '.join(OVERRIDE_KEYS)}")
    level = data.get("level")
    if level is None:
        raise BadRequest(f"level is required: one of {', '.join(levels)}")
    if not isinstance(level, str) or level not in levels:
        raise BadRequest(f"level must be one of {', '.join(levels)}, got {str(level)[:40]!r}")
    ttl = _ttl(data.get("ttl", DEFAULT_TTL))
    reason = data.get("reason", "manual override")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise BadRequest(f"reason must be a non-empty string of at most {MAX_REASON} characters")
    return level, ttl, reason.strip()


def _ttl(raw: Any) -> float:
    try:
        ttl = parse_http_duration(raw) if isinstance(raw, str) else parse_duration(raw)
    except ValueError:
        raise BadRequest(f"ttl must be a duration like 30m or 2h, got {str(raw)[:40]!r}") from None
    if not 0 < ttl <= MAX_TTL:
        raise BadRequest(f"ttl must be more than 0 and at most 168h (7 days), got {str(raw)[:40]!r}")
    return ttl


async def _read_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_OVERRIDE_BODY:
        raise web.HTTPRequestEntityTooLarge(MAX_OVERRIDE_BODY, request.content_length)
    body = await request.read()  # bounded by the app's client_max_size (a chunked body has no Content-Length)
    if len(body) > MAX_OVERRIDE_BODY:
        raise web.HTTPRequestEntityTooLarge(MAX_OVERRIDE_BODY, len(body))
    return body


async def _command(rt: Runtime, level: str | None, ttl: float = 0.0, reason: str = "") -> web.Response:
    """Hand the override to the state owner, wait for it to apply, answer with the State that followed."""
    if rt.stopping.is_set():
        return error(503, "stopping", "the daemon is shutting down")
    done: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
    rt.inbox.put_nowait(OverrideCommand(level, ttl, reason, done=done))
    try:
        await asyncio.wait_for(asyncio.shield(done), OWNER_TIMEOUT)
    except TimeoutError:
        return error(503, "busy", "the daemon did not apply the override in time; check GET /service-level")
    pub = rt.hub.current
    assert pub is not None  # the owner publishes right after resolving ``done``, before we run again
    return web.Response(body=pub.body, content_type=JSON, headers={"X-Failsoft-Index": str(pub.seq)})


async def set_override(request: web.Request) -> web.Response:
    """``POST /override``: force a level for ``ttl`` (default 30m, at most 7 days). Answers with the new State."""
    if (denied := _authorise(request)) is not None:
        return denied
    rt = request.app[RUNTIME]
    try:
        body = await _read_body(request)
    except web.HTTPRequestEntityTooLarge:
        return error(413, "body_too_large", f"the override body must be at most {MAX_OVERRIDE_BODY} bytes")
    try:
        level, ttl, reason = parse_override(body, rt.config.policy.levels)
    except BadRequest as exc:
        return error(400, "bad_override", str(exc))
    return await _command(rt, level, ttl, reason)


async def clear_override(request: web.Request) -> web.Response:
    """``DELETE /override``: end the override now (200 with the State also when none was set)."""
    if (denied := _authorise(request)) is not None:
        return denied
    return await _command(request.app[RUNTIME], None)


def routes(streams: EventStreams | None = None) -> list[web.RouteDef]:
    """The streaming, history and admin routes (every GET also answers HEAD)."""
    streams = streams or EventStreams()
    return [
        web.get("/service-level/events", streams.handle),
        web.get("/history", history),
        web.post("/override", set_override),
        web.delete("/override", clear_override),
    ]
