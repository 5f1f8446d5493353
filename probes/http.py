"""``kind: http``: one request, judged by its status."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
from yarl import URL

from failsoft.policies.classify import http_status
from failsoft.probes.base import Outcome, ProbeFailure, ProbeHooks

MAX_BODY = 4096  # the status says enough; never buffer a large body
MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True, slots=True)
class HttpOptions:
    """``url``, ``method``, ``headers`` and the statuses that count as healthy (default: any 2xx)."""

    url: str
    method: Literal["GET", "HEAD", "POST", "OPTIONS"] = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    expect_status: tuple[int, ...] = ()
    tls_verify: bool = True

    def problems(self) -> list[tuple[str, str]]:
        """Config errors as (key, message)."""
        out = []
        if not self.url.startswith(("http://", "https://")):
            out.append(("url", "expected an http:// or https:// URL"))
        out += [("expect_status", f"{s} is not an HTTP status") for s in self.expect_status if not 100 <= s <= 599]
        return out


def client_session() -> aiohttp.ClientSession:
    """The client session of the HTTP-based probes (http, llm): no cookies kept; every request carries its own
    deadline, so one session (one connection pool) serves every dependency of the process.

    ``trust_env``: ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` (and their lower-case forms) are honoured as
    aiohttp reads them, since clusters often reach OpenAI and others only through an egress proxy.
    """
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), headers={"User-Agent": "failsoft-probe"},
                                 trust_env=True)


class HttpProbe:
    """Sends the request and classifies the status."""

    def __init__(self, options: HttpOptions, timeout: float, hooks: ProbeHooks) -> None:
        self._options = options
        self._timeout = timeout
        self._expected = set(options.expect_status) or set(range(200, 300))
        self._session = hooks.http_session
        self._owns_session = self._session is None

    async def check(self) -> Outcome:
        """One request under one deadline, redirects included; the body is read up to a few KiB so the connection
        can be reused."""
        if self._session is None:
            self._session = client_session()
        o = self._options
        deadline = time.monotonic() + self._timeout
        url, method, headers = URL(o.url), o.method, o.headers
        origin = _origin(url)
        # Redirects are followed here, not by aiohttp: aiohttp strips only Authorization when a redirect leaves
        # the origin, and a configured X-Api-Key went along to whatever host the Location named.
        for _ in range(MAX_REDIRECTS + 1):
            timeout = aiohttp.ClientTimeout(total=max(0.001, deadline - time.monotonic()))
            async with self._session.request(method, url, headers=headers, ssl=o.tls_verify, allow_redirects=False,
                                             timeout=timeout) as resp:
                location = resp.headers.get("Location")
                if resp.status in _REDIRECTS and location:
                    url = _redirect_target(url, location)
                    if not _same_origin(origin, url):
                        headers = {}  # the configured headers never leave the configured origin (nor come back)
                    if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                        method = "GET"  # as browsers and aiohttp do
                    continue
                await resp.content.read(MAX_BODY)
                return http_status(resp.status, resp.headers, time.time(), self._expected)
        raise ProbeFailure("redirect_loop", f"more than {MAX_REDIRECTS} redirects")

    async def aclose(self) -> None:
        """Close the client session if this probe opened it (a shared one is closed by its owner)."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None


def _origin(url: URL) -> tuple[str, str | None, int | None]:
    return url.scheme, url.host, url.port


def _same_origin(origin: tuple[str, str | None, int | None], url: URL) -> bool:
    """Same scheme, host and port; or the same host upgraded from http to https (its default port)."""
    scheme, host, port = origin
    if url.host != host:
        return False
    return (url.scheme, url.port) == (scheme, port) or (scheme == "http" and url.scheme == "https")


def _redirect_target(current: URL, location: str) -> URL:
    """The absolute URL a redirect names; a Location that is not a URL is a bad answer."""
    try:
        target = current.join(URL(location))
    except (ValueError, TypeError):
        raise ProbeFailure("bad_response", "a redirect without a usable Location") from None
    if target.scheme not in ("http", "https") or not target.host:
        raise ProbeFailure("bad_response", "a redirect to something that is not an http(s) URL")
    return target
