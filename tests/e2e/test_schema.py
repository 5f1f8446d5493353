"""docs/schema against real output: the State of a real daemon process (HTTP, SSE snapshot, Redis key) and every
event type, each seen in one scripted run (a dependency failing, an LLM failover, an override set and cleared, and
a Redis resync), conforms to the published JSON Schemas."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from schemas import EVENT_TYPES, problems
from support import SECRETS, DaemonProcess, request, wait_for

from failsoft.devtools.llmsim import ThreadedSimulator
from failsoft.devtools.localservers import free_port

pytestmark = pytest.mark.e2e

TOKEN = "schema-admin-" + secrets.token_hex(8)
SECRETS.add(TOKEN)


class Subscriber:
    """A redis-py pub/sub reader in a thread, keeping every event published on one channel."""

    def __init__(self, url: str, channel: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe(channel)
        self.events: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            msg = self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if msg is not None:
                self.events.append(json.loads(msg["data"]))

    def close(self) -> None:
        """Stop reading and close the connections."""
        self._stop.set()
        self._thread.join(5)
        self.pubsub.close()
        self.client.close()


@pytest.fixture
def sim() -> Iterator[ThreadedSimulator]:
    """The LLM provider simulator with an OpenAI and an Anthropic endpoint."""
    s = ThreadedSimulator({"openai": "openai", "anthropic": "anthropic"}).start()
    yield s
    s.stop()


def first_sse_snapshot(url: str) -> dict[str, Any]:
    """The data of the first ``snapshot`` event on the SSE stream."""
    import urllib.request

    with urllib.request.urlopen(url + "/service-level/events", timeout=5) as resp:
        event = ""
        for raw in resp:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event:"):
                event = line.partition(":")[2].strip()
            elif line.startswith("data:") and event == "snapshot":
                return dict(json.loads(line.partition(":")[2]))
    raise AssertionError("the stream ended before a snapshot")


def test_the_state_and_every_event_type_conform_to_docs_schema(
    run_daemon: Any, redis_server: Any, sim: ThreadedSimulator
) -> None:
    """One scripted run produces every event type in docs/schema/events; each event (from /history and from the
    Redis channel) and each State (HTTP, SSE snapshot, Redis key, resync) validates against its schema."""
    db_port = free_port()  # nothing listens: db is down from its first probe
    service = f"schema-{secrets.token_hex(3)}"
    deps = {name: sim.dependency_config(name) for name in ("openai", "anthropic")}
    text = f"""
service: {service}
http: {{listen: "127.0.0.1:0", admin_token: "{TOKEN}"}}
publish: {{redis: "{redis_server.url}", prefix: "schema", heartbeat: 300ms}}
defaults: {{interval: 100ms, fast_interval: 50ms, timeout: 500ms, jitter: 0, unhealthy_threshold: 1,
            healthy_threshold: 1, down_interval: {{initial: 100ms, max: 200ms}}, startup_grace: 0s}}
dependencies:
  db: {{kind: tcp, address: "127.0.0.1:{db_port}"}}
  openai: {json.dumps(deps["openai"])}
  anthropic: {json.dumps(deps["anthropic"])}
llm_failover: [openai, anthropic]
policy:
  levels: [full, degraded, limited, cache_only]
  rules:
    - {{level: cache_only, when: {{any_down: [db]}}, message: saved data only}}
    - {{level: limited, when: {{all_down: [openai, anthropic]}}}}
  recover_after: 0s
  capabilities: {{full: [chat, write], limited: [write], cache_only: []}}
"""
    sub = Subscriber(redis_server.url, f"schema:{service}:events")
    try:
        d: DaemonProcess = run_daemon(text)
        state = d.wait_state(lambda s: s["level"] == "cache_only" and s["active_llm"] == "openai")
        sim.set_mode("openai", "error")  # 500s: openai goes down, anthropic takes over
        d.wait_state(lambda s: s["active_llm"] == "anthropic", what="failover to anthropic")
        auth = {"Authorization": f"Bearer {TOKEN}"}
        body = json.dumps({"level": "limited", "ttl": "1m", "reason": "schema test"}).encode()
        assert request(d.url + "/override", "POST", body, auth)[0] == 200
        assert request(d.url + "/override", "DELETE", None, auth)[0] == 200
        r = redis.Redis.from_url(redis_server.url)
        key = f"schema:{service}:state"
        wait_for(lambda: r.exists(key), 10, what="the state key")
        r.delete(key)  # the next write finds the key gone: a resync follows
        wait_for(lambda: any(e["type"] == "resync" for e in sub.events), 10, what="a resync on the channel")
        redis_state = json.loads(r.get(key) or b"null")
        r.close()

        history = d.get("/history?limit=1000")[1]
        events = history + sub.events
        seen = {e["type"] for e in events}
        assert seen >= set(EVENT_TYPES), f"not seen: {set(EVENT_TYPES) - seen}"
        for event in events:
            assert problems("event.json", event) == [], event
            assert problems(f"events/{event['type']}.json", event) == [], event
        states = {"http": d.state(), "first": state, "sse": first_sse_snapshot(d.url), "redis": redis_state,
                  "resync": next(e for e in sub.events if e["type"] == "resync")["state"]}
        for origin, s in states.items():
            assert problems("state.json", s) == [], (origin, s)
        assert states["http"]["schema_version"] == 1
        assert states["http"]["dependencies"]["openai"]["state"] == "down"
    finally:
        sub.close()


def test_the_schemas_reject_what_they_promise_to_reject() -> None:
    """The checks can fail: a State without seq, a dependency in an unknown state, an event with a time that is
    not UTC, and a level_changed without its level are all reported."""
    at = "2026-11-29T12:00:00.000Z"
    dep = {"kind": "tcp", "state": "sleepy", "breaker": "closed", "since": None, "latency_ms": None,
           "consecutive_failures": 0, "reason": None, "last_error": None, "retry_at": None}
    state = {"schema_version": 1, "service": "s", "boot": "b", "level": "full", "since": at, "reason": None,
             "message": None, "capabilities": None, "active_llm": None, "override": None,
             "dependencies": {"db": dep}, "updated_at": at, "valid_until": "2026-11-29 12:00:00", "levels": ["full"],
             "starting": False}
    found = problems("state.json", state)
    assert any("'seq' is a required property" in p for p in found)
    assert any(p.startswith("dependencies/db/state") for p in found)
    assert any(p.startswith("valid_until") for p in found)
    event = {"schema_version": 1, "type": "level_changed", "service": "s", "boot": "b", "seq": 3, "at": at,
             "previous": "full", "reason": None, "message": None, "capabilities": None, "dependencies": {},
             "active_llm": None}
    assert any("'level' is a required property" in p for p in problems("event.json", event))
    assert problems("event.json", {**event, "level": "degraded"}) == []
