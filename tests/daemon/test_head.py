"""``HEAD`` wherever ``GET`` works: the daemon's whole router, walked route by route, over a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from support import until_async

from failsoft.daemon.app import Daemon
from failsoft.daemon.config import parse_config

CONFIG = """
service: head-test
http: {listen: "127.0.0.1:0"}
defaults: {interval: 1s, timeout: 1s, jitter: 0, unhealthy_threshold: 1, healthy_threshold: 1}
dependencies:
  db: {kind: tcp, address: "127.0.0.1:%d"}
policy:
  levels: [full, cache_only]
  rules: [{level: cache_only, when: {any_down: [db]}}]
"""
# Headers that belong to one message, not to the resource: they may differ between the GET and the HEAD.
PER_MESSAGE = {"date", "content-length", "transfer-encoding", "keep-alive"}


@contextlib.asynccontextmanager
async def running_daemon() -> AsyncIterator[tuple[Daemon, str]]:
    """The real daemon (every route it serves) in process, with a ``db`` that accepts connections, once ready."""
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    daemon = await Daemon.start(parse_config(CONFIG % port, {}))
    url = f"http://127.0.0.1:{daemon.port}"
    try:
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                async with session.get(url + "/readyz") as resp:
                    return resp.status == 200

            await until_async(ready, 10, "the daemon to become ready")
        yield daemon, url
    finally:
        await daemon.stop()
        server.close()
        await server.wait_closed()


def get_paths(app: web.Application) -> list[str]:
    """Every path the router serves GET on (a placeholder in each variable part)."""
    return sorted(re.sub(r"\{[^}]*\}", "x", resource.canonical) for resource in app.router.resources()
                  if any(route.method == "GET" for route in resource))


async def head_then_next(url: str, path: str) -> tuple[bytes, bytes]:
    """Send ``HEAD path`` and a pipelined ``GET /healthz`` on one connection; (the HEAD's head, what followed).

    What follows the HEAD's headers must be either the end of the connection or the next answer: a HEAD that
    sent a body or kept streaming would show its bytes here (or never let the read end).
    """
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n"
                     "Connection: close\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        rest = await asyncio.wait_for(reader.read(), 10)  # EOF: the daemon closed after the HEAD or the GET
        return head, rest
    finally:
        writer.close()


async def test_every_get_route_answers_head_with_the_same_status_and_headers_and_no_body() -> None:
    """For every GET route of the daemon's router, HEAD gives the GET's status and headers, no body, and the
    exchange ends (also for the event stream): the next pipelined request is answered, or the connection closes."""
    async with running_daemon() as (daemon, url):
        paths = get_paths(daemon.runner.app)
        assert {"/service-level", "/service-level/events", "/history", "/metrics", "/healthz", "/readyz"} <= set(paths)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for path in paths:
                async with session.get(url + path) as got:  # headers only: the stream's body never ends
                    get_status, get_headers = got.status, got.headers.copy()
                async with session.head(url + path) as head:
                    assert head.status == get_status, path
                    assert await head.read() == b"", path
                    for name, value in get_headers.items():
                        if name.lower() not in PER_MESSAGE:
                            assert head.headers.get(name) == value, f"{path}: {name}"
                raw_head, rest = await head_then_next(url, path)
                assert raw_head.startswith(b"HTTP/1.1 %d " % get_status), (path, raw_head)
                assert rest == b"" or rest.startswith(b"HTTP/1.1 200 "), (path, rest[:200])
                if b"connection: close" not in raw_head.lower():
                    assert rest.startswith(b"HTTP/1.1 200 "), f"{path}: the pipelined request was not answered"
