"""failsoft.daemon.statuspage and failsoft.daemon.cors over HTTP, in process (aiohttp TestServer/TestClient).

What the page's files are and how they are served (headers, ETags, HEAD), which routes exist outside and inside the
demo, and who may read the API from another origin. The page's behaviour in a browser is in tests/e2e/test_page.py.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from failsoft.daemon import stream
from failsoft.daemon.api import Runtime, build_app
from failsoft.daemon.app import Daemon
from failsoft.daemon.clock import ManualClock
from failsoft.daemon.config import parse_config
from failsoft.daemon.cors import parse_origin
from failsoft.daemon.hub import Hub
from failsoft.daemon.state import ServiceState
from failsoft.daemon.statuspage import ASSETS, routes
from failsoft.devtools import demoroutes
from failsoft.devtools.demo import Demo

STATIC = Path(__file__).resolve().parents[2] / "daemon" / "static"
CONFIG = """
service: page-test
http: {{listen: "127.0.0.1:0", admin_token: page-test-token, cors_origins: {origins}}}
dependencies:
  db: {{kind: tcp, address: "127.0.0.1:1"}}
"""
APP = "http://app.example.com:3000"

Client = TestClient[Any, Any]


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., Any]]:
    """A factory: the daemon's HTTP app (page, stream, history, override) with the given CORS origins and extra
    routes, on a free loopback port."""
    clients: list[Client] = []

    async def make(origins: str = "[]", extra: list[web.RouteDef] | None = None) -> Client:
        config = parse_config(CONFIG.format(origins=origins), {})
        hub = Hub()
        state = ServiceState(config, ManualClock())
        hub.publish(state.snapshot(), [])
        runtime = Runtime(config=config, hub=hub, inbox=asyncio.Queue())
        app = build_app(runtime, [*stream.routes(), *routes(), *(extra or [])])
        client: Client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()


async def test_the_page_is_html_with_the_security_headers(make_client: Callable[..., Any]) -> None:
    """``GET /`` answers the page as text/html with a CSP that allows no inline script and nothing from another
    origin, nosniff, no framing, and a revalidating cache policy with an ETag."""
    client = await make_client()
    resp = await client.get("/")
    body = await resp.text()
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self';" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "frame-ancestors 'none'" in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["ETag"].startswith('"')
    assert body == (STATIC / "index.html").read_text()
    assert '<script src="static/statuspage.js" defer></script>' in body


def test_the_page_has_no_inline_script_style_or_remote_url() -> None:
    """The shipped files hold no inline script, no inline style attribute, no event-handler attribute and no URL of
    another host: the CSP would block them, and nothing may leave the machine."""
    html = (STATIC / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []
    assert not re.search(r"\sstyle=|\son[a-z]+=", html)
    for name in ["index.html", *ASSETS]:
        text = (STATIC / name).read_text()
        remote = [u for u in re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s\"')]*", text)
                  if "www.w3.org/2000/svg" not in u]  # the SVG namespace is a name, never fetched
        assert remote == [], name
    script = (STATIC / "statuspage.js").read_text()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "eval(" not in script


async def test_every_asset_is_served_with_its_type_and_revalidates(make_client: Callable[..., Any]) -> None:
    """Each static file comes with its media type and nosniff; sending its ETag back gives 304 without a body;
    HEAD gives the GET's status and headers without a body; an unlisted name is a JSON 404."""
    client = await make_client()
    for name, media in ASSETS.items():
        resp = await client.get(f"/static/{name}")
        assert resp.status == 200, name
        assert resp.headers["Content-Type"] == media
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert await resp.read() == (STATIC / name).read_bytes()
        again = await client.get(f"/static/{name}", headers={"If-None-Match": resp.headers["ETag"]})
        assert again.status == 304 and await again.read() == b""
        head = await client.head(f"/static/{name}")
        assert head.status == 200 and await head.read() == b""
        assert head.headers["Content-Length"] == str(len((STATIC / name).read_bytes()))
    missing = await client.get("/static/../config.py")
    assert missing.status == 404
    missing = await client.get("/static/secret.txt")
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "not_found"


async def test_outside_the_demo_there_are_no_demo_routes(make_client: Callable[..., Any]) -> None:
    """Without the demo's routes the page is told ``demo: false`` and ``/_demo`` does not exist."""
    client = await make_client()
    options = await client.get("/status-page.json")
    assert options.status == 200 and await options.json() == {"demo": False}
    assert (await client.get("/_demo")).status == 404
    assert (await client.post("/_demo/db", headers={"X-Failsoft-Demo": "1"})).status == 404


