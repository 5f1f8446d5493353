"""CORS for the read-only endpoints: ``http.cors_origins`` lets an app's own web front end, served from another
origin, read ``/service-level``, its event stream and the other GET endpoints.

Only GET and HEAD are ever allowed, and never on the admin paths: a browser on a listed origin can read the level
but cannot set an override or flip a demo switch. Origins are compared exactly (after normalising the
configured ones the way browsers serialise the ``Origin`` header); ``*`` is refused, because any web site a user
happens to open could then read the dependency names and error texts of a sidecar on their machine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import orjson
from aiohttp import hdrs, web

SAFE_METHODS = frozenset({"GET", "HEAD"})
ADMIN_PREFIXES = ("/override", "/_demo")  # never readable cross-origin, whatever the method
# What a cross-origin reader may send: EventSource sends Last-Event-ID (and Cache-Control) on reconnect,
# a conditional GET sends If-None-Match.
ALLOW_HEADERS = "Accept, Cache-Control, If-None-Match, Last-Event-ID"
EXPOSE_HEADERS = "ETag, X-Failsoft-Index"  # what a cross-origin script may read of the answer
MAX_AGE = "600"  # seconds a browser may reuse a preflight answer
DEFAULT_PORTS = {"http": 80, "https": 443}
EXAMPLE = "https://app.example.com or http://localhost:3000"


def parse_origin(text: str) -> str:
    """A configured origin in the form browsers send it (``scheme://host[:port]``, lower case, no default port).

    Raises ValueError with what to write instead.
    """
    if text.strip() == "*":
        raise ValueError(f"'*' is not allowed: list the origins whose pages may read the level, like {EXAMPLE} "
                         "(with '*' any web site open in a browser could read it)")
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        parts, port = None, None
    if (parts is None or parts.scheme.lower() not in DEFAULT_PORTS or not parts.hostname or parts.username
            or parts.password or parts.path or parts.query or parts.fragment or text.strip().endswith(("?", "#"))):
        shown = repr(text) if len(text) <= 60 else repr(text[:57] + "...")
        raise ValueError(f"expected an origin like {EXAMPLE} (scheme, host and optional port; no path, not even "
                         f"a trailing /), got {shown}")
    scheme, host = parts.scheme.lower(), parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != DEFAULT_PORTS[scheme] else "")


def _readable(request: web.Request, method: str) -> bool:
    return method in SAFE_METHODS and not request.path.startswith(ADMIN_PREFIXES)


def allowed_methods(request: web.Request) -> frozenset[str]:
    """The methods the requested path answers; none for a path that is not an endpoint (the routes for any other
    method, ``*``, answer 405 or 404: ``api.build_app``)."""
    resource = request.match_info.route.resource
    return frozenset(r.method for r in resource or () if r.method != hdrs.METH_ANY)


def install(app: web.Application, origins: tuple[str, ...]) -> None:
    """Answer preflights and add ``Access-Control-Allow-Origin`` for the listed origins; nothing when none."""
    if not origins:
        return
    allowed = frozenset(origins)

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        """Runs before the headers go out, so it covers event streams too (a middleware would be too late)."""
        if not _readable(request, request.method):
            return
        vary = response.headers.get("Vary")
        if vary is None or "origin" not in vary.lower():
            response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
        origin = request.headers.get("Origin")
        if origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS

    @web.middleware
    async def preflight(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """``OPTIONS`` with ``Access-Control-Request-Method``: 204 for a listed origin asking to GET a GET endpoint."""
        asked = request.headers.get("Access-Control-Request-Method")
        if request.method != "OPTIONS" or asked is None:
            return await handler(request)
        endpoint = "GET" in allowed_methods(request)
        origin = request.headers.get("Origin")
        if origin not in allowed or not endpoint or not _readable(request, asked.upper()):
            why = ("this origin is not in http.cors_origins" if origin not in allowed
                   else "only GET and HEAD of the read-only endpoints are allowed from other origins")
            body = orjson.dumps({"error": {"code": "cors_refused", "message": why}})
            return web.Response(status=403, body=body, content_type="application/json", headers={"Vary": "Origin"})
        return web.Response(status=204, headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "GET, HEAD",
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": MAX_AGE,
            "Vary": "Origin",
        })

    app.on_response_prepare.append(add_headers)
    app.middlewares.append(preflight)
