"""The status page: ``GET /`` and its few static files, served as they are from package data.

An adapter over the published State with no state of its own: the page reads ``/service-level``,
``/service-level/events`` and ``/history`` from the browser like any other client. No templating, no build step,
nothing fetched from another host; the Content-Security-Policy says so to the browser too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import orjson
from aiohttp import web

from failsoft.daemon.api import JSON

# The files under daemon/static/ and their media types. Only these are served: a fixed table, not a directory
# listing, so nothing else that lands in the folder is ever exposed.
ASSETS = {
    "statuspage.css": "text/css; charset=utf-8",
    "statuspage.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
PAGE = "index.html"

# `failsoft demo` adds its own routes with this name; the page shows the fault buttons only when it is there.
# A route the demo registers cannot be set by a client, and it exists in no other process.
DEMO_ROUTE = "demo"

# Everything from this origin, nothing inline, nothing from elsewhere; no framing, no forms, no <base>.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # Revalidate every time (cheap: a 304 on the ETag), so that an upgraded daemon never runs an old script.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class Asset:
    """One static file: its bytes, media type and strong ETag (a hash of the bytes)."""

    body: bytes
    content_type: str
    etag: str


def load(name: str, content_type: str) -> Asset:
    """Read ``daemon/static/<name>`` from the installed package."""
    body = resources.files("failsoft.daemon").joinpath("static", name).read_bytes()
    return Asset(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:16] + '"')


def _answer(request: web.Request, asset: Asset) -> web.Response:
    headers = {**SECURITY_HEADERS, "ETag": asset.etag}
    tags = [t.strip().removeprefix("W/") for t in request.headers.get("If-None-Match", "").split(",")]
    if asset.etag in tags or "*" in tags:
        return web.Response(status=304, headers=headers)
    # aiohttp leaves the body out of a HEAD answer and keeps Content-Length: the same headers as the GET.
    return web.Response(body=asset.body, headers={**headers, "Content-Type": asset.content_type})


def routes() -> list[web.RouteDef]:
    """``GET /`` (the page), ``GET /static/<file>`` and ``GET /status-page.json``; HEAD wherever GET works."""
    page = load(PAGE, "text/html; charset=utf-8")
    assets = {name: load(name, media) for name, media in ASSETS.items()}

    async def index(request: web.Request) -> web.Response:
        """``GET /``: the status page."""
        return _answer(request, page)

    async def static(request: web.Request) -> web.Response:
        """``GET /static/<file>``: the page's script, style sheet and icon."""
        asset = assets.get(request.match_info["name"])
        if asset is None:
            raise web.HTTPNotFound
        return _answer(request, asset)

    async def options(request: web.Request) -> web.Response:
        """``GET /status-page.json``: what the page may show besides the State (the demo's buttons)."""
        demo = DEMO_ROUTE in request.app.router.named_resources()
        return web.Response(body=orjson.dumps({"demo": demo}), content_type=JSON,
                            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    return [
        web.get("/", index),
        web.get("/static/{name}", static),
        web.get("/status-page.json", options),
    ]