async def test_the_demo_routes_need_their_header_and_know_their_faults(make_client: Callable[..., Any]) -> None:
    """With the demo's routes (as ``failsoft demo`` passes them, servers not started) the page is told ``demo:
    true``; ``GET /_demo`` lists the five faults, all off; a POST without ``X-Failsoft-Demo: 1`` is refused with 403
    and changes nothing; an unknown fault is a 404 that names the real ones."""
    demo = Demo(0)
    client = await make_client(extra=demoroutes.routes(demo))
    assert await (await client.get("/status-page.json")).json() == {"demo": True}
    listed = await (await client.get("/_demo")).json()
    assert [f["name"] for f in listed["faults"]] == ["db", "cache", "openai", "anthropic", "ratelimit"]
    assert not any(f["active"] for f in listed["faults"])
    refused = await client.post("/_demo/openai")
    assert refused.status == 403
    assert "X-Failsoft-Demo" in (await refused.json())["error"]["message"]
    assert demo.active_faults() == set()
    unknown = await client.post("/_demo/nope", headers={"X-Failsoft-Demo": "1"})
    assert unknown.status == 404
    assert "ratelimit" in (await unknown.json())["error"]["message"]


@pytest.mark.parametrize(("text", "origin"), [
    ("https://App.Example.com", "https://app.example.com"),
    ("https://app.example.com:443", "https://app.example.com"),
    ("http://localhost:3000", "http://localhost:3000"),
    ("http://[::1]:8080", "http://[::1]:8080"),
])
def test_origins_are_normalised_as_browsers_send_them(text: str, origin: str) -> None:
    """A configured origin is compared in the form of the ``Origin`` header: lower case, no default port."""
    assert parse_origin(text) == origin


@pytest.mark.parametrize("text", ["*", "https://app.example.com/", "app.example.com", "ftp://x.example",
                                  "https://user:pw@app.example.com", "https://app.example.com/path",
                                  "https://app.example.com?x", "https://app.example.com:99999", "https://"])
def test_unusable_origins_are_refused(text: str) -> None:
    """``*``, paths (even a trailing slash), credentials, queries, other schemes and bad ports are errors."""
    with pytest.raises(ValueError, match=r"origin|not allowed"):
        parse_origin(text)


