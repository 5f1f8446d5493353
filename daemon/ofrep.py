"""OpenFeature Remote Evaluation Protocol (OFREP): the published State read as feature flags.

An adapter over the hub's newest State, with no state of its own: every answer is computed from the snapshot
the owner published (and from the config, for which flags exist). Apps in any language read the level with
their OpenFeature SDK's stock OFREP provider.

Flags (see docs/apps.md):

- ``service-level`` (string): the published level.
- ``capability.<name>`` (boolean): the current level allows ``<name>``; a name in no level's list is unknown.
- ``active-llm`` (string): the LLM provider to use now, ``""`` when there is none.
- ``dependency.<name>`` (string): the dependency's state (``healthy``, ``degraded``, ``down``, ``unknown``).

Reasons follow the OFREP schema's enum (STATIC, TARGETING_MATCH, SPLIT, DISABLED, UNKNOWN): a value computed by
the policy from live probes is ``TARGETING_MATCH`` (the OpenFeature reason for "a dynamic evaluation, such as a
rule"), a level forced by an operator override is ``STATIC``, a dependency never probed yet is ``UNKNOWN``.
Before the first evaluation there is no level to give: evaluations answer 503 with errorCode ``GENERAL``, so the
SDK hands the app its code default, as it does for any evaluation error.

The evaluation context is accepted and ignored: the level is the same for every user of the app.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

from failsoft.daemon.api import RUNTIME, Runtime
from failsoft.daemon.hub import Published
from failsoft.daemon.identity import etag_matches
from failsoft.policies.model import DepState

PREFIX = "/ofrep/v1/evaluate/flags"
JSON = "application/json"
MAX_KEY = 200  # a flag key longer than any we could have is echoed back cut to this length

LEVEL, ACTIVE_LLM = "service-level", "active-llm"
CAPABILITY, DEPENDENCY = "capability.", "dependency."

# OFREP reasons (the schema's enum) and error codes.
TARGETING_MATCH, STATIC, UNKNOWN = "TARGETING_MATCH", "STATIC", "UNKNOWN"
FLAG_NOT_FOUND, PARSE_ERROR, INVALID_CONTEXT, GENERAL = "FLAG_NOT_FOUND", "PARSE_ERROR", "INVALID_CONTEXT", "GENERAL"


class BadRequest(Exception):
    """A request body or header the client must fix: ``code`` is the OFREP errorCode, the text says how."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(details)
        self.code = code


def _answer(status: int, body: dict[str, Any], **headers: str) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type=JSON,
                        headers={"Cache-Control": "no-cache", **headers})


# -- the request ------------------------------------------------------------------------------------------


