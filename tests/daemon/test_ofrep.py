"""failsoft.daemon.ofrep: the OFREP endpoints in process (aiohttp TestServer/TestClient) over a real Hub and
ServiceState driven by hand, so every answer is deterministic. The official SDKs are exercised against the daemon
process in tests/e2e/test_ofrep_sdk.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from failsoft.daemon import ofrep
from failsoft.daemon.api import Runtime, build_app
from failsoft.daemon.clock import ManualClock
from failsoft.daemon.config import parse_config
from failsoft.daemon.hub import Hub
from failsoft.daemon.state import ServiceState
from failsoft.policies.model import BreakerState, DependencyStatus, DepState

CONFIG = """
service: ofrep-test
http: {listen: "127.0.0.1:0"}
dependencies:
  db: {kind: tcp, address: "127.0.0.1:1"}
  openai: {kind: tcp, address: "127.0.0.1:2"}
llm_failover: []
policy:
  recover_after: 0s
  rules:
    - {level: cache_only, when: {any_down: [db]}}
    - {level: limited, when: {any_down: [openai]}}
  capabilities:
    full: [chat, search, write]
    degraded: [chat, search, write]
    limited: [search, write]
    cache_only: [search]
"""
SINGLE = "/ofrep/v1/evaluate/flags/"
BULK = "/ofrep/v1/evaluate/flags"
JSON_UTF8 = {"Content-Type": "application/json; charset=utf-8"}


def status(name: str, state: DepState = DepState.HEALTHY) -> DependencyStatus:
    """A probed dependency's status."""
    breaker = BreakerState.OPEN if state is DepState.DOWN else BreakerState.CLOSED
    return DependencyStatus(name=name, kind="tcp", state=state, breaker=breaker, probes=1)