async def test_cors_lets_a_listed_origin_read_the_get_endpoints(make_client: Callable[..., Any]) -> None:
    """A listed origin gets ``Access-Control-Allow-Origin`` (and the exposed ETag/index headers) on
    ``/service-level``, ``/history`` and the event stream, and a 204 preflight for GET; another origin gets none."""
    client = await make_client(f"[{APP}]")
    for path in ("/service-level", "/history"):
        resp = await client.get(path, headers={"Origin": APP})
        assert resp.headers["Access-Control-Allow-Origin"] == APP, path
        assert "X-Failsoft-Index" in resp.headers["Access-Control-Expose-Headers"]
        assert "Origin" in resp.headers["Vary"]
        other = await client.get(path, headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in other.headers, path
    async with client.get("/service-level/events", headers={"Origin": APP}) as events:
        assert events.status == 200
        assert events.headers["Access-Control-Allow-Origin"] == APP  # set before a stream's headers go out
    pre = await client.options("/service-level/events", headers={
        "Origin": APP, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "last-event-id"})
    assert pre.status == 204
    assert pre.headers["Access-Control-Allow-Origin"] == APP
    assert "Last-Event-ID" in pre.headers["Access-Control-Allow-Headers"]
    assert pre.headers["Access-Control-Allow-Methods"] == "GET, HEAD"
    denied = await client.options("/service-level", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert denied.status == 403 and "Access-Control-Allow-Origin" not in denied.headers


async def test_cors_never_opens_the_admin_endpoints(make_client: Callable[..., Any]) -> None:
    """Even for a listed origin, a preflight for ``POST``/``DELETE /override`` (or any non-GET) is refused, and an
    answer of ``/override`` carries no ``Access-Control-Allow-Origin``: a web page cannot set the level."""
    client = await make_client(f"[{APP}]", extra=demoroutes.routes(Demo(0)))
    for method in ("POST", "DELETE"):
        pre = await client.options("/override", headers={"Origin": APP, "Access-Control-Request-Method": method})
        assert pre.status == 403 and "Access-Control-Allow-Origin" not in pre.headers
    pre = await client.options("/_demo", headers={"Origin": APP, "Access-Control-Request-Method": "GET"})
    assert pre.status == 403 and "Access-Control-Allow-Origin" not in pre.headers
    resp = await client.post("/override", json={"level": "degraded"}, headers={"Origin": APP})
    assert resp.status == 401  # answered (no token), but a browser would not let the page read even that
    assert "Access-Control-Allow-Origin" not in resp.headers
    demo = await client.get("/_demo", headers={"Origin": APP})
    assert "Access-Control-Allow-Origin" not in demo.headers
    pre = await client.options("/service-level", headers={"Origin": APP, "Access-Control-Request-Method": "PUT"})
    assert pre.status == 403


async def test_without_cors_origins_nothing_changes(make_client: Callable[..., Any]) -> None:
    """The default (no origins): no CORS header on any answer, and OPTIONS stays a 405 as before."""
    client = await make_client()
    resp = await client.get("/service-level", headers={"Origin": APP})
    assert "Access-Control-Allow-Origin" not in resp.headers and "Vary" not in resp.headers
    pre = await client.options("/service-level", headers={"Origin": APP, "Access-Control-Request-Method": "GET"})
    assert pre.status == 405


FRAGMENT = Path(__file__).resolve().parents[2] / "daemon" / "openapi" / "statuspage.yaml"
CORE_REFS = {"#/components/schemas/Error"}  # defined once, in core.yaml; the loader merges the fragments


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


async def test_every_answer_is_listed_in_the_openapi_fragment(make_client: Callable[..., Any]) -> None:
    """daemon/openapi/statuspage.yaml is OpenAPI 3.1 whose references resolve (or name core's Error), and each
    status the page's endpoints answer, for GET and HEAD (200, 304, 404), is listed for that operation, with
    ``/status-page.json``'s body matching its schema."""
    import jsonschema
    import yaml

    doc = yaml.safe_load(FRAGMENT.read_text())
    assert doc["openapi"] == "3.1.0"
    for ref in _refs(doc):
        if ref in CORE_REFS:
            continue
        node: Any = doc
        for part in ref[2:].split("/"):
            node = node[part]
    client = await make_client()
    page_etag = (await client.get("/")).headers["ETag"]
    asked = [("/", "/", {}), ("/", "/", {"If-None-Match": page_etag}), ("/status-page.json", "/status-page.json", {}),
             ("/static/{name}", "/static/nothing.js", {})]
    for name in ASSETS:
        etag = (await client.get(f"/static/{name}")).headers["ETag"]
        asked += [("/static/{name}", f"/static/{name}", {}), ("/static/{name}", f"/static/{name}",
                                                              {"If-None-Match": etag})]
    for template, path, headers in asked:
        for method in ("get", "head"):
            resp = await client.request(method.upper(), path, headers=headers)
            listed = doc["paths"][template][method]["responses"]
            assert str(resp.status) in listed, (method, path, resp.status)
    options = await (await client.get("/status-page.json")).json()
    jsonschema.validate(options, doc["components"]["schemas"]["StatusPageOptions"])
    assert sorted(doc["components"]["parameters"]["AssetName"]["schema"]["enum"]) == sorted(ASSETS)


async def test_the_daemon_keeps_cors_headers_on_service_level_and_answers_before_routing_without_cors() -> None:
    """The whole daemon: with ``http.cors_origins`` a plain ``GET /service-level`` is routed, so the CORS hook adds
    its headers (``api.front``, which answers before routing, would skip them); without it the same read is
    answered by ``front`` with the same State."""
    base = 'service: cors-test\ndependencies: {db: {kind: tcp, address: "127.0.0.1:1", interval: 1s}}\n'
    for http, expect_cors in ((f'http: {{listen: "127.0.0.1:0", cors_origins: ["{APP}"]}}\n', True),
                              ('http: {listen: "127.0.0.1:0"}\n', False)):
        daemon = await Daemon.start(parse_config(http + base, {}))
        try:
            await daemon.runtime.hub.wait_past(0, 10)
            server = daemon.runner.server
            assert server is not None
            assert (server.request_handler.__qualname__ == "front.<locals>.handle") is not expect_cors
            async with aiohttp.ClientSession() as session, session.get(
                    f"http://127.0.0.1:{daemon.port}/service-level", headers={"Origin": APP}) as resp:
                assert resp.headers.get("Access-Control-Allow-Origin") == (APP if expect_cors else None)
                assert (await resp.json())["service"] == "cors-test"
        finally:
            await daemon.stop()
