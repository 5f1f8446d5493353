"""The http and llm probes through an egress proxy: ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY``, as aiohttp's
``trust_env`` reads them, against a real forward proxy in the test process (absolute-form requests forwarded,
``CONNECT`` tunnelled) and real upstreams (an HTTP server, an HTTPS server, the LLM provider simulator)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import urllib.parse
from collections.abc import AsyncIterator

import pytest
import trustme
from aiohttp import web

from failsoft.devtools.llmsim import ProviderSimulator
from failsoft.probes.base import OK, ProbeHooks, Verdict
from failsoft.probes.http import HttpOptions, HttpProbe
from failsoft.probes.llm import LlmOptions, LlmProbe

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy",
                   "all_proxy")
OPENAI_KEY = "sk-proxy-test-0123456789"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(ConnectionError, OSError, RuntimeError):
        writer.close()


class ForwardProxy:
    """A minimal HTTP forward proxy: an absolute-form request is sent on to its origin (one request per
    connection), ``CONNECT host:port`` becomes a byte tunnel. It records every request line it was asked."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        line, _, fields = head.partition(b"\r\n")
        method, target, version = line.decode("latin-1").split(" ", 2)
        self.requests.append((method, target))
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            url = urllib.parse.urlsplit(target)
            up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port or 80)
            path = (url.path or "/") + (f"?{url.query}" if url.query else "")
            kept = [h for h in fields.split(b"\r\n") if h and not h.lower().startswith(
                (b"proxy-", b"connection:", b"keep-alive:"))]
            up_writer.write(f"{method} {path} {version}\r\n".encode() + b"\r\n".join([*kept, b"Connection: close"])
                            + b"\r\n\r\n")
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """An environment without any proxy variable (whatever the machine running the tests has set)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
async def proxy() -> AsyncIterator[ForwardProxy]:
    """A running forward proxy."""
    p = ForwardProxy()
    await p.start()
    yield p
    await p.stop()


async def _ok(_: web.Request) -> web.Response:
    return web.Response(text="ok")


@contextlib.asynccontextmanager
async def upstream(tls: bool = False) -> AsyncIterator[str]:
    """An HTTP (or, with ``tls``, HTTPS with a throw-away certificate) server answering 200 at /health."""
    app = web.Application()
    app.router.add_get("/health", _ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    context = None
    if tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}/health"
    finally:
        await runner.cleanup()


async def http_check(url: str, tls_verify: bool = True) -> object:
    """One http probe (with its own session, built as the daemon builds it) against ``url``."""
    probe = HttpProbe(HttpOptions(url, tls_verify=tls_verify), 5.0, ProbeHooks())
    try:
        return await asyncio.wait_for(probe.check(), 30)
    finally:
        await probe.aclose()


async def test_http_probe_goes_through_http_proxy(no_proxy_env: pytest.MonkeyPatch, proxy: ForwardProxy) -> None:
    """With HTTP_PROXY set, an http:// dependency is asked through the proxy (absolute-form request)."""
    async with upstream() as url:
        no_proxy_env.setenv("HTTP_PROXY", proxy.url)
        assert await http_check(url) == OK
        assert proxy.requests == [("GET", url)]


async def test_http_probe_tunnels_https_through_https_proxy(
    no_proxy_env: pytest.MonkeyPatch, proxy: ForwardProxy,
) -> None:
    """With HTTPS_PROXY set, an https:// dependency is reached through a CONNECT tunnel of the proxy."""
    async with upstream(tls=True) as url:
        no_proxy_env.setenv("HTTPS_PROXY", proxy.url)
        assert await http_check(url, tls_verify=False) == OK
        authority = urllib.parse.urlsplit(url).netloc
        assert proxy.requests == [("CONNECT", authority)]


async def test_no_proxy_and_no_variable_mean_a_direct_request(
    no_proxy_env: pytest.MonkeyPatch, proxy: ForwardProxy,
) -> None:
    """A host listed in NO_PROXY is asked directly although HTTP_PROXY is set; without any variable, too."""
    async with upstream() as url:
        assert await http_check(url) == OK
        no_proxy_env.setenv("HTTP_PROXY", proxy.url)
        no_proxy_env.setenv("NO_PROXY", "localhost,127.0.0.1")
        assert await http_check(url) == OK
        assert proxy.requests == []


async def test_llm_probe_goes_through_the_proxy(no_proxy_env: pytest.MonkeyPatch, proxy: ForwardProxy) -> None:
    """The llm probe honours the same variables: the provider (the simulator, over http) is asked through the
    proxy, with its key, and the answer is classified as usual."""
    sim = ProviderSimulator({"openai": "openai"}, keys={"openai": OPENAI_KEY})
    await sim.start()
    try:
        no_proxy_env.setenv("HTTP_PROXY", proxy.url)
        probe = LlmProbe(LlmOptions(provider="openai", base_url=sim.base_url("openai"), api_key=OPENAI_KEY), 5.0,
                         ProbeHooks())
        try:
            outcome = await asyncio.wait_for(probe.check(), 30)
            assert (outcome.verdict, outcome.reason) == (Verdict.OK, None)
        finally:
            await probe.aclose()
        assert proxy.requests == [("GET", sim.base_url("openai").rstrip("/") + "/models")]
        [seen] = sim.received("openai")
        assert seen.headers["Authorization"] == f"Bearer {OPENAI_KEY}"
    finally:
        await sim.stop()