async def read_request(request: web.Request) -> None:
    """Check the content type and the body, and ignore the context: it cannot change the answer.

    The body is a JSON object (no body, or an empty one, counts as ``{}``: some providers send none); its ``context``,
    when present, is an object (OFREP's schema); anything else in it is ignored, for forward compatibility.
    Raises ``BadRequest`` with what to fix.
    """
    raw = await request.read()  # bounded by the app's client_max_size (413 beyond it)
    if not raw:
        return  # no body: nothing to check, whatever type a client library declared for it
    if request.content_type != JSON:
        got = request.headers.get("Content-Type", "none")[:80]
        raise BadRequest(PARSE_ERROR, f"send Content-Type: application/json (got {got})")
    charset = request.charset
    if charset is not None and charset.lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise BadRequest(PARSE_ERROR, f"the body must be UTF-8 JSON (got charset={charset[:40]})")
    if not raw.strip():
        return
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(PARSE_ERROR, f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest(PARSE_ERROR, 'the body must be a JSON object such as {"context": {}}')
    if "context" in body and not isinstance(body["context"], dict):
        raise BadRequest(INVALID_CONTEXT, "context must be a JSON object (an evaluation context)")


# -- the flags --------------------------------------------------------------------------------------------


def flag_keys(runtime: Runtime) -> Iterator[str]:
    """Every flag this daemon answers, in a stable order: the level, capabilities, the LLM, dependencies."""
    yield LEVEL
    for name in sorted(_capabilities(runtime)):
        yield CAPABILITY + name
    yield ACTIVE_LLM
    for name in runtime.config.dependencies:
        yield DEPENDENCY + name


def _capabilities(runtime: Runtime) -> set[str]:
    caps = runtime.config.policy.capabilities or {}
    return {name for names in caps.values() for name in names}


def known(runtime: Runtime, key: str) -> bool:
    """Whether ``key`` names a flag (static: from the config, whatever the State)."""
    if key in (LEVEL, ACTIVE_LLM):
        return True
    if key.startswith(CAPABILITY):
        return key.removeprefix(CAPABILITY) in _capabilities(runtime)
    if key.startswith(DEPENDENCY):
        return key.removeprefix(DEPENDENCY) in runtime.config.dependencies
    return False


def evaluate(pub: Published, key: str) -> dict[str, Any]:
    """One flag's evaluation from a State whose level is known; ``key`` must be ``known``."""
    snap = pub.snapshot
    policy_reason = STATIC if snap.override is not None else TARGETING_MATCH
    value: str | bool
    if key == LEVEL:
        value, variant, reason = snap.level, snap.level, policy_reason
    elif key == ACTIVE_LLM:
        value, variant, reason = snap.active_llm or "", snap.active_llm or "none", TARGETING_MATCH
    elif key.startswith(CAPABILITY):
        value = key.removeprefix(CAPABILITY) in (snap.capabilities or ())
        variant, reason = ("on" if value else "off"), policy_reason
    else:
        state = snap.dependencies[key.removeprefix(DEPENDENCY)].state
        value, variant = str(state), str(state)
        reason = UNKNOWN if state is DepState.UNKNOWN else TARGETING_MATCH
    return {"key": key, "value": value, "variant": variant, "reason": reason, "metadata": _metadata(pub)}


def _metadata(pub: Published) -> dict[str, Any]:
    return {"seq": pub.snapshot.seq, "boot": pub.snapshot.boot, "service": pub.snapshot.service}


def _evaluated(runtime: Runtime) -> Published | None:
    pub = runtime.hub.current
    return pub if pub is not None and pub.snapshot.level != "unknown" else None


_STARTING = "the daemon is starting: no service level has been computed yet; use the code default"


# -- handlers ---------------------------------------------------------------------------------------------


async def evaluate_flag(request: web.Request) -> web.Response:
    """``POST /ofrep/v1/evaluate/flags/{key}``: one flag; 404 ``FLAG_NOT_FOUND`` for a key we do not have."""
    runtime = request.app[RUNTIME]
    key = request.match_info["key"]
    shown = key[:MAX_KEY]
    try:
        await read_request(request)
    except BadRequest as exc:
        return _answer(400, {"key": shown, "errorCode": exc.code, "errorDetails": str(exc)})
    if not known(runtime, key):
        return _answer(404, {"key": shown, "errorCode": FLAG_NOT_FOUND,
                             "errorDetails": f"no flag {shown!r}: see docs/apps.md for the flags"})
    pub = _evaluated(runtime)
    if pub is None:
        return _answer(503, {"key": key, "errorCode": GENERAL, "errorDetails": _STARTING}, **{"Retry-After": "1"})
    return _answer(200, evaluate(pub, key))


async def evaluate_flags(request: web.Request) -> web.Response:
    """``POST /ofrep/v1/evaluate/flags``: every flag, with an ETag; 304 when ``If-None-Match`` still holds."""
    runtime = request.app[RUNTIME]
    try:
        await read_request(request)
    except BadRequest as exc:
        return _answer(400, {"errorCode": exc.code, "errorDetails": str(exc)})
    pub = _evaluated(runtime)
    if pub is None:
        return _answer(503, {"errorCode": GENERAL, "errorDetails": _STARTING}, **{"Retry-After": "1"})
    # The published State's own validator: it changes with every published change, and one from before a restart
    # never matches.
    tag = pub.etag
    if etag_matches(request.headers.get("If-None-Match"), tag):
        return web.Response(status=304, headers={"ETag": tag, "Cache-Control": "no-cache"})
    flags = [evaluate(pub, key) for key in flag_keys(runtime)]
    return _answer(200, {"flags": flags, "metadata": _metadata(pub)}, ETag=tag)


def routes() -> list[web.RouteDef]:
    """The two OFREP evaluation endpoints."""
    return [web.post(PREFIX, evaluate_flags), web.post(PREFIX + "/{key}", evaluate_flag)]
