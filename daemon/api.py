"""The local HTTP API (aiohttp). Handlers only read the hub's published bytes; they never touch state."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import hdrs, web

from failsoft.daemon import cors, httpdeadline, limits
from failsoft.daemon.config import Config
from failsoft.daemon.httpdeadline import Handler
from failsoft.daemon.hub import Hub, Published
from failsoft.daemon.identity import etag_matches, index_is_current, parse_index
from failsoft.daemon.state import OverrideCommand
from failsoft.daemon.yamlread import parse_duration
from failsoft.policies.model import DependencyStatus

MAX_WAIT = 300.0  # a blocking query waits at most 5 minutes, as Consul's do
DEFAULT_WAIT = 300.0
# The durations the HTTP API takes (``wait``, a string ``ttl``), as its OpenAPI description says: a number with an
# optional unit (``30s``, ``250ms``, ``5m``, ``2h``).
HTTP_DURATION = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,3})?(?:ms|s|m|h)?")


@dataclass
class Runtime:
    """What the handlers share: the config, the hub, the owner's inbox, and the tasks to watch."""

    config: Config
    hub: Hub
    inbox: asyncio.Queue[DependencyStatus | OverrideCommand]
    tasks: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


RUNTIME = web.AppKey("runtime", Runtime)
JSON = "application/json"
_READS = frozenset({hdrs.METH_GET, hdrs.METH_HEAD})


def error(status: int, code: str, message: str, **headers: str) -> web.Response:
    """The contract's error body: ``{"error": {"code": ..., "message": ...}}``."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return web.Response(status=status, body=body, content_type=JSON, headers=headers)


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON answer."""
    return web.Response(status=status, body=orjson.dumps(data), content_type=JSON)


