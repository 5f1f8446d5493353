"""A provider simulator: a real HTTP server answering in the OpenAI, Anthropic and Gemini wire formats.

Used by the tests and by ``failsoft demo``. Each simulated provider has a name (the first segment of its
URLs), a wire format and a mode that can be changed while it runs, from Python (``set_mode``) or with
curl (``POST /_sim/<name>`` with a JSON body such as ``{"mode": "rate_limit", "retry_after": 10}``).
It only speaks the probe paths and the 1-token requests; it counts every request it receives.

Modes (numeric aliases in brackets): ``healthy``, ``slow`` (``delay`` s), ``hang``, ``auth`` [401],
``forbidden`` [403], ``not_found`` [404], ``rate_limit`` [429] (``retry_after`` s, ``form``: seconds, ms,
date, gemini, reset, none), ``quota``, ``error`` [500], ``unavailable`` [503], ``overloaded`` [529] (both with
``retry-after`` when given ``retry_after``),
``status`` (any ``status``), ``reset`` (TCP reset), ``bad_json``, ``truncated``, ``huge``, ``redirect_loop``,
``flaky`` (each answer fails at random with probability ``rate``, default 0.3, in the way mode ``fail`` does,
default ``error``; ``seed`` makes the sequence repeatable).
Every mode takes ``duration`` (s, then back to healthy), ``headers`` (extra answer headers) and the
headroom figures ``limit``, ``remaining``, ``tokens_limit``, ``tokens_remaining``, ``reset`` (s), or
``ratelimit: false`` to send none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import re
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")
WIRES = ("openai", "anthropic", "gemini")
MODES = frozenset({
    "healthy", "slow", "hang", "auth", "forbidden", "not_found", "rate_limit", "quota", "error", "unavailable",
    "overloaded", "status", "reset", "bad_json", "truncated", "huge", "redirect_loop", "flaky",
})
ALIASES = {"401": "auth", "403": "forbidden", "404": "not_found", "429": "rate_limit", "500": "error",
           "503": "unavailable", "529": "overloaded"}
RETRY_FORMS = ("seconds", "ms", "date", "gemini", "reset", "none")
_NUMBERS = frozenset({"delay", "retry_after", "limit", "remaining", "tokens_limit", "tokens_remaining", "reset",
                      "size", "status", "duration", "rate", "seed"})
_LOG_KEPT = 1000  # requests remembered per provider (the count is kept forever)
_GEMINI_CALL = re.compile(r"/v1beta/models/[^/]+:generateContent")
_ENDPOINTS: Mapping[str, Mapping[tuple[str, str], str]] = {
    "openai": {("GET", "/v1/models"): "models", ("POST", "/v1/chat/completions"): "completion"},
    "anthropic": {("GET", "/v1/models"): "models", ("POST", "/v1/messages"): "completion"},
    "gemini": {("GET", "/v1beta/models"): "models"},
}


@dataclass(frozen=True, slots=True)
class SimRequest:
    """One request a simulated provider received (``at`` is ``time.monotonic()``)."""

    at: float
    method: str
    path: str
    headers: Mapping[str, str]
    body: Any


@dataclass(frozen=True, slots=True)
class Mode:
    """What a provider does now; ``until`` (monotonic) ends it, back to healthy."""

    name: str = "healthy"
    params: Mapping[str, Any] = field(default_factory=dict)
    until: float | None = None


@dataclass
class _Provider:
    name: str
    wire: str
    key: str | None
    mode: Mode = field(default_factory=Mode)
    count: int = 0
    log: deque[SimRequest] = field(default_factory=lambda: deque(maxlen=_LOG_KEPT))
    rng: random.Random = field(default_factory=random.Random)

    def current(self, now: float) -> Mode:
        if self.mode.until is not None and now >= self.mode.until:
            self.mode = Mode()
        return self.mode

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "wire": self.wire, "mode": self.mode.name, "params": dict(self.mode.params),
                "requests": self.count}


class ProviderSimulator:
    """Simulated providers by name, e.g. ``ProviderSimulator({"openai": "openai", "claude": "anthropic"})``.

    ``keys`` (optional, by provider name) makes a provider refuse any other API key, as the real ones do.
    """

    def __init__(self, providers: Mapping[str, str], keys: Mapping[str, str] | None = None) -> None:
        for name, wire in providers.items():
            if wire not in WIRES or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name == "_sim":
                raise ValueError(f"bad simulated provider {name!r}: {wire!r} (wire formats: {', '.join(WIRES)})")
        self._providers = {n: _Provider(n, w, (keys or {}).get(n)) for n, w in providers.items()}
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.url = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (0 picks a free port); ``url`` is then the root URL."""
        app = web.Application()
        app.router.add_get("/_sim", self._control_all)
        app.router.add_route("*", "/_sim/{name}", self._control)
        app.router.add_route("*", "/{name}/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.url = f"http://{host}:{bound[1]}"

    async def stop(self) -> None:
        """Release hung requests and stop listening."""
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def base_url(self, name: str) -> str:
        """The ``base_url`` a failsoft config uses for provider ``name`` (with ``/v1`` for the OpenAI format)."""
        p = self._providers[name]
        return f"{self.url}/{name}/v1" if p.wire == "openai" else f"{self.url}/{name}"

    def dependency_config(self, name: str, api_key: str | None = None) -> dict[str, Any]:
        """The ``dependencies.<name>`` entry of a failsoft config for provider ``name``."""
        p = self._providers[name]
        return {"kind": "llm", "provider": p.wire, "base_url": self.base_url(name),
                "api_key": api_key or p.key or f"sim-key-{name}"}

    def set_mode(self, name: str, mode: str, **params: Any) -> None:
        """Change what provider ``name`` does; ``duration`` (seconds) makes it go back to healthy after."""
        mode = ALIASES.get(str(mode), str(mode))
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (expected one of: {', '.join(sorted(MODES))})")
        if params.get("form", "seconds") not in RETRY_FORMS:
            raise ValueError(f"unknown form {params['form']!r} (expected one of: {', '.join(RETRY_FORMS)})")
        for key, value in params.items():
            if key in _NUMBERS and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
                raise ValueError(f"{key} must be a number of at least 0, got {value!r}")
            if key not in _NUMBERS | {"form", "headers", "ratelimit", "fail"}:
                raise ValueError(f"unknown parameter {key!r}")
        if not isinstance(params.get("headers", {}), dict):
            raise ValueError("headers must be an object of header names to values")
        if mode == "flaky":
            fail = ALIASES.get(str(params.get("fail", "error")), str(params.get("fail", "error")))
            if fail not in MODES - {"flaky", "healthy"}:
                raise ValueError(f"fail must be a failing mode, got {fail!r}")
            if not 0 <= float(params.get("rate", 0.3)) <= 1:
                raise ValueError(f"rate must be from 0 to 1, got {params['rate']!r}")
            params = {**params, "fail": fail}
            if "seed" in params:
                self._providers[name].rng.seed(params["seed"])
        duration = params.pop("duration", None)
        until = time.monotonic() + float(duration) if duration is not None else None
        self._providers[name].mode = Mode(mode, params, until)

    def mode(self, name: str) -> Mode:
        """What provider ``name`` does now."""
        return self._providers[name].current(time.monotonic())

    def requests(self, name: str) -> int:
        """How many requests provider ``name`` received so far."""
        return self._providers[name].count

    def received(self, name: str) -> list[SimRequest]:
        """The last requests provider ``name`` received, oldest first."""
        return list(self._providers[name].log)

    # -- control endpoint ------------------------------------------------------------------------------------

    async def _control_all(self, request: web.Request) -> web.Response:
        return web.json_response({"providers": [p.info() for p in self._providers.values()]})

    async def _control(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self._providers:
            return web.json_response({"error": f"no simulated provider {name!r}"}, status=404)
        if request.method == "POST":
            try:
                self._set_from_json(name, await request.text())
            except (ValueError, TypeError) as exc:
                hint = 'send a JSON body like {"mode": "error"} or {"mode": "rate_limit", "retry_after": 10}'
                return web.json_response({"error": f"{exc}; {hint}"}, status=400)
        return web.json_response(self._providers[name].info())

    def _set_from_json(self, name: str, text: str) -> None:
        body = json.loads(text) if text.strip() else None
        if not isinstance(body, dict) or "mode" not in body:
            raise ValueError("expected a JSON object with a mode")
        params = dict(body)
        self.set_mode(name, str(params.pop("mode")), **params)

    # -- provider endpoints ----------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        p = self._providers.get(request.match_info["name"])
        if p is None:
            return web.json_response({"error": "no such simulated provider"}, status=404)
        path = "/" + request.match_info["tail"]
        raw = await request.read()
        body = None
        with contextlib.suppress(ValueError):
            body = json.loads(raw) if raw else None
        p.count += 1
        p.log.append(SimRequest(time.monotonic(), request.method, path, dict(request.headers), body))
        mode = p.current(time.monotonic())
        endpoint = _endpoint(p.wire, request.method, path)
        if endpoint is None:
            return _error(p.wire, "not_found", 404, mode, message=f"Invalid URL ({request.method} {path})")
        presented = _presented_key(p.wire, request)
        if mode.name in ("healthy", "slow") and p.key is not None and presented != p.key:
            if p.wire == "gemini":
                return _error(p.wire, "auth", 400, mode)  # Gemini: 400 API_KEY_INVALID
            return _error(p.wire, "auth", 401, mode, message=_key_message(presented))
        return await self._answer(p, mode, endpoint, request, body)

    async def _answer(
        self, p: _Provider, mode: Mode, endpoint: str, request: web.Request, body: Any
    ) -> web.StreamResponse:
        name = mode.name
        if name == "flaky":
            failing = p.rng.random() < float(mode.params.get("rate", 0.3))
            mode = Mode(str(mode.params["fail"]) if failing else "healthy", mode.params, mode.until)
            name = mode.name
        if name == "slow":
            await asyncio.sleep(float(mode.params.get("delay", 1.0)))
        if name in ("healthy", "slow"):
            model = body.get("model") if isinstance(body, dict) else None
            model = model or _gemini_model(request.path)
            if p.wire == "openai" and endpoint == "completion" and _refuses_max_tokens(body):
                return web.json_response(_MAX_TOKENS_REFUSED, status=400)
            return web.json_response(_success(p.wire, endpoint, model), headers=_headroom(p.wire, mode))
        if name == "hang":
            await self._stopping.wait()
            return web.Response(status=503)
        if name == "reset":
            return _reset(request)
        if name in ("bad_json", "truncated", "huge"):
            return await _broken(name, request, mode)
        if name == "redirect_loop":
            return web.Response(status=302, headers={"Location": request.path_qs})
        if name == "rate_limit":
            return _rate_limited(p.wire, mode)
        status = int(mode.params.get("status", _STATUS.get(name, 500)))
        if name == "auth" and p.wire == "gemini" and "status" not in mode.params:
            status = 400  # Gemini refuses a bad key with 400 API_KEY_INVALID, not 401
        retry = None
        if name in ("unavailable", "overloaded") and "retry_after" in mode.params:
            retry = {"retry-after": f"{float(mode.params['retry_after']):g}"}  # "come back in N seconds"
        return _error(p.wire, name, status, mode, extra_headers=retry)


# -- answers ---------------------------------------------------------------------------------------------------

_STATUS = {"auth": 401, "forbidden": 403, "not_found": 404, "quota": 429, "error": 500, "unavailable": 503,
           "overloaded": 529, "status": 500}


# OpenAI's reasoning models (o1, o3, o4-mini, gpt-5...) refuse max_tokens on chat completions; they take
# max_completion_tokens (which every OpenAI chat model accepts). The answer is OpenAI's own.
_REASONING_MODEL = re.compile(r"(?:.*/)?(?:o[0-9]+|gpt-5)(?:[-.:_].*)?", re.IGNORECASE)
_MAX_TOKENS_REFUSED = {"error": {
    "message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' "
               "instead.",
    "type": "invalid_request_error", "param": "max_tokens", "code": "unsupported_parameter"}}


def _refuses_max_tokens(body: Any) -> bool:
    if not isinstance(body, dict) or "max_tokens" not in body:
        return False
    return bool(_REASONING_MODEL.fullmatch(str(body.get("model", ""))))


def _endpoint(wire: str, method: str, path: str) -> str | None:
    found = _ENDPOINTS[wire].get((method, path.rstrip("/") or "/"))
    if found is None and wire == "gemini" and method == "POST" and _GEMINI_CALL.fullmatch(path):
        return "completion"
    return found


def _gemini_model(path: str) -> str | None:
    m = re.search(r"/models/([^/:]+):", path)
    return m[1] if m else None


def _presented_key(wire: str, request: web.Request) -> str | None:
    if wire == "anthropic":
        return request.headers.get("x-api-key")
    if wire == "gemini":
        return request.headers.get("x-goog-api-key") or request.query.get("key")
    auth = request.headers.get("Authorization", "")
    return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None


def _key_message(key: str | None) -> str:
    # OpenAI echoes the key it was given (partly masked); echoing it whole is the harder test for redaction.
    return f"Incorrect API key provided: {key}." if key else "You didn't provide an API key."


def _success(wire: str, endpoint: str, model: str | None) -> dict[str, Any]:
    model = model or {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest"}.get(wire, "gemini-2.0-flash")
    if wire == "openai":
        if endpoint == "models":
            return {"object": "list", "data": [{"id": model, "object": "model", "created": 1721172741,
                                                "owned_by": "system"}]}
        return {"id": "chatcmpl-sim", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "P"}, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9}}
    if wire == "anthropic":
        if endpoint == "models":
            return {"data": [{"type": "model", "id": model, "display_name": model,
                              "created_at": "2024-10-22T00:00:00Z"}], "has_more": True, "first_id": model,
                    "last_id": model}
        return {"id": "msg_sim", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": "P"}], "stop_reason": "max_tokens", "stop_sequence": None,
                "usage": {"input_tokens": 8, "output_tokens": 1}}
    if endpoint == "models":
        return {"models": [{"name": f"models/{model}", "displayName": model,
                            "supportedGenerationMethods": ["generateContent"]}], "nextPageToken": "sim"}
    return {"candidates": [{"content": {"parts": [{"text": "P"}], "role": "model"}, "finishReason": "MAX_TOKENS",
                            "index": 0}],
            "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2},
            "modelVersion": model}


# mode -> (OpenAI type, OpenAI code, Anthropic type, Google status, message)
_ERRORS: Mapping[str, tuple[str, str | None, str, str, str]] = {
    "auth": ("invalid_request_error", "invalid_api_key", "authentication_error", "INVALID_ARGUMENT",
             "invalid x-api-key"),
    "forbidden": ("invalid_request_error", "unsupported_country_region_territory", "permission_error",
                  "PERMISSION_DENIED", "Your API key does not have permission to use the specified resource."),
    "not_found": ("invalid_request_error", "model_not_found", "not_found_error", "NOT_FOUND",
                  "The model does not exist or you do not have access to it."),
    "rate_limit": ("requests", "rate_limit_exceeded", "rate_limit_error", "RESOURCE_EXHAUSTED",
                   "This request would exceed your rate limit. Please try again later."),
    "quota": ("insufficient_quota", "insufficient_quota", "rate_limit_error", "RESOURCE_EXHAUSTED",
              "You have reached your specified API usage limits. You will regain access on 2026-12-01 at 00:00 UTC."),
    "error": ("server_error", None, "api_error", "INTERNAL", "The server had an error processing your request."),
    "unavailable": ("server_error", None, "api_error", "UNAVAILABLE", "The model is overloaded. Try again later."),
    "overloaded": ("server_error", None, "overloaded_error", "UNAVAILABLE", "Overloaded"),
    "status": ("server_error", None, "api_error", "UNKNOWN", "Simulated failure."),
}


def _error(
    wire: str, kind: str, status: int, mode: Mode, *, message: str | None = None,
    extra_headers: Mapping[str, str] | None = None, details: list[dict[str, Any]] | None = None,
) -> web.Response:
    """An error answer in the provider's own format (OpenAI, Anthropic or Google API error)."""
    o_type, o_code, a_type, g_status, text = _ERRORS.get(kind, _ERRORS["status"])
    text = message or text
    body: dict[str, Any]
    if wire == "openai":
        if kind == "quota":
            text = "You exceeded your current quota, please check your plan and billing details."
        elif kind == "auth" and message is None:
            text = "Incorrect API key provided."
        body = {"error": {"message": text, "type": o_type, "param": None, "code": o_code}}
    elif wire == "anthropic":
        body = {"type": "error", "error": {"type": a_type, "message": text}}
    else:
        if kind == "auth" and message is None:
            text = "API key not valid. Please pass a valid API key."
            details = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com"}]
        elif kind == "quota":
            text = "You exceeded your current quota, please check your plan and billing details."
            details = [_quota_failure("GenerateRequestsPerDayPerProjectPerModel-FreeTier"), _retry_info(20.0)]
        body = {"error": {"code": status, "message": text, "status": g_status, **({"details": details} if details
                                                                                  else {})}}
    headers = {**_headroom(wire, mode), **(extra_headers or {})}
    return web.json_response(body, status=status, headers=headers)


def _rate_limited(wire: str, mode: Mode) -> web.Response:
    wait = float(mode.params.get("retry_after", 3.0))
    form = str(mode.params.get("form", "gemini" if wire == "gemini" else "seconds"))
    headers: dict[str, str] = {}
    details: list[dict[str, Any]] = []
    if wire == "gemini":
        details.append(_quota_failure("GenerateRequestsPerMinutePerProjectPerModel-FreeTier"))
    if form == "seconds":
        headers["retry-after"] = f"{wait:g}"
    elif form == "ms":
        headers["retry-after-ms"] = str(round(wait * 1000))
    elif form == "date":
        headers["retry-after"] = formatdate(math.ceil(time.time() + wait), usegmt=True)  # never early
    elif form == "gemini":
        details.append(_retry_info(wait))
    elif form == "reset":
        headers.update(_reset_headers(wire, wait))
    return _error(wire, "rate_limit", 429, mode, extra_headers=headers, details=details)


def _quota_failure(quota_id: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
        "quotaId": quota_id, "quotaDimensions": {"location": "global", "model": "gemini-2.0-flash"}}]}


