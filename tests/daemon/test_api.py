"""failsoft.daemon.api: the local HTTP API, in process (aiohttp TestServer/TestClient) over a real Hub and ServiceState.

The state is driven by hand (ManualClock, statuses fed directly) so that every answer is deterministic.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from aiohttp.web import BaseRequest, Response, StreamResponse

from failsoft.daemon.api import Runtime, build_app, front
from failsoft.daemon.clock import ManualClock
from failsoft.daemon.config import parse_config
from failsoft.daemon.hub import Hub
from failsoft.daemon.state import ServiceState
from failsoft.policies.model import BreakerState, DependencyStatus, DepState

CONFIG = """
service: api-test
http: {listen: "127.0.0.1:0"}
defaults: {startup_grace: 0s}  # first probes are judged at once here; test_grace.py covers the grace
dependencies:
  db: {kind: tcp, address: "127.0.0.1:1"}
  cache: {kind: tcp, address: "127.0.0.1:2"}
"""
STATE_KEYS = {"service", "boot", "level", "seq", "since", "reason", "message", "capabilities", "active_llm",
              "override", "dependencies", "updated_at", "valid_until"}


class WatchedHub(Hub):
    """The real hub, telling the test when a blocking query has parked in ``wait_past`` (so no sleep is needed)."""

    def __init__(self) -> None:
        super().__init__()
        self.parked = asyncio.Event()

    async def wait_past(self, index: int, timeout: float) -> Any:  # noqa: ASYNC109 - the overridden signature
        self.parked.set()
        return await super().wait_past(index, timeout)


def status(name: str, state: DepState = DepState.HEALTHY, reason: str | None = None) -> DependencyStatus:
    """A probed dependency's status."""
    breaker = BreakerState.OPEN if state is DepState.DOWN else BreakerState.CLOSED
    return DependencyStatus(name=name, kind="tcp", state=state, breaker=breaker, reason=reason, probes=1)


@dataclass
class Api:
    """The app under test and the handles to move its state."""

    client: TestClient[Any, Any]
    state: ServiceState
    hub: WatchedHub
    runtime: Runtime

    def feed(self, dep: DependencyStatus) -> None:
        """What the owner task does: apply a status and publish the result."""
        events = self.state.update(dep)
        self.hub.publish(self.state.snapshot(), events)

    def ready(self) -> None:
        """Probe every dependency once (healthy)."""
        self.feed(status("db"))
        self.feed(status("cache"))


@pytest.fixture(params=["routed", "front"])
async def api(request: pytest.FixtureRequest) -> AsyncIterator[Api]:
    """The HTTP API on a free loopback port, with the unknown State published as at start-up: every test runs
    against the routed app alone, and with ``front`` (the daemon's server handler, answering a plain
    ``GET /service-level`` before routing), which must answer exactly alike."""
    config = parse_config(CONFIG, {})
    hub = WatchedHub()
    state = ServiceState(config, ManualClock())
    hub.publish(state.snapshot(), [])
    runtime = Runtime(config=config, hub=hub, inbox=asyncio.Queue())
    async with TestServer(build_app(runtime), host="127.0.0.1", port=0) as server:
        if request.param == "front":
            assert server.runner is not None and server.runner.server is not None
            routed = server.runner.server.request_handler
            server.runner.server.request_handler = front(runtime, routed)
        async with TestClient(server) as client:
            yield Api(client, state, hub, runtime)