def guarded(handler: Handler, method: str) -> Handler:
    """``handler`` with every HTTP error it raises answered with the contract's JSON error body, and, when ``method``
    carries a body, under the body deadline (``httpdeadline``).

    A wrapper per route, not middlewares: aiohttp runs its middlewares on every request (ours and the one it adds to
    them), and they cost GET /service-level a tenth of its speed. That route is registered bare: it raises nothing.
    """
    inner = handler if method in httpdeadline.NO_BODY else httpdeadline.bounded(handler)

    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await inner(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _error_of(request, exc)

    return answer


def _error_of(request: web.Request, exc: web.HTTPException) -> web.Response:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return _method_not_allowed(request, exc.allowed_methods)
    if isinstance(exc, web.HTTPNotFound):
        return _not_found(request)
    return error(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)


def _method_not_allowed(request: web.Request, methods: Iterable[str]) -> web.Response:
    allowed = ", ".join(sorted(methods))
    return error(405, "method_not_allowed", f"{request.method} is not allowed here; use {allowed}", Allow=allowed)


def _not_found(request: web.BaseRequest) -> web.Response:
    return error(404, "not_found", f"no such endpoint: {request.path}")


async def _wrong_method(request: web.Request) -> web.Response:
    return _method_not_allowed(request, cors.allowed_methods(request))


async def _no_endpoint(request: web.Request) -> web.Response:
    return _not_found(request)


def _answer_the_rest(app: web.Application) -> None:
    """A known path asked with another method gets 405 and an unknown path 404, both as JSON errors: a route for
    any other method on every endpoint, and a last route for every other path (the router's own answers are
    plain text, and turning them into JSON would take a middleware)."""
    for resource in app.router.resources():
        if isinstance(resource, web.Resource):  # every route-based one (not a static folder: we have none)
            resource.add_route(hdrs.METH_ANY, _wrong_method)
    app.router.add_route(hdrs.METH_ANY, "/{path:.*}", _no_endpoint)


def parse_http_duration(raw: str) -> float:
    """Seconds from an HTTP API duration (``30s``, ``250ms``, ``5m``, ``2h``, ``1.5``); ValueError otherwise.

    Stricter than the config's durations (no spaces, no ``1m30s``, no exponent), so the OpenAPI pattern says
    exactly what is accepted.
    """
    if not HTTP_DURATION.fullmatch(raw):
        raise ValueError(raw)
    return parse_duration(raw)


def _plain_read(pub: Published | None, request: web.BaseRequest) -> web.Response:
    """A read without a query string: the body and the headers were built once when the State was published
    (``Published``), so an answer is a copy of ready-made headers and a reference to the bytes."""
    if pub is None:
        return error(503, "starting", "the daemon is starting")
    inm = request.headers.get(hdrs.IF_NONE_MATCH)
    if inm is not None and etag_matches(inm, pub.etag):
        return web.Response(status=304, headers=pub.not_modified)
    return web.Response(status=pub.status, body=pub.body, headers=pub.headers)


def service_level(rt: Runtime) -> Handler:
    """``GET /service-level``: the State; 304 on a matching ETag; a blocking query with ``index``/``wait``. It
    raises nothing (it needs no error wrapper, see ``guarded``)."""
    hub = rt.hub

    async def answer(request: web.Request) -> web.StreamResponse:
        if "?" not in request.raw_path:  # the raw request target: no URL object is built
            return _plain_read(hub.current, request)
        return await _blocking_query(request, rt)

    return answer


def front(rt: Runtime, routed: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
          ) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    """The server's request handler: ``GET`` or ``HEAD /service-level`` exactly, the request apps make most, is
    answered before routing (the router is a tenth of a request's cost); every other request is routed.

    Only without CORS (its headers are added by a hook of the routed answers). The same answer either way:
    ``_plain_read``; a path spelled otherwise (a query string, an escaped character) takes the routed handler.
    """
    hub = rt.hub

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if request.raw_path == "/service-level" and request.method in _READS:
            return _plain_read(hub.current, request)
        return await routed(request)

    return handle


async def _blocking_query(request: web.Request, rt: Runtime) -> web.StreamResponse:
    """``?index=N&wait=D``: wait for a State past ``index``, then answer as a plain read does."""
    raw = request.query.get("index")
    index = None if raw is None else parse_index(raw)
    if raw is not None and index is None:
        return error(400, "bad_request", f"index must be <boot>-<seq> (the ETag's tag) or a seq, got {raw[:40]!r}")
    wait = DEFAULT_WAIT
    if "wait" in request.query:
        try:
            wait = min(parse_http_duration(request.query["wait"]), MAX_WAIT)
        except ValueError:
            got = request.query["wait"][:40]
            return error(400, "bad_request", f"wait must be a duration like 30s or 5m, got {got!r}")
    pub = rt.hub.current
    # Only an index naming the current State waits: one from another boot (or above the seq: from before a
    # restart) answers at once, so the reader sees the new `boot` now rather than after a whole wait.
    if index is not None and pub is not None and index_is_current(index, pub.snapshot.boot, pub.seq):
        pub = await rt.hub.wait_past(pub.seq, wait)
    if pub is None:
        return error(503, "starting", "the daemon is starting")
    if etag_matches(request.headers.get("If-None-Match"), pub.etag):
        return web.Response(status=304, headers=pub.not_modified)
    return web.Response(status=pub.status, body=pub.body, headers=pub.headers)


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: 200 while the owner and every scheduler task run. Never looks at dependencies."""
    rt = request.app[RUNTIME]
    dead = sorted(name for name, task in rt.tasks.items() if task.done())
    if dead:
        return error(503, "not_running", f"tasks stopped: {', '.join(dead)}")
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """``GET /readyz``: 200 once every dependency was probed once and a level was computed."""
    pub = request.app[RUNTIME].hub.current
    if pub is None or not pub.snapshot.ready or pub.snapshot.level == "unknown":
        waiting = [] if pub is None else [n for n, d in pub.snapshot.dependencies.items() if not d.probes]
        return error(503, "not_ready", "waiting for the first probe of: " + (", ".join(waiting) or "the level"))
    return json_response({"status": "ready", "level": pub.snapshot.level})


def build_app(runtime: Runtime, extra_routes: list[web.RouteDef] | None = None) -> web.Application:
    """The aiohttp application with every route, each ``guarded`` but the hot path, and no middleware (unless
    CORS is configured: its preflight needs one)."""
    app = web.Application(client_max_size=limits.HTTP_MAX_BODY)
    app[RUNTIME] = runtime
    app.router.add_get("/service-level", service_level(runtime))
    routes = [web.get("/healthz", healthz), web.get("/readyz", readyz), *(extra_routes or [])]
    app.add_routes([web.RouteDef(r.method, r.path, guarded(r.handler, r.method), r.kwargs) for r in routes])
    _answer_the_rest(app)
    cors.install(app, runtime.config.http.cors_origins)
    return app
