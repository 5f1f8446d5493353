"""``kind: http`` redirects: the configured headers (an API key) never reach another origin.

Two real aiohttp servers on loopback are two origins (different ports); the first redirects to the second.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from failsoft.probes.base import OK, ProbeFailure, ProbeHooks
from failsoft.probes.http import HttpOptions, HttpProbe

KEY = "key-that-must-stay-home-1234"


@dataclass
class Origin:
    """One test server: its base URL, the requests it saw (path, method, headers), and where it redirects."""

    url: str = ""
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    redirect_to: str = ""


async def serve(origin: Origin) -> web.AppRunner:
    """Start ``origin`` on a free loopback port: /go/{code} redirects to ``redirect_to``, anything else is 200."""

    async def handle(request: web.Request) -> web.Response:
        origin.seen.append((request.path, request.method, dict(request.headers)))
        if request.path.startswith("/go/"):
            code = int(request.path.rsplit("/", 1)[1])
            return web.Response(status=code, headers={"Location": origin.redirect_to})
        if request.path == "/bad-location":
            return web.Response(status=302, headers={"Location": "file:///etc/passwd"})
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    origin.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    return runner


@pytest.fixture
async def origins() -> AsyncIterator[tuple[Origin, Origin]]:
    """Two origins: ``home`` (configured in the probe) and ``other``."""
    home, other = Origin(), Origin()
    runners = [await serve(home), await serve(other)]
    yield home, other
    for r in runners:
        await r.cleanup()


async def probe(url: str, method: str = "GET") -> object:
    """One check with the secret header configured; the outcome or the exception."""
    p = HttpProbe(HttpOptions(url, method=method, headers={"X-Api-Key": KEY, "Authorization": "Bearer " + KEY}),
                  2.0, ProbeHooks())
    try:
        return await p.check()
    except Exception as exc:
        return exc
    finally:
        await p.aclose()


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
async def test_a_redirect_to_another_origin_does_not_carry_the_headers(
    origins: tuple[Origin, Origin], code: int,
) -> None:
    """A redirect to another origin is followed (its status decides), but neither X-Api-Key nor Authorization
    goes along; the home origin got them."""
    home, other = origins
    home.redirect_to = f"{other.url}/landing"
    assert await probe(f"{home.url}/go/{code}") == OK
    assert home.seen[0][2]["X-Api-Key"] == KEY
    [(path, _, headers)] = other.seen
    assert path == "/landing"
    assert KEY not in str(headers)


async def test_headers_do_not_come_back_after_leaving(origins: tuple[Origin, Origin]) -> None:
    """home -> other -> home: once the chain left the origin, the headers stay off for the rest of it."""
    home, other = origins
    home.redirect_to = f"{other.url}/go/302"
    other.redirect_to = f"{home.url}/final"
    assert await probe(f"{home.url}/go/302") == OK
    assert home.seen[-1][0] == "/final"
    assert KEY not in str(home.seen[-1][2])
    assert KEY not in str(other.seen)


async def test_a_same_origin_redirect_keeps_the_headers(origins: tuple[Origin, Origin]) -> None:
    """A redirect within the configured origin keeps the headers (a /health -> /health/ move must still work)."""
    home, _ = origins
    home.redirect_to = "/inside"
    assert await probe(f"{home.url}/go/307") == OK
    assert home.seen[-1][0] == "/inside"
    assert home.seen[-1][2]["X-Api-Key"] == KEY


async def test_303_and_post_302_become_get(origins: tuple[Origin, Origin]) -> None:
    """As browsers do: 303 (and 301/302 after a POST) continue with GET; 307 keeps the method."""
    home, _ = origins
    home.redirect_to = "/after"
    assert await probe(f"{home.url}/go/303", method="POST") == OK
    assert home.seen[-1][:2] == ("/after", "GET")
    assert await probe(f"{home.url}/go/307", method="POST") == OK
    assert home.seen[-1][:2] == ("/after", "POST")


async def test_a_redirect_to_a_non_http_url_is_a_bad_response(origins: tuple[Origin, Origin]) -> None:
    """A Location with another scheme (file:) is refused as a bad answer, not followed."""
    home, _ = origins
    result = await probe(f"{home.url}/bad-location")
    assert isinstance(result, ProbeFailure)
    assert result.reason == "bad_response"