async def test_front_answers_a_plain_read_itself_and_routes_everything_else() -> None:
    """``front`` takes exactly ``GET``/``HEAD /service-level`` without a query; any other request reaches the
    routed app, which gives the same answer for the same State."""
    config = parse_config(CONFIG, {})
    hub = Hub()
    hub.publish(ServiceState(config, ManualClock()).snapshot(), [])
    runtime = Runtime(config=config, hub=hub, inbox=asyncio.Queue())
    routed_paths: list[str] = []

    async def routed(request: BaseRequest) -> StreamResponse:
        routed_paths.append(f"{request.method} {request.raw_path}")
        return Response(status=299)

    handle = front(runtime, routed)
    for method, path in [("GET", "/service-level"), ("HEAD", "/service-level")]:
        resp = await handle(make_mocked_request(method, path))
        assert resp.status == 503  # the State before any level: the plain read's answer, not the router's 299
        assert isinstance(resp, Response) and resp.body == hub.current.body  # type: ignore[union-attr]
        assert resp.headers["X-Failsoft-Index"] == "0"
    for method, path in [("GET", "/service-level?index=0"), ("POST", "/service-level"), ("GET", "/healthz"),
                         ("GET", "/service-level/events"), ("GET", "/Service-Level")]:
        assert (await handle(make_mocked_request(method, path))).status == 299
    assert routed_paths == ["GET /service-level?index=0", "POST /service-level", "GET /healthz",
                            "GET /service-level/events", "GET /Service-Level"]


def assert_error(body: Any, code: str | None = None) -> None:
    """The contract's error shape: {"error": {"code": ..., "message": ...}}."""
    assert set(body) == {"error"}
    assert isinstance(body["error"]["code"], str)
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code


async def test_before_the_first_evaluation_the_level_is_unknown_with_503(api: Api) -> None:
    """Until a level is computed: 503 with the State body saying level unknown, and the index header."""
    resp = await api.client.get("/service-level")
    assert resp.status == 503
    body = await resp.json()
    assert body["level"] == "unknown"
    assert body["seq"] == 0
    assert resp.headers["X-Failsoft-Index"] == "0"


async def test_readyz_is_503_until_every_dependency_was_probed_then_200(api: Api) -> None:
    """Readiness waits for the first probe of every dependency and names the missing ones."""
    resp = await api.client.get("/readyz")
    assert resp.status == 503
    assert_error(await resp.json())
    api.feed(status("db"))
    resp = await api.client.get("/readyz")
    assert resp.status == 503
    assert "cache" in (await resp.json())["error"]["message"]
    api.feed(status("cache", DepState.DOWN, "timeout"))
    resp = await api.client.get("/readyz")
    assert resp.status == 200
    assert (await resp.json())["level"] == "degraded"


async def test_healthz_does_not_depend_on_dependencies(api: Api) -> None:
    """Liveness is 200 with every dependency down, and 503 only when one of the daemon's own tasks died."""
    api.feed(status("db", DepState.DOWN, "timeout"))
    api.feed(status("cache", DepState.DOWN, "timeout"))
    resp = await api.client.get("/healthz")
    assert resp.status == 200

    async def crash() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(crash(), name="probe:db")
    api.runtime.tasks["probe:db"] = task
    await asyncio.gather(task, return_exceptions=True)
    resp = await api.client.get("/healthz")
    assert resp.status == 503
    assert "probe:db" in (await resp.json())["error"]["message"]


async def test_service_level_is_200_with_the_state_etag_and_index(api: Api) -> None:
    """After the first evaluation: 200, JSON State, the weak ETag W/"<boot>-<seq>" and X-Failsoft-Index <seq>."""
    api.ready()
    resp = await api.client.get("/service-level")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) >= STATE_KEYS
    assert body["level"] == "full"
    assert body["service"] == "api-test"
    seq = body["seq"]
    assert seq >= 1
    assert resp.headers["ETag"] == f'W/"{body["boot"]}-{seq}"'
    assert resp.headers["X-Failsoft-Index"] == str(seq)


async def test_if_none_match_with_the_current_etag_is_304(api: Api) -> None:
    """A reader holding the current version gets 304 (no body) with the headers; an old one gets the State."""
    api.ready()
    first = await api.client.get("/service-level")
    etag = first.headers["ETag"]
    resp = await api.client.get("/service-level", headers={"If-None-Match": etag})
    assert resp.status == 304
    assert await resp.read() == b""
    assert resp.headers["ETag"] == etag
    assert etag.removeprefix("W/").strip('"').endswith("-" + resp.headers["X-Failsoft-Index"])
    api.feed(status("db", DepState.DOWN, "connection_refused"))
    resp = await api.client.get("/service-level", headers={"If-None-Match": etag})
    assert resp.status == 200
    assert resp.headers["ETag"] != etag
    assert (await resp.json())["level"] == "cache_only"


