"""A deadline for requests that carry a body: a client that trickles one cannot hold a connection for ever.

aiohttp bounds the wait for a request's head (the idle timeout) but not for its body, and a connection whose
request is under way is never closed to make room for a new client (see ``httpguard``): 12,000 bodies sent a
byte a minute would have left every new client a 503. Every handler of a body-carrying method answers quickly
once it has its body, so one deadline over the whole handler bounds the body's arrival.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from failsoft.daemon.limits import HTTP_BODY_TIMEOUT

NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})  # GET includes blocking queries and event streams: never cut
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bounded(handler: Handler) -> Handler:
    """``handler`` (of a POST, PUT, PATCH or DELETE) answering 408 with the error body when it is not done within the
    deadline."""

    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            async with asyncio.timeout(HTTP_BODY_TIMEOUT):
                return await handler(request)
        except TimeoutError:
            body = orjson.dumps({"error": {"code": "request_timeout", "message":
                                           f"the request body did not arrive within {HTTP_BODY_TIMEOUT:g}s"}})
            resp = web.Response(status=408, body=body, content_type="application/json")
            resp.force_close()
            return resp

    return answer