def _retry_info(seconds: float) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{seconds:g}s"}


def _reset_headers(wire: str, wait: float) -> dict[str, str]:
    """Headers saying the request window is empty until ``wait`` seconds from now."""
    if wire == "openai":
        return {"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": go_duration_text(wait)}
    if wire == "anthropic":
        return {"anthropic-ratelimit-requests-limit": "60", "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-requests-reset": _rfc3339(time.time() + wait)}
    return {}


def _headroom(wire: str, mode: Mode) -> dict[str, str]:
    """The rate limit figures a healthy answer carries (OpenAI and Anthropic formats), plus extra headers."""
    p = mode.params
    extra = {str(k): str(v) for k, v in dict(p.get("headers") or {}).items()}
    explicit = any(k in p for k in ("limit", "remaining", "tokens_limit", "tokens_remaining"))
    if p.get("ratelimit") is False or wire == "gemini" or not (explicit or mode.name in ("healthy", "slow")):
        return extra
    limit, tokens = int(p.get("limit", 1000)), int(p.get("tokens_limit", 200000))
    remaining, tokens_left = int(p.get("remaining", limit - 1)), int(p.get("tokens_remaining", tokens - 10))
    reset = float(p.get("reset", 0.06))
    figures = {"requests": (limit, remaining), "tokens": (tokens, tokens_left)}
    out: dict[str, str] = {}
    for kind, (lim, left) in figures.items():
        if wire == "openai":
            out.update({f"x-ratelimit-limit-{kind}": str(lim), f"x-ratelimit-remaining-{kind}": str(left),
                        f"x-ratelimit-reset-{kind}": go_duration_text(reset)})
        else:
            out.update({f"anthropic-ratelimit-{kind}-limit": str(lim), f"anthropic-ratelimit-{kind}-remaining":
                        str(left), f"anthropic-ratelimit-{kind}-reset": _rfc3339(time.time() + reset)})
    return {**out, **extra}