@pytest.mark.parametrize("header", ['W/"{tag}"', '"{tag}"', '"0", W/"{tag}"', '"{tag}" , "99999"', "*"])
async def test_if_none_match_follows_http_list_and_weak_forms(api: Api, header: str) -> None:
    """RFC 9110: If-None-Match may list several tags, use the weak or the strong form, or be ``*``; each matching
    form is 304 (the weak comparison; caches and proxies send these)."""
    api.ready()
    body = await (await api.client.get("/service-level")).json()
    tag = f"{body['boot']}-{body['seq']}"
    resp = await api.client.get("/service-level", headers={"If-None-Match": header.format(tag=tag)})
    assert resp.status == 304


@pytest.mark.parametrize("header", ['"{seq}"', 'W/"{seq}"', 'W/"0badbe-{seq}"', '"{tag}x"', 'W/{tag}', "{tag}"])
async def test_if_none_match_with_a_tag_from_another_boot_or_format_is_the_state(api: Api, header: str) -> None:
    """A tag of another process (whatever its seq), the seq alone (the old form) or a malformed tag never match."""
    api.ready()
    body = await (await api.client.get("/service-level")).json()
    tag = f"{body['boot']}-{body['seq']}"
    resp = await api.client.get("/service-level", headers={"If-None-Match": header.format(seq=body["seq"], tag=tag)})
    assert resp.status == 200
    assert (await resp.json())["boot"] == body["boot"]


async def test_blocking_query_returns_as_soon_as_seq_passes_the_index(api: Api) -> None:
    """``?index=N&wait=5m`` blocks while seq == N and answers on the next change (within the test's deadline,
    far below the wait: the change ended it)."""
    api.ready()
    seq = (await (await api.client.get("/service-level")).json())["seq"]
    poll = asyncio.create_task(api.client.get(f"/service-level?index={seq}&wait=5m"))
    await asyncio.wait_for(api.hub.parked.wait(), 10)
    assert not poll.done()
    api.feed(status("db", DepState.DOWN, "connection_refused"))
    resp = await asyncio.wait_for(poll, 30)
    assert resp.status == 200
    body = await resp.json()
    assert body["seq"] > seq
    assert body["level"] == "cache_only"
    assert resp.headers["X-Failsoft-Index"] == str(body["seq"])


async def test_blocking_query_times_out_with_the_unchanged_state(api: Api) -> None:
    """With no change, the query parks, then answers when ``wait`` ends with the same State and index."""
    api.ready()
    seq = (await (await api.client.get("/service-level")).json())["seq"]
    poll = asyncio.create_task(api.client.get(f"/service-level?index={seq}&wait=1s"))
    await asyncio.wait_for(api.hub.parked.wait(), 10)  # it waited: nothing else can end it but the wait
    resp = await asyncio.wait_for(poll, 30)
    assert resp.status == 200
    assert (await resp.json())["seq"] == seq
    assert resp.headers["X-Failsoft-Index"] == str(seq)


async def test_blocking_query_with_an_old_index_answers_at_once(api: Api) -> None:
    """An index below the current seq means the reader is behind: no waiting at all."""
    api.ready()
    resp = await asyncio.wait_for(api.client.get("/service-level?index=0&wait=5m"), 30)
    assert resp.status == 200
    assert not api.hub.parked.is_set()


async def test_blocking_query_with_an_index_from_before_a_restart_answers_at_once(api: Api) -> None:
    """An index above the current seq was taken from an earlier boot (seq began again): answer at once with the
    State, whose new `boot` tells the reader to resynchronise, instead of parking it for the whole wait."""
    api.ready()
    state = await (await api.client.get("/service-level")).json()
    resp = await asyncio.wait_for(api.client.get(f"/service-level?index={state['seq'] + 500}&wait=5m"), 30)
    assert resp.status == 200
    body = await resp.json()
    assert body["boot"] == state["boot"]
    assert body["seq"] == state["seq"]
    assert not api.hub.parked.is_set()


