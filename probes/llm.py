"""``kind: llm``: an LLM provider's free listing call (or a 1-token request), in its own wire format.

Each provider is probed the way its official SDK talks to it (base URL convention, auth headers), so
that a healthy probe means the app's own calls would get through. The answer is judged by
``policies.classify.llm_answer``; this module only builds the request and reads the answer, never more
than ``MAX_BODY`` bytes of it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from failsoft.policies.classify import llm_answer
from failsoft.probes.base import Outcome, ProbeFailure, ProbeHooks
from failsoft.probes.http import client_session
from failsoft.probes.options import Fraction, secret

Provider = Literal["openai", "anthropic", "gemini", "openai_compatible"]

MAX_BODY = 8192  # enough for any error body and the start of a listing; a huge answer is never buffered
MAX_REDIRECTS = 5
ANTHROPIC_VERSION = "2023-06-01"
PING = "ping"  # the whole prompt of a completion probe

DEFAULT_BASE_URLS: Mapping[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
}
# The header each provider reads the key from; a custom header of that name replaces ``api_key``.
AUTH_HEADERS: Mapping[str, str] = {
    "openai": "Authorization",
    "openai_compatible": "Authorization",
    "anthropic": "x-api-key",
    "gemini": "x-goog-api-key",
}


@dataclass(frozen=True, slots=True)
class LlmOptions:
    """Provider, endpoint, key, what to probe, and the headroom under which the provider counts as degraded."""

    provider: Provider
    base_url: str | None = None
    api_key: str | None = secret()
    probe: Literal["models", "completion"] = "models"
    model: str | None = None
    min_headroom: Fraction = 0.05
    headers: dict[str, str] = field(default_factory=dict)
    organization: str | None = None  # OpenAI-Organization
    project: str | None = None  # OpenAI-Project
    tls_verify: bool = True

    def problems(self) -> list[tuple[str, str]]:
        """Config errors as (key, message)."""
        out: list[tuple[str, str]] = []
        if self.base_url is None:
            if self.provider == "openai_compatible":
                out.append(("base_url", "is required for provider openai_compatible "
                                        "(the server's URL including /v1, like http://127.0.0.1:8000/v1)"))
        elif not _is_http_url(self.base_url):
            out.append(("base_url", "expected an http:// or https:// URL with a host, "
                                    f"like {DEFAULT_BASE_URLS.get(self.provider, 'http://127.0.0.1:8000/v1')}"))
        if self.provider != "openai_compatible" and not self.api_key and not self._auth_in_headers():
            out.append(("api_key", f"is required for provider {self.provider} "
                                   f"(read it from the environment: ${{{self.provider.upper()}_API_KEY}})"))
        if self.probe == "completion" and not self.model:
            out.append(("model", "is required when probe is completion (the model the 1-token request goes to)"))
        if self.provider not in ("openai", "openai_compatible"):
            out += [(key, "only applies to providers openai and openai_compatible")
                    for key in ("organization", "project") if getattr(self, key) is not None]
        return out

    def _auth_in_headers(self) -> bool:
        wanted = AUTH_HEADERS[self.provider].lower()
        return any(name.lower() == wanted and value for name, value in self.headers.items())


def _is_http_url(text: str) -> bool:
    try:
        url = URL(text)
    except (ValueError, TypeError):
        return False
    return url.scheme in ("http", "https") and bool(url.host)


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    """The one request a probe sends: built once from the options."""

    method: Literal["GET", "POST"]
    url: URL
    headers: CIMultiDict[str]
    body: bytes | None = None


def build_request(o: LlmOptions) -> ProbeRequest:
    """The listing call (``probe: models``) or the 1-token request (``probe: completion``) for ``o.provider``."""
    base = URL(o.base_url or DEFAULT_BASE_URLS[o.provider])
    headers: CIMultiDict[str] = CIMultiDict({"Accept": "application/json", "User-Agent": "failsoft-probe"})
    if o.provider == "anthropic":
        headers["anthropic-version"] = ANTHROPIC_VERSION
        if o.api_key:
            headers["x-api-key"] = o.api_key
    elif o.provider == "gemini":
        if o.api_key:
            headers["x-goog-api-key"] = o.api_key  # never ?key=: a URL ends up in error texts
    else:
        if o.api_key:
            headers["Authorization"] = f"Bearer {o.api_key}"
        if o.organization:
            headers["OpenAI-Organization"] = o.organization
        if o.project:
            headers["OpenAI-Project"] = o.project
    path, query, payload = _endpoint(o)
    if payload is not None:
        headers["Content-Type"] = "application/json"
    for name, value in o.headers.items():
        headers[name] = value  # custom headers last: a gateway may need its own auth instead of ours
    # The base URL's own query survives (Azure-style gateways put ?api-version= there).
    url = base.with_path(base.path.rstrip("/") + "/" + path).with_query(base.query).update_query(query)
    body = json.dumps(payload).encode() if payload is not None else None
    return ProbeRequest("POST" if payload is not None else "GET", url, headers, body)


def _endpoint(o: LlmOptions) -> tuple[str, dict[str, str], dict[str, Any] | None]:
    """(path under base_url, query, JSON body or None) of the probe, in each provider's SDK convention."""
    message = [{"role": "user", "content": PING}]
    if o.provider == "anthropic":
        if o.probe == "models":
            return "v1/models", {"limit": "1"}, None  # the smallest page: the answer is all we need
        return "v1/messages", {}, {"model": o.model, "max_tokens": 1, "messages": message}
    if o.provider == "gemini":
        if o.probe == "models":
            return "v1beta/models", {"pageSize": "1"}, None
        model = (o.model or "").removeprefix("models/")
        contents = [{"role": "user", "parts": [{"text": PING}]}]
        payload = {"contents": contents, "generationConfig": {"maxOutputTokens": 1}}
        return f"v1beta/models/{model}:generateContent", {}, payload
    if o.probe == "models":
        return "models", {}, None
    return "chat/completions", {}, {"model": o.model, "messages": message, _max_tokens_key(o.model): 1}


