"""The local HTTP API (aiohttp). Handlers only read the hub's published bytes; they never touch state."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from failsoft.daemon import cors, httpdeadline, limits
from failsoft.daemon.config import Config
from failsoft.daemon.hub import Hub
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


def error(status: int, code: str, message: str, **headers: str) -> web.Response:
    """The contract's error body: ``{"error": {"code": ..., "message": ...}}``."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return web.Response(status=status, body=body, content_type=JSON, headers=headers)


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON answer."""
    return web.Response(status=status, body=orjson.dumps(data), content_type=JSON)


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn aiohttp's plain-text 404/405 (and any other HTTP error) into JSON errors."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        return error(405, "method_not_allowed", f"{request.method} is not allowed here; use {allowed}", Allow=allowed)
    except web.HTTPNotFound:
        return error(404, "not_found", f"no such endpoint: {request.path}")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)


def _query_index(request: web.Request) -> tuple[str | None, int] | None:
    raw = request.query.get("index")
    if raw is None:
        return None
    index = parse_index(raw)
    if index is None:
        raise web.HTTPBadRequest(text=f"index must be <boot>-<seq> (the ETag's tag) or a seq, got {raw[:40]!r}")
    return index


def parse_http_duration(raw: str) -> float:
    """Seconds from an HTTP API duration (``30s``, ``250ms``, ``5m``, ``2h``, ``1.5``); ValueError otherwise.

    Stricter than the config's durations (no spaces, no ``1m30s``, no exponent), so the OpenAPI pattern says
    exactly what is accepted.
    """
    if not HTTP_DURATION.fullmatch(raw):
        raise ValueError(raw)
    return parse_duration(raw)


async def service_level(request: web.Request) -> web.StreamResponse:
    """``GET /service-level``: the State; 304 on a matching ETag; a blocking query with ``index``/``wait``.

    The plain read (no query string) is the hot path: the body and the headers were built once when the State was
    published (``Published``), so an answer is a copy of ready-made headers and a reference to the bytes.
    """
    rt = request.app[RUNTIME]
    if not request.query_string:
        pub = rt.hub.current
        if pub is None:
            return error(503, "starting", "the daemon is starting")
        inm = request.headers.get("If-None-Match")
        if inm is not None and etag_matches(inm, pub.etag):
            return web.Response(status=304, headers=pub.not_modified)
        return web.Response(status=pub.status, body=pub.body, headers=pub.headers)
    return await _blocking_query(request, rt)


async def _blocking_query(request: web.Request, rt: Runtime) -> web.StreamResponse:
    """``?index=N&wait=D``: wait for a State past ``index``, then answer as a plain read does."""
    index = _query_index(request)
    wait = DEFAULT_WAIT
    if "wait" in request.query:
        try:
            wait = min(parse_http_duration(request.query["wait"]), MAX_WAIT)
        except ValueError:
            got = request.query["wait"][:40]
            raise web.HTTPBadRequest(text=f"wait must be a duration like 30s or 5m, got {got!r}") from None
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
    """The aiohttp application with every route."""
    app = web.Application(middlewares=[json_errors, httpdeadline.body_deadline], client_max_size=limits.HTTP_MAX_BODY)
    app[RUNTIME] = runtime
    app.add_routes([
        web.get("/service-level", service_level),
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        *(extra_routes or []),
    ])
    cors.install(app, runtime.config.http.cors_origins)
    return app
