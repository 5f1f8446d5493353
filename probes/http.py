"""``kind: http``: one request, judged by its status."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import aiohttp

from failsoft.policies.classify import http_status
from failsoft.probes.base import Outcome, ProbeFailure, ProbeHooks

MAX_BODY = 4096  # the status says enough; never buffer a large body


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
        """One request; the body is read up to a few KiB so the connection can be reused."""
        if self._session is None:
            self._session = client_session()
        o = self._options
        try:
            async with self._session.request(
                o.method, o.url, headers=o.headers, ssl=o.tls_verify, max_redirects=5,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            ) as resp:
                await resp.content.read(MAX_BODY)
                return http_status(resp.status, resp.headers, time.time(), self._expected)
        except aiohttp.TooManyRedirects as exc:
            raise ProbeFailure("redirect_loop", "more than 5 redirects") from exc

    async def aclose(self) -> None:
        """Close the client session if this probe opened it (a shared one is closed by its owner)."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