async def test_blocking_query_with_the_boot_and_seq_waits_for_the_next_change(api: Api) -> None:
    """``?index=<boot>-<seq>`` (the ETag's tag) of the current State parks the query until the next change."""
    api.ready()
    body = await (await api.client.get("/service-level")).json()
    poll = asyncio.create_task(api.client.get(f"/service-level?index={body['boot']}-{body['seq']}&wait=30s"))
    await asyncio.wait_for(api.hub.parked.wait(), 5)
    assert not poll.done()
    api.feed(status("db", DepState.DOWN, "connection_refused"))
    resp = await asyncio.wait_for(poll, 10)
    assert (await resp.json())["seq"] > body["seq"]


@pytest.mark.parametrize("index", ["0badbe-{seq}", "0badbe-0", "0badbe-{above}"])
async def test_blocking_query_with_an_index_of_another_boot_answers_at_once(api: Api, index: str) -> None:
    """An index of another process answers with the current State without parking, even at the same seq."""
    api.ready()
    body = await (await api.client.get("/service-level")).json()
    query = index.format(seq=body["seq"], above=body["seq"] + 5)
    resp = await asyncio.wait_for(api.client.get(f"/service-level?index={query}&wait=300s"), 10)
    assert resp.status == 200
    assert (await resp.json())["boot"] == body["boot"]
    assert not api.hub.parked.is_set()


async def test_a_change_that_does_not_move_seq_does_not_end_a_blocking_query(api: Api) -> None:
    """A republished State with the same seq (a new latency, a refresh) keeps the query parked: its answer is the
    State of the real change that followed, not the republished one."""
    api.ready()
    seq = (await (await api.client.get("/service-level")).json())["seq"]
    poll = asyncio.create_task(api.client.get(f"/service-level?index={seq}&wait=5m"))
    await asyncio.wait_for(api.hub.parked.wait(), 10)
    api.hub.publish(api.state.snapshot(), [])
    for _ in range(20):  # give a wrongly woken query every chance to answer with the republished State
        await asyncio.sleep(0)
    assert not poll.done()
    api.feed(status("db", DepState.DOWN, "connection_refused"))
    resp = await asyncio.wait_for(poll, 30)
    assert (await resp.json())["seq"] > seq


@pytest.mark.parametrize("query", ["wait=abc", "index=-1", "index=x", "index=1.5", "index=1&wait=-3s",
                                   "index=1&wait=forever", "index=%C2%B2", "index=abc-", "index=-abc-1",
                                   "index=a-b-1", "index=abc-%EF%BC%91", "index=" + "9" * 40,
                                   "index=1&wait=1e3", "index=1&wait=%205s"])
async def test_bad_query_parameters_are_400_json(api: Api, query: str) -> None:
    """Unusable ``index`` or ``wait`` values are refused with a JSON error saying what is wrong (a ``wait`` the
    OpenAPI pattern does not allow, with an exponent or a space, is refused too)."""
    api.ready()
    resp = await api.client.get(f"/service-level?{query}")
    assert resp.status == 400
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert_error(body)
    name = query.rsplit("&", maxsplit=1)[-1].split("=", maxsplit=1)[0]
    assert name in body["error"]["message"]


async def test_unknown_path_is_404_json(api: Api) -> None:
    """An unknown endpoint answers the contract's JSON error, not aiohttp's text page."""
    resp = await api.client.get("/no-such-thing")
    assert resp.status == 404
    assert resp.content_type == "application/json"
    assert_error(await resp.json(), "not_found")


async def test_post_on_service_level_is_405_json_with_allow(api: Api) -> None:
    """A wrong method is 405 with an Allow header and a JSON error."""
    resp = await api.client.post("/service-level", data=b"{}")
    assert resp.status == 405
    assert resp.content_type == "application/json"
    assert "GET" in resp.headers["Allow"]
    assert_error(await resp.json(), "method_not_allowed")