# OpenAI's reasoning models (o1, o3, o4-mini, gpt-5 and their dated or suffixed names, also behind a gateway's
# "openai/" prefix) refuse ``max_tokens`` with a 400 and take ``max_completion_tokens``. Other models keep
# ``max_tokens``: OpenAI-compatible servers (vLLM, Ollama, gateways) do not all know the newer name.
_REASONING_MODEL = re.compile(r"(?:.*/)?(?:o[0-9]+|gpt-5)(?:[-.:_].*)?", re.IGNORECASE)


def _max_tokens_key(model: str | None) -> str:
    """The request field that caps the answer for an OpenAI-wire chat model."""
    return "max_completion_tokens" if _REASONING_MODEL.fullmatch(model or "") else "max_tokens"


class LlmProbe:
    """Sends the probe request, follows same-origin redirects, reads a bounded answer and classifies it.

    ``hooks.http_session`` is the client session (one connection pool) shared by the HTTP-based probes of the
    process; the probe leaves closing it to its owner. Without one the probe opens its own.
    """

    def __init__(self, options: LlmOptions, timeout: float, hooks: ProbeHooks) -> None:
        self._options = options
        self._timeout = timeout
        self._request = build_request(options)
        self._session = hooks.http_session
        self._owns_session = self._session is None
        sensitive = [options.api_key or "", *options.headers.values()]
        self._secrets = sorted({s for s in sensitive if len(s) >= 4}, key=len, reverse=True)

    async def check(self) -> Outcome:
        """One probe under one deadline (redirects included); transport errors are raised, answers classified."""
        if self._session is None:
            self._session = client_session()
        deadline = time.monotonic() + self._timeout
        try:
            return await self._send(deadline)
        except aiohttp.ServerDisconnectedError as exc:
            raise ProbeFailure("connection_reset", "the server closed the connection without answering") from exc
        except aiohttp.ClientSSLError as exc:
            raise ProbeFailure("tls", f"TLS failed: {exc}") from exc
        except aiohttp.ClientPayloadError as exc:
            raise ProbeFailure("truncated_response", "the answer was cut short before its end") from exc
        except aiohttp.ClientResponseError as exc:
            raise ProbeFailure("bad_response", f"not a valid HTTP answer ({exc.message})") from exc
        except TimeoutError as exc:
            raise ProbeFailure("timeout", f"no answer within {self._timeout * 1000:g}ms") from exc

    async def _send(self, deadline: float) -> Outcome:
        assert self._session is not None
        r = self._request
        url, seen = r.url, {r.url}
        for _ in range(MAX_REDIRECTS + 1):
            timeout = aiohttp.ClientTimeout(total=max(0.001, deadline - time.monotonic()))
            async with self._session.request(r.method, url, headers=r.headers, data=r.body, allow_redirects=False,
                                             timeout=timeout, ssl=self._options.tls_verify) as resp:
                if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                    url = _redirect_target(url, resp.headers["Location"], seen)
                    continue
                body, complete = await _read_bounded(resp.content)
                return llm_answer(resp.status, resp.headers, body, complete=complete, now=time.time(),
                                  min_headroom=self._options.min_headroom, mask=self._mask)
        raise ProbeFailure("redirect_loop", f"more than {MAX_REDIRECTS} redirects")

    def _mask(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        return text

    async def aclose(self) -> None:
        """Close the session if this probe opened it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None


def _redirect_target(current: URL, location: str, seen: set[URL]) -> URL:
    """Where a redirect goes; the keys are only ever sent back to the same host (http may become https)."""
    try:
        target = current.join(URL(location))
    except (ValueError, TypeError):
        raise ProbeFailure("bad_response", "a redirect without a usable Location") from None
    if target in seen:
        raise ProbeFailure("redirect_loop", "redirected back to an address already visited")
    same_origin = (target.scheme, target.port) == (current.scheme, current.port)
    upgrade = current.scheme == "http" and target.scheme == "https"
    if target.host != current.host or not (same_origin or upgrade):
        raise ProbeFailure("misconfigured", f"redirected to another host ({target.host}); set base_url to it",
                           fatal=True)
    seen.add(target)
    return target


async def _read_bounded(content: aiohttp.StreamReader) -> tuple[bytes, bool]:
    """Up to ``MAX_BODY`` bytes of the body, and whether that is all of it."""
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_BODY:
        chunk = await content.read(MAX_BODY + 1 - size)
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)[:MAX_BODY], False
