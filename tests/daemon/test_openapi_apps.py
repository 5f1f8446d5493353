"""daemon/openapi/ofrep.yaml and daemon/openapi/report.yaml: each fragment is a self-contained OpenAPI 3.1
document whose references resolve, and every answer the OFREP and report endpoints give (each status they can
answer, driven in process) is listed there with a body matching its schema. (The merged document is checked with
schemathesis against the live daemon by tests of the loader.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from failsoft.daemon import ofrep
from failsoft.daemon.api import Runtime, build_app
from failsoft.daemon.clock import ManualClock, SystemClock
from failsoft.daemon.config import parse_config
from failsoft.daemon.hub import Hub
from failsoft.daemon.report import Reports
from failsoft.daemon.state import ServiceState
from failsoft.policies.model import BreakerState, DependencyStatus, DepState

FRAGMENTS = Path(__file__).resolve().parents[2] / "daemon" / "openapi"
TOKEN = "openapi-report-token-31aa"
CONFIG = f"""
http: {{listen: "127.0.0.1:0", report_token: "{TOKEN}"}}
dependencies:
  db: {{kind: tcp, address: "127.0.0.1:1"}}
policy:
  rules: [{{level: cache_only, when: {{any_down: [db]}}}}]
  capabilities: {{full: [chat, search], degraded: [chat, search], limited: [search], cache_only: [search]}}
"""


def load(name: str) -> dict[str, Any]:
    """One fragment, parsed."""
    return dict(yaml.safe_load((FRAGMENTS / name).read_text()))


def refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` in a document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


@pytest.mark.parametrize("name", ["ofrep.yaml", "report.yaml"])
def test_fragments_are_self_contained_openapi_31(name: str) -> None:
    """openapi 3.1.0, paths and components.schemas present, every $ref local and resolving, every schema a valid
    JSON Schema 2020-12, and every operation lists its responses with a description."""
    doc = load(name)
    assert doc["openapi"] == "3.1.0"
    assert doc["paths"]
    assert doc["components"]["schemas"]
    for ref in refs(doc):
        assert ref.startswith("#/"), ref
        node: Any = doc
        for part in ref[2:].split("/"):
            node = node[part]
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    for item in doc["paths"].values():
        for op in item.values():
            assert op["responses"]
            assert all(r.get("description") for r in op["responses"].values())


class Checker:
    """Checks real answers against a fragment: the status is listed, the body matches its schema."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.seen: set[tuple[str, str]] = set()

    def check(self, path: str, status: int, body: bytes, headers: Any) -> None:
        """One answer of ``POST path`` (a path template of the fragment)."""
        responses = self.doc["paths"][path]["post"]["responses"]
        assert str(status) in responses, f"{path}: {status} is not documented"
        spec = responses[str(status)]
        self.seen.add((path, str(status)))
        for header in spec.get("headers", {}):
            assert header in headers, f"{path} {status}: header {header} documented but missing"
        content = spec.get("content")
        if content is None:
            assert body == b"", f"{path} {status}: a body where none is documented"
            return
        assert headers["Content-Type"].startswith("application/json")
        schema = content["application/json"]["schema"]
        jsonschema.validate(orjson.loads(body), {**self.doc, **schema},
                            cls=jsonschema.Draft202012Validator)

    def documented(self) -> set[tuple[str, str]]:
        """Every (path, status) the fragment lists."""
        return {(p, s) for p, item in self.doc["paths"].items() for s in item["post"]["responses"]}


@pytest.fixture
async def app() -> AsyncIterator[tuple[TestClient[Any, Any], ServiceState, Hub]]:
    """OFREP and report routes over a real Hub and ServiceState (published unknown, as at start-up)."""
    config = parse_config(CONFIG, {})
    hub = Hub()
    state = ServiceState(config, ManualClock())
    hub.publish(state.snapshot(), [])
    reports = Reports(config, {}, SystemClock())
    runtime = Runtime(config=config, hub=hub, inbox=asyncio.Queue())
    async with TestServer(build_app(runtime, [*ofrep.routes(), *reports.routes()]), host="127.0.0.1",
                          port=0) as server, TestClient(server) as client:
        yield client, state, hub


async def test_every_ofrep_answer_is_documented(app: tuple[TestClient[Any, Any], ServiceState, Hub]) -> None:
    """503 before the first level, then 200, 304, 400, 404 and 413 of both OFREP endpoints match ofrep.yaml; every
    documented status was produced."""
    client, state, hub = app
    checker = Checker(load("ofrep.yaml"))
    one, bulk = "/ofrep/v1/evaluate/flags/{key}", "/ofrep/v1/evaluate/flags"
    json_h = {"Content-Type": "application/json"}

    async def post(template: str, url: str, data: bytes = b"{}", headers: dict[str, str] | None = None) -> Any:
        resp = await client.post(url, data=data, headers={**json_h, **(headers or {})})
        checker.check(template, resp.status, await resp.read(), resp.headers)
        return resp

    await post(one, "/ofrep/v1/evaluate/flags/service-level")
    await post(bulk, bulk)
    events = state.update(DependencyStatus(name="db", kind="tcp", state=DepState.HEALTHY, probes=1))
    hub.publish(state.snapshot(), events)
    for key in ("service-level", "capability.chat", "active-llm", "dependency.db"):
        await post(one, f"/ofrep/v1/evaluate/flags/{key}", b'{"context": {"targetingKey": "u"}}')
    await post(one, "/ofrep/v1/evaluate/flags/nope")
    await post(one, "/ofrep/v1/evaluate/flags/a%2Fb")
    await post(one, "/ofrep/v1/evaluate/flags/service-level", b"{", )
    await post(one, "/ofrep/v1/evaluate/flags/service-level", b'{"context": 1}')
    await post(one, "/ofrep/v1/evaluate/flags/service-level", b"{}", {"Content-Type": "text/plain"})
    await post(one, "/ofrep/v1/evaluate/flags/service-level", b" " * (65 * 1024))
    resp = await post(bulk, bulk)
    await post(bulk, bulk, b"{}", {"If-None-Match": resp.headers["ETag"]})
    await post(bulk, bulk, b"[]")
    await post(bulk, bulk, b" " * (65 * 1024))
    events = state.update(DependencyStatus(name="db", kind="tcp", state=DepState.DOWN, breaker=BreakerState.OPEN,
                                           probes=2))
    hub.publish(state.snapshot(), events)
    await post(bulk, bulk)
    assert checker.seen == checker.documented()


async def test_every_report_answer_is_documented(app: tuple[TestClient[Any, Any], ServiceState, Hub]) -> None:
    """202, 400, 401, 403 and 413 of POST /report match report.yaml; every documented status was produced."""
    client, _, _ = app
    checker = Checker(load("report.yaml"))

    async def post(data: bytes, headers: dict[str, str] | None = None) -> None:
        resp = await client.post("/report", data=data, headers={"Content-Type": "application/json",
                                                                **(headers or {})})
        checker.check("/report", resp.status, await resp.read(), resp.headers)

    await post(b'{"dependency": "db", "ok": false, "reason": "timeout", "latency_ms": 3}')
    await post(b'[{"dependency": "db", "ok": false, "reason": "rate_limited", "retry_after": "10s"}]')
    await post(b'{"dependency": "nope", "ok": false}')
    await post(b'{"dependency": "db"}')
    await post(b'{"dependency": "db", "ok": true}', {"Authorization": "Basic x"})
    await post(b'{"dependency": "db", "ok": true}', {"Authorization": "Bearer wrong"})
    await post(orjson.dumps([{"dependency": "db", "ok": True}] * 1001))
    assert checker.seen == checker.documented()
