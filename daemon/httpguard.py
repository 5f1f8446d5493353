"""The HTTP server's defences: a connection cap with a descriptor reserve, timeouts, parser limits, and client
errors answered with the contract's error body and logged without a traceback, rate-limited.

The probes must not share fate with the HTTP server: a flood of idle connections must not take the descriptors
a probe needs (it would fail with EMFILE and publish a false outage), and a flood of malformed requests must not
spend the event loop's time on tracebacks and log lines. See ``docs/security.md``.
"""

from __future__ import annotations

import asyncio
import resource
import socket
from typing import Any, cast

import orjson
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from failsoft.daemon import limits
from failsoft.daemon.api import error
from failsoft.daemon.httpdeadline import Handler
from failsoft.daemon.logguard import RateLimit, excerpt

log = structlog.get_logger("failsoft.http")

# aiohttp's own limits, handed to every connection's handler (and to the runner, so both agree).
HANDLER_LIMITS: dict[str, Any] = {
    "keepalive_timeout": limits.HTTP_IDLE_TIMEOUT,
    "max_line_size": limits.HTTP_MAX_LINE,
    "max_field_size": limits.HTTP_MAX_FIELD,
    "max_headers": limits.HTTP_MAX_HEADERS,
}


def raise_fd_limit(target: int = limits.FD_TARGET) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``target`` (never above the hard limit); the new soft limit.

    Many systems start processes at a soft limit of 1024 with a hard limit far above it: 1,100 idle clients were
    enough to exhaust it. Raising it is allowed without privileges.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = target if hard == resource.RLIM_INFINITY else min(target, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):  # a container that forbids it: keep the soft limit, the cap follows it
            pass
    return int(soft) if soft != resource.RLIM_INFINITY else target


def connection_cap(fd_limit: int) -> int:
    """How many HTTP connections may be open at once with ``fd_limit`` descriptors: the reserve stays free."""
    return max(limits.HTTP_MIN_CONNECTIONS, min(limits.HTTP_MAX_CONNECTIONS, fd_limit - limits.FD_RESERVE))


def _refusal_bytes() -> bytes:
    body = orjson.dumps({"error": {"code": "too_many_connections",
                                   "message": "the daemon has too many open connections; try again shortly"}})
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


REFUSAL = _refusal_bytes()


