"""failsoft.probes.http against a real aiohttp server in the test process: every status class, redirects, huge bodies,
TLS verification and a server that never answers."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from failsoft.daemon.breaker import Breaker
from failsoft.daemon.clock import SystemClock
from failsoft.daemon.config import ProbeSettings
from failsoft.daemon.redact import Redactor
from failsoft.daemon.scheduler import DependencyScheduler
from failsoft.devtools.localservers import free_port
from failsoft.policies.classify import exception_reason
from failsoft.probes.base import OK, ProbeFailure, ProbeHooks, Verdict
from failsoft.probes.http import HttpOptions, HttpProbe

HUGE = 200 * 1024 * 1024  # what the huge endpoint would send if it were read to the end


@dataclass
class Upstream:
    """The test server: its base URL and what it saw."""

    url: str
    huge_sent: list[int] = field(default_factory=list)
    headers_seen: list[dict[str, str]] = field(default_factory=list)
    methods_seen: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    huge_done: asyncio.Event = field(default_factory=asyncio.Event)


def routes(up: Upstream) -> web.Application:
    """One endpoint per behaviour the probe must judge."""

    async def status(request: web.Request) -> web.Response:
        up.headers_seen.append(dict(request.headers))
        up.methods_seen.append(request.method)
        return web.Response(status=int(request.match_info["code"]), text="x")

    async def limited(_: web.Request) -> web.Response:
        return web.Response(status=429, headers={"Retry-After": "7"}, text="slow down")

    async def loop(_: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def hop(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n == 0:
            return web.Response(text="arrived")
        raise web.HTTPFound(f"/hop/{n - 1}")

    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": str(HUGE)})
        await resp.prepare(request)
        sent, chunk = 0, b"x" * 65536
        try:
            while sent < HUGE:
                await resp.write(chunk)
                sent += len(chunk)
        except (ConnectionError, OSError):
            pass
        finally:
            up.huge_sent.append(sent)
            up.huge_done.set()
        return resp

    async def hang(_: web.Request) -> web.Response:
        await up.release.wait()
        return web.Response(text="late")

    app = web.Application()
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/limited", limited)
    app.router.add_get("/loop", loop)
    app.router.add_get("/hop/{n}", hop)
    app.router.add_get("/huge", huge)
    app.router.add_get("/hang", hang)
    return app


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """The test server on a free loopback port."""
    up = Upstream("")
    runner = web.AppRunner(routes(up), shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    up.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield up
    up.release.set()
    await runner.cleanup()


async def check(url: str, deadline: float = 2.0, **options: Any) -> Any:
    """One check with a fresh probe (closed afterwards); returns the outcome or the exception raised."""
    probe = HttpProbe(HttpOptions(url, **options), deadline, ProbeHooks())
    try:
        return await probe.check()
    except Exception as exc:
        return exc
    finally:
        await probe.aclose()


async def test_2xx_is_ok(upstream: Upstream) -> None:
    """Any 2xx is healthy by default, and the probe says who it is."""
    assert await check(f"{upstream.url}/status/200") == OK
    assert await check(f"{upstream.url}/status/204") == OK
    assert upstream.headers_seen[0]["User-Agent"] == "failsoft-probe"


async def test_expect_status_replaces_the_default(upstream: Upstream) -> None:
    """With expect_status, only the listed statuses are healthy: 418 OK, 200 an unexpected status."""
    assert await check(f"{upstream.url}/status/418", expect_status=(418,)) == OK
    outcome = await check(f"{upstream.url}/status/200", expect_status=(418,))
    assert (outcome.verdict, outcome.reason) == (Verdict.FAILURE, "http_200")


@pytest.mark.parametrize(("code", "verdict", "reason"), [
    (404, Verdict.FATAL, "misconfigured"),
    (401, Verdict.FATAL, "auth"),
    (403, Verdict.FATAL, "auth"),
    (500, Verdict.FAILURE, "http_5xx"),
    (503, Verdict.FAILURE, "http_5xx"),
])
async def test_error_statuses(upstream: Upstream, code: int, verdict: Verdict, reason: str) -> None:
    """404 on the probe path is misconfigured (fatal), 401/403 auth (fatal), 5xx a plain failure."""
    outcome = await check(f"{upstream.url}/status/{code}")
    assert (outcome.verdict, outcome.reason) == (verdict, reason)


async def test_429_is_degraded_until_retry_after(upstream: Upstream) -> None:
    """A rate limit is degraded with reason rate_limited and the server's retry-after."""
    outcome = await check(f"{upstream.url}/limited")
    assert (outcome.verdict, outcome.reason, outcome.retry_after) == (Verdict.DEGRADED, "rate_limited", 7.0)