@dataclass
class Api:
    """The app under test and the handles to move its state."""

    client: TestClient[Any, Any]
    state: ServiceState
    hub: Hub

    def feed(self, dep: DependencyStatus) -> None:
        """What the owner task does: apply a status and publish the result."""
        events = self.state.update(dep)
        self.hub.publish(self.state.snapshot(), events)

    def override(self, level: str) -> None:
        """What the owner does with POST /override."""
        events = self.state.set_override(level, 60, "test")
        self.hub.publish(self.state.snapshot(), events)

    async def flag(self, key: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """POST one flag evaluation; (status, JSON body)."""
        kwargs: dict[str, Any] = {"json": {"context": {}} if body is None else body}
        if headers is not None:
            kwargs = {"data": body if isinstance(body, bytes | str) else b"{}", "headers": headers}
        resp = await self.client.post(SINGLE + key, **kwargs)
        return resp.status, await resp.json(content_type=None)


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    """The HTTP API with the OFREP routes, the unknown State published as at start-up."""
    config = parse_config(CONFIG, {})
    hub = Hub()
    state = ServiceState(config, ManualClock())
    hub.publish(state.snapshot(), [])
    runtime = Runtime(config=config, hub=hub, inbox=asyncio.Queue())
    async with TestServer(build_app(runtime, ofrep.routes()), host="127.0.0.1", port=0) as server, \
            TestClient(server) as client:
        yield Api(client, state, hub)


async def test_before_the_first_evaluation_flags_answer_503_general(api: Api) -> None:
    """Before any level is computed there is no value to give: 503 with errorCode GENERAL (the SDK then uses the
    code default); an unknown key is still 404, since which flags exist does not depend on the State."""
    code, body = await api.flag("service-level")
    assert code == 503
    assert body["key"] == "service-level"
    assert body["errorCode"] == "GENERAL"
    assert "starting" in body["errorDetails"]
    code, body = await api.flag("nope")
    assert (code, body["errorCode"]) == (404, "FLAG_NOT_FOUND")
    resp = await api.client.post(BULK, json={})
    assert resp.status == 503
    assert (await resp.json())["errorCode"] == "GENERAL"


async def test_each_flag_follows_the_level_with_reason_variant_and_metadata(api: Api) -> None:
    """service-level, capability.<name>, active-llm and dependency.<name> carry the State's values, a string
    variant, TARGETING_MATCH and metadata {seq, boot}; when db goes down every one of them follows."""
    api.feed(status("db"))
    api.feed(status("openai"))
    snap = api.state.snapshot()
    code, body = await api.flag("service-level")
    assert code == 200
    assert body == {"key": "service-level", "value": "full", "variant": "full", "reason": "TARGETING_MATCH",
                    "metadata": {"seq": snap.seq, "boot": snap.boot, "service": "ofrep-test"}}
    assert (await api.flag("capability.chat"))[1]["value"] is True
    assert (await api.flag("capability.chat"))[1]["variant"] == "on"
    code, body = await api.flag("active-llm")
    assert (code, body["value"], body["variant"]) == (200, "", "none")
    assert (await api.flag("dependency.db"))[1]["value"] == "healthy"

    api.feed(status("db", DepState.DOWN))
    seq = api.state.snapshot().seq
    code, body = await api.flag("service-level")
    assert (body["value"], body["metadata"]["seq"]) == ("cache_only", seq)
    assert (await api.flag("capability.chat"))[1]["value"] is False
    assert (await api.flag("capability.chat"))[1]["variant"] == "off"
    assert (await api.flag("capability.search"))[1]["value"] is True
    assert (await api.flag("dependency.db"))[1]["value"] == "down"
    assert (await api.flag("dependency.openai"))[1]["value"] == "healthy"


async def test_an_override_is_static(api: Api) -> None:
    """A level forced by an operator is reported with reason STATIC (the policy did not compute it)."""
    api.feed(status("db"))
    api.feed(status("openai"))
    api.override("limited")
    code, body = await api.flag("service-level")
    assert (code, body["value"], body["reason"]) == (200, "limited", "STATIC")
    code, chat = await api.flag("capability.chat")
    assert (code, chat["value"], chat["reason"]) == (200, False, "STATIC")


async def test_unknown_keys_are_flag_not_found(api: Api) -> None:
    """A key we do not have, a capability in no level's list and a dependency not configured are 404
    FLAG_NOT_FOUND with the key echoed back."""
    api.feed(status("db"))
    api.feed(status("openai"))
    for key in ("nope", "capability.teleport", "dependency.elsewhere", "capability.", "Service-Level"):
        code, body = await api.flag(key)
        assert code == 404, key
        assert body["key"] == key
        assert body["errorCode"] == "FLAG_NOT_FOUND"
        assert body["errorDetails"]


async def test_bad_requests_get_the_ofrep_error_shape(api: Api) -> None:
    """Wrong content type, invalid JSON, a body that is not an object and a context that is not an object are
    400 with {key, errorCode, errorDetails} (single) or {errorCode, errorDetails} (bulk), saying what to fix."""
    api.feed(status("db"))
    api.feed(status("openai"))
    cases = [
        (b'{"context": {}}', {"Content-Type": "text/plain"}, "PARSE_ERROR", "Content-Type"),
        (b'{"context": {}}', {"Content-Type": "application/json; charset=latin-1"}, "PARSE_ERROR", "UTF-8"),
        (b'{"context": ', JSON_UTF8, "PARSE_ERROR", "not valid JSON"),
        (b"[1, 2]", JSON_UTF8, "PARSE_ERROR", "JSON object"),
        (b'{"context": "user-1"}', JSON_UTF8, "INVALID_CONTEXT", "context"),
    ]
    for raw, headers, code, words in cases:
        status_, body = await api.flag("service-level", raw, headers)
        assert status_ == 400, raw
        assert body["key"] == "service-level"
        assert body["errorCode"] == code
        assert words in body["errorDetails"]
        resp = await api.client.post(BULK, data=raw, headers=headers)
        assert resp.status == 400
        bulk = await resp.json()
        assert set(bulk) == {"errorCode", "errorDetails"}
        assert bulk["errorCode"] == code


async def test_contexts_the_spec_allows_are_accepted_and_ignored(api: Api) -> None:
    """A rich context (targetingKey, nested attributes), an empty body, no body at all, ``{}`` and unknown top-level
    fields all give the same answer: the level does not depend on who asks."""
    api.feed(status("db"))
    api.feed(status("openai"))
    expected = (await api.flag("service-level"))[1]
    bodies: list[Any] = [
        {"context": {"targetingKey": "user-1", "email": "a@example.com", "plan": {"tier": "gold"}, "n": [1, 2]}},
        {}, {"context": {}}, {"context": {"targetingKey": ""}, "future": True},
    ]
    for body in bodies:
        assert await api.flag("service-level", body) == (200, expected)
    assert await api.flag("service-level", b"", JSON_UTF8) == (200, expected)
    resp = await api.client.post(SINGLE + "service-level")  # no body, no content type
    assert (resp.status, await resp.json()) == (200, expected)


async def test_bulk_lists_every_flag_and_answers_304_while_nothing_changed(api: Api) -> None:
    """The bulk answer holds every flag once (level, each capability, active-llm, each dependency) with an ETag
    W/"<boot>-<seq>"; If-None-Match with it gives 304 until the State changes, then 200 with a new tag; a tag
    from another boot never matches."""
    api.feed(status("db"))
    api.feed(status("openai"))
    resp = await api.client.post(BULK, json={"context": {"targetingKey": "u"}})
    assert resp.status == 200
    body = await resp.json()
    snap = api.state.snapshot()
    tag = resp.headers["ETag"]
    assert tag == f'W/"{snap.boot}-{snap.seq}"'
    keys = [f["key"] for f in body["flags"]]
    assert keys == ["service-level", "capability.chat", "capability.search", "capability.write", "active-llm",
                    "dependency.db", "dependency.openai"]
    assert body["metadata"] == {"seq": snap.seq, "boot": snap.boot, "service": "ofrep-test"}
    for flag in body["flags"]:
        assert flag == (await api.flag(flag["key"]))[1]

    again = await api.client.post(BULK, json={}, headers={"If-None-Match": tag})
    assert again.status == 304
    assert again.headers["ETag"] == tag
    assert await again.read() == b""
    other_boot = await api.client.post(BULK, json={}, headers={"If-None-Match": f'W/"xxxxxx-{snap.seq}"'})
    assert other_boot.status == 200

    api.feed(status("openai", DepState.DOWN))
    changed = await api.client.post(BULK, json={}, headers={"If-None-Match": tag})
    assert changed.status == 200
    assert changed.headers["ETag"] != tag
    flags = {f["key"]: f["value"] for f in (await changed.json())["flags"]}
    assert flags["service-level"] == "limited"
    assert flags["capability.chat"] is False
    assert flags["dependency.openai"] == "down"


async def test_only_post_is_allowed(api: Api) -> None:
    """GET on an evaluation endpoint is 405 naming POST (the JSON error of the rest of the API)."""
    resp = await api.client.get(SINGLE + "service-level")
    assert resp.status == 405
    assert resp.headers["Allow"] == "POST"