class _Refusal(asyncio.Protocol):
    """A connection over the cap when every open one is busy: a 503 with the error body is written at once and the
    connection closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not isinstance(transport, asyncio.WriteTransport): uvloop's transports do not derive from asyncio's classes.
        cast(asyncio.Transport, transport).write(REFUSAL)
        transport.close()


class _Handler(RequestHandler):
    """aiohttp's connection handler, with client errors answered as JSON and logged as one short warning."""

    client_errors: RateLimit
    live: dict[RequestHandler, None]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start serving, with a deadline for the first request's head. Recent aiohttp also starts its keep-alive
        timer at connection time (aio-libs/aiohttp#13681); older releases start it only after a first answer, so
        a silent or slowloris client would be held for ever: this holds whichever is installed."""
        super().connection_made(transport)
        self._first_request_timer = asyncio.get_running_loop().call_later(
            limits.HTTP_IDLE_TIMEOUT, self._first_request_overdue)

    def _first_request_overdue(self) -> None:
        if not getattr(self, "_request_count", 1):  # no complete request head parsed yet
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        """The connection ended: it no longer counts against the cap."""
        self.live.pop(self, None)
        timer = getattr(self, "_first_request_timer", None)
        if timer is not None:
            timer.cancel()
        super().connection_lost(exc)

    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None,
    ) -> web.StreamResponse:
        """A request aiohttp could not parse is the client's error: a 4xx with the contract's error body and one
        warning line without a traceback (at most a few per period); anything else is aiohttp's usual answer."""
        if not isinstance(exc, HttpProcessingError) or status >= 500:
            return super().handle_error(request, status, exc, message)
        suppressed = self.client_errors.allow()
        if suppressed is not None:
            detail = excerpt(str(getattr(exc, "message", "") or exc))
            log.warning("bad_request", peer=str(self.peername), error=type(exc).__name__, detail=detail,
                        **({"suppressed": suppressed} if suppressed else {}))
        if request.writer.output_size > 0:
            raise ConnectionError("the answer was already under way")
        resp = error(status, "bad_request", f"the request is not valid HTTP/1.1 ({type(exc).__name__})")
        resp.force_close()
        return resp


def checked_accept(handler: Handler) -> Handler:
    """``handler`` (prometheus_client's ``/metrics``) behind a check of the Accept header it would choke on.

    prometheus_client raises TypeError for ``Accept: text/plain; version=abc`` (it compares the version as a
    number); that is the client's mistake, so it gets a 400 naming the header instead of a 500 and a traceback.
    """
    from prometheus_client.exposition import choose_encoder

    async def metrics(request: web.Request) -> web.StreamResponse:
        accept = request.headers.get("Accept", "")
        try:
            choose_encoder(accept)
        except (TypeError, ValueError):
            return error(400, "bad_accept", f"Accept: cannot use {excerpt(accept, 60)!r}; send text/plain or "
                                            "application/openmetrics-text with a version like 1.0.0")
        return await handler(request)

    return metrics


class GuardedSite(web.BaseSite):
    """A TCP site whose connections are capped and handled by :class:`_Handler`. At the cap, a new connection
    takes the place of the oldest idle one; when none is idle it gets a 503 and is closed.

    ``max_connections`` defaults to what the descriptor limit allows after the reserve for probes.
    """

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, max_connections: int | None = None,
                 handler_kwargs: dict[str, Any] | None = None,
                 backlog: int = limits.HTTP_ACCEPT_BACKLOG) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port = host, port
        self.max_connections = max_connections or connection_cap(raise_fd_limit())
        self._kwargs = {"access_log": None, **HANDLER_LIMITS, **(handler_kwargs or {})}
        self._live: dict[RequestHandler, None] = {}  # insertion order: oldest first
        self._client_errors = RateLimit()
        self._refusals = RateLimit()
        self.refused = 0
        self.fd_limit = 0
        self.evicted = 0

    @property
    def name(self) -> str:
        """The address, as aiohttp's sites name themselves."""
        return f"http://{self._host}:{self._port}"

    @property
    def open_connections(self) -> int:
        """HTTP connections open now (accepted and not yet closed)."""
        return len(self._live)

    async def start(self) -> None:
        """Listen; every accepted connection goes through the cap."""
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, self._host, self._port, backlog=self._backlog, reuse_address=True)
        # asyncio uses one number both as the kernel's queue of connections not yet accepted and as how many it
        # accepts per loop iteration. The second must stay small (see limits); the first may be long, so that a
        # burst of clients waits in the kernel (costing no descriptor) instead of retrying its SYN a second later.
        for listening in self._server.sockets:
            twin = socket.fromfd(listening.fileno(), listening.family, listening.type)
            try:
                twin.listen(limits.HTTP_LISTEN_QUEUE)
            finally:
                twin.close()
        self.fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]  # the daemon's "listening" line says both

    def _protocol(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None
        if len(self._live) >= self.max_connections and not self._evict_idle():
            self.refused += 1
            suppressed = self._refusals.allow()
            if suppressed is not None:
                log.warning("connection_refused", reason="too many open connections", cap=self.max_connections,
                            **({"suppressed": suppressed} if suppressed else {}))
            return _Refusal()
        handler = _Handler(server, loop=asyncio.get_running_loop(), **self._kwargs)
        handler.client_errors, handler.live = self._client_errors, self._live
        self._live[handler] = None
        return handler

    def _evict_idle(self) -> bool:
        """Close the oldest connection that is waiting for a request (idle keep-alive, or headers not complete),
        as nginx reuses its connections: a new client is served rather than one that sends nothing. Connections
        with a request under way (event streams, blocking queries) are never closed. False if there is none."""
        for handler in self._live:  # oldest first
            if not getattr(handler, "_request_in_progress", True):
                del self._live[handler]
                handler.force_close()
                self.evicted += 1
                return True
        return False