async def test_a_redirect_loop_is_reported_as_such(upstream: Upstream) -> None:
    """Endless redirects stop after a few hops with reason redirect_loop (not a generic error)."""
    result = await check(f"{upstream.url}/loop")
    assert isinstance(result, ProbeFailure)
    assert exception_reason(result) == ("redirect_loop", False)


async def test_a_few_redirects_are_followed(upstream: Upstream) -> None:
    """A short redirect chain to a 200 is healthy."""
    assert await check(f"{upstream.url}/hop/3") == OK


async def test_a_huge_body_is_read_only_in_part(upstream: Upstream) -> None:
    """A 200 MB answer: the probe decides from the status and a few KiB and drops the rest (the server could
    send only a small part of it before the connection was closed)."""
    assert await check(f"{upstream.url}/huge", deadline=5.0) == OK
    await asyncio.wait_for(upstream.huge_done.wait(), 5)  # the server notices the close on its next write
    assert upstream.huge_sent[0] < 32 * 1024 * 1024


async def test_method_and_headers_are_sent(upstream: Upstream) -> None:
    """The configured method and headers reach the server."""
    outcome = await check(f"{upstream.url}/status/200", method="HEAD", headers={"X-Probe": "yes"})
    assert outcome == OK
    assert upstream.methods_seen == ["HEAD"]
    assert upstream.headers_seen[0]["X-Probe"] == "yes"


async def test_a_server_that_never_answers_is_a_timeout_at_the_deadline(upstream: Upstream) -> None:
    """Through the scheduler: a request with no answer is a failure with reason timeout at the scheduler's
    deadline (the probe's own client timeout is an hour here, so only that deadline can answer in time)."""
    settings = ProbeSettings(timeout=0.4)
    scheduler = DependencyScheduler(
        Breaker("search", "http", settings),
        lambda wake: HttpProbe(HttpOptions(f"{upstream.url}/hang"), 3600.0, ProbeHooks(wake)),
        lambda _: None, SystemClock(), Redactor(),
    )
    try:
        outcome, _ = await asyncio.wait_for(scheduler.probe_once(), 60)
        assert (outcome.verdict, outcome.reason) == (Verdict.FAILURE, "timeout")
        assert "400ms" in (outcome.error or "")
    finally:
        await scheduler.aclose()


async def test_a_closed_port_is_connection_refused() -> None:
    """Nothing listening: a failure with reason connection_refused."""
    result = await check(f"http://127.0.0.1:{free_port()}/")
    assert isinstance(result, Exception)
    assert exception_reason(result) == ("connection_refused", False)


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True,
                   timeout=60)
    return cert, key


async def test_tls_verification(self_signed: tuple[Path, Path]) -> None:
    """An untrusted certificate fails with reason tls; with tls_verify false the same server is healthy."""
    cert, key = self_signed
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    url = f"https://127.0.0.1:{runner.addresses[0][1]}/"
    try:
        result = await check(url)
        assert isinstance(result, Exception)
        assert exception_reason(result) == ("tls", False)
        assert await check(url, tls_verify=False) == OK
    finally:
        await runner.cleanup()