def go_duration_text(seconds: float) -> str:
    """``6m0s``, ``1.5s``, ``12ms``: durations as OpenAI writes them."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:g}s" if minutes else f"{rest:g}s"


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _reset(request: web.Request) -> web.Response:
    """Answer with a TCP reset: linger 0, then drop the connection."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.Response()


async def _broken(kind: str, request: web.Request, mode: Mode) -> web.StreamResponse:
    """A 200 that is not what a client can use: an HTML page, a cut-off body, or an endless one."""
    if kind == "bad_json":
        return web.Response(text="<html><body>Sign in to the Wi-Fi to continue</body></html>",
                            content_type="text/html")
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    if kind == "truncated":
        resp.content_length = 4096
    await resp.prepare(request)
    if kind == "truncated":
        await resp.write(b'{"object": "list", "data": [{"id": "gpt')
        if request.transport is not None:
            request.transport.close()
        return resp
    chunk = b'{"object": "list", "data": [' + b'{"id": "model", "object": "model"},' * 2000
    with contextlib.suppress(ConnectionError):  # the client stopped reading, as it should
        for _ in range(int(mode.params.get("size", 64 << 20)) // len(chunk)):
            await resp.write(chunk)
    return resp


# -- a simulator for synchronous code (tests that drive a daemon subprocess, tools) ------------------------------


class ThreadedSimulator:
    """A ``ProviderSimulator`` on its own event loop in a background thread, with the same methods, synchronous."""

    def __init__(self, providers: Mapping[str, str], keys: Mapping[str, str] | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="llmsim", daemon=True)
        self._providers, self._keys = dict(providers), dict(keys or {})
        self.sim: ProviderSimulator | None = None

    def start(self, host: str = "127.0.0.1", port: int = 0) -> ThreadedSimulator:
        """Start the thread and the server."""
        self._thread.start()

        async def create() -> ProviderSimulator:
            sim = ProviderSimulator(self._providers, self._keys)  # its asyncio.Event belongs to this loop
            await sim.start(host, port)
            return sim

        self.sim = self._await(create())
        return self

    def _await(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def _on_loop(self, fn: Callable[[ProviderSimulator], T]) -> T:
        async def call() -> T:
            assert self.sim is not None
            return fn(self.sim)

        return self._await(call())

    @property
    def url(self) -> str:
        """The root URL."""
        return self._on_loop(lambda s: s.url)

    def base_url(self, name: str) -> str:
        """See ``ProviderSimulator.base_url``."""
        return self._on_loop(lambda s: s.base_url(name))

    def dependency_config(self, name: str, api_key: str | None = None) -> dict[str, Any]:
        """See ``ProviderSimulator.dependency_config``."""
        return self._on_loop(lambda s: s.dependency_config(name, api_key))

    def set_mode(self, name: str, mode: str, **params: Any) -> None:
        """See ``ProviderSimulator.set_mode``."""
        self._on_loop(lambda s: s.set_mode(name, mode, **params))

    def mode(self, name: str) -> Mode:
        """See ``ProviderSimulator.mode``."""
        return self._on_loop(lambda s: s.mode(name))

    def requests(self, name: str) -> int:
        """See ``ProviderSimulator.requests``."""
        return self._on_loop(lambda s: s.requests(name))

    def received(self, name: str) -> list[SimRequest]:
        """See ``ProviderSimulator.received``."""
        return self._on_loop(lambda s: s.received(name))

    def stop(self) -> None:
        """Stop the server, the loop and the thread."""
        if self.sim is not None:
            self._await(self.sim.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


__all__ = ["MODES", "WIRES", "Mode", "ProviderSimulator", "SimRequest", "ThreadedSimulator", "go_duration_text"]
