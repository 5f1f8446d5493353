"""Publishing the level, end to end: the Redis key, channel and stream, SSE, long-poll, override, the app client
and ``failsoft watch``, against the real daemon process, a real Redis and real faults.

The level is moved by a ``kind: tcp`` dependency named ``db`` pointing at a port the test opens and closes.
The first section drives the Redis publisher in process (a real Hub and a real Redis) where a fault must land
between two writes, which a daemon process cannot be timed to.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from typing import Any

import orjson
import pytest
import redis
from support import IN_CI, SECRETS, request, until, wait_for

from failsoft.client import Change, ServiceLevelClient
from failsoft.daemon.clock import ManualClock
from failsoft.daemon.config import PublishSettings, parse_config
from failsoft.daemon.hub import Hub
from failsoft.daemon.publish_redis import SOCKET_TIMEOUT, RedisPublisher
from failsoft.daemon.state import ServiceState
from failsoft.devtools.localservers import free_port
from failsoft.policies.model import BreakerState, DependencyStatus, DepState

pytestmark = pytest.mark.e2e

POLICY = """
policy:
  levels: [full, cache_only]
  rules: [{level: cache_only, when: {any_down: [db]}}]
  recover_after: 0s
  capabilities: {full: [chat, search], cache_only: [search]}
"""
# Every daemon here gets an admin token, registered as a secret, so that the session's leak check covers them all.
ADMIN_TOKEN = "pub-admin-" + secrets.token_hex(10)
SECRETS.add(ADMIN_TOKEN)
FAST = ("defaults: {interval: 100ms, fast_interval: 50ms, timeout: 500ms, jitter: 0, unhealthy_threshold: 1, "
        "healthy_threshold: 1, down_interval: {initial: 100ms, max: 200ms}}")


class TcpPort:
    """A port the test opens (the dependency answers) and closes (connection refused)."""

    def __init__(self) -> None:
        self.port = free_port()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        """Listen and accept (and close) every connection, in a thread."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        sock.settimeout(0.05)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept, args=(sock,), daemon=True)
        self._thread.start()

    @staticmethod
    def _accept(sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
                conn.close()
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        """Stop listening: connects are refused from now on."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


@pytest.fixture
def db_port() -> Iterator[TcpPort]:
    """The dependency's port, open at the start."""
    port = TcpPort()
    port.open()
    yield port
    port.close()


def daemon_config(port: TcpPort, redis_url: str | None = None, *, token: str = ADMIN_TOKEN, heartbeat: str = "500ms",
                  service: str | None = None) -> str:
    """A daemon config: ``db`` on ``port``, fast probes, optionally publishing to Redis."""
    service = service or f"pub-{secrets.token_hex(3)}"
    publish = f'publish: {{redis: "{redis_url}", prefix: "t", heartbeat: {heartbeat}}}' if redis_url else ""
    return f"""
service: {service}
http: {{listen: "127.0.0.1:0", admin_token: "{token}"}}
{publish}
{FAST}
dependencies:
  db: {{kind: tcp, address: "127.0.0.1:{port.port}"}}
{POLICY}
"""


def level_is(level: str) -> Callable[[dict[str, Any]], bool]:
    """A predicate on the State."""
    return lambda s: s.get("level") == level


def at_epoch(text: str) -> float:
    """Epoch seconds of an ISO timestamp from the daemon."""
    return datetime.fromisoformat(text).timestamp()


def assert_consecutive(seqs: list[int], who: str) -> None:
    """Every event, in order, none missing."""
    assert seqs, f"{who} saw no events"
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"{who} saw {seqs}"


# -------------------------------------------------------------------------------------------------------
# Readers as users run them: an SSE reader (what curl -N does), redis-cli SUBSCRIBE, a stream reader


class SSEReader:
    """Reads ``/service-level/events`` in a thread, recording each message and when it arrived."""

    def __init__(self, url: str, last_event_id: str | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self.conn.request("GET", "/service-level/events", headers=headers)
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, self.resp.status
        self.messages: list[dict[str, Any]] = []
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        frame: dict[str, Any] = {}
        try:
            while line := self.resp.readline():
                text = line.decode().rstrip("\r\n")
                if not text:
                    if frame:
                        frame["received"] = time.time()
                        self.messages.append(frame)
                    frame = {}
                elif not text.startswith(":"):
                    name, _, value = text.partition(": ")
                    frame[name] = orjson.loads(value) if name == "data" else value
        except (OSError, http.client.HTTPException, ValueError):
            pass
        finally:
            self.ended.set()

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The event payloads so far (snapshot excluded), optionally of one type."""
        return [m["data"] for m in list(self.messages)
                if m.get("event") != "snapshot" and (kind is None or m.get("event") == kind)]

    def wait(self, count: int = 1, timeout: float = 10) -> list[dict[str, Any]]:
        """The messages once there are at least ``count``."""
        return wait_for(lambda: self.messages if len(self.messages) >= count else None, timeout,
                        what=f"{count} messages")

    def close(self) -> None:
        """Hang up."""
        with contextlib.suppress(OSError):
            if self.conn.sock is not None:
                self.conn.sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()
        self._thread.join(5)


class RedisCliSubscriber:
    """``redis-cli SUBSCRIBE`` as a user runs it, its output parsed into messages with their arrival time."""

    def __init__(self, url: str, channel: str) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            if IN_CI:
                pytest.fail("CI needs redis-cli")
            pytest.skip("redis-cli is not installed")
        parts = urllib.parse.urlsplit(url)  # some redis-cli versions mishandle -u with an empty user name
        auth = ["-a", parts.password] if parts.password else []
        self.proc = subprocess.Popen(
            [cli, "--no-auth-warning", "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port), *auth,
             "SUBSCRIBE", channel], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.lines: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        wait_for(lambda: len(self.lines) >= 3, 10, what="redis-cli to subscribe")
        assert [line for _, line in self.lines[:3]] == ["subscribe", channel, "1"], self.lines

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append((time.time(), raw.decode().rstrip("\n")))

    def messages(self) -> list[tuple[float, dict[str, Any]]]:
        """(arrival time, event) for every ``message`` reply so far."""
        lines = list(self.lines)
        return [(lines[i][0], orjson.loads(lines[i + 2][1])) for i in range(len(lines) - 2)
                if lines[i][1] == "message"]

    def close(self) -> None:
        """Stop redis-cli."""
        self.proc.kill()
        self.proc.wait(5)


def stream_events(r: redis.Redis, key: str) -> list[dict[str, Any]]:
    """Every event in the stream, oldest first (what a stream reader from ``0`` sees)."""
    entries: list[tuple[bytes, dict[bytes, bytes]]] = r.xrange(key)  # type: ignore[assignment]
    return [orjson.loads(fields[b"event"]) for _, fields in entries]


def get_json(r: redis.Redis, key: str) -> Any:
    """The JSON at ``key``."""
    raw = r.get(key)
    assert isinstance(raw, bytes), f"{key} is missing"
    return orjson.loads(raw)


# -------------------------------------------------------------------------------------------------------
# The Redis publisher in process


class CountingMetrics:
    """Records ``publish_failed`` calls (the publisher's only use of Metrics)."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def publish_failed(self, sink: str) -> None:
        """Count one failed publish."""
        self.failed.append(sink)


class Owner:
    """What the state owner does, by hand: flip ``db`` and publish the result on the hub."""

    def __init__(self, hub: Hub) -> None:
        config = parse_config("dependencies: {db: {kind: tcp, address: '127.0.0.1:1'}}\n" + POLICY, {})
        self.hub = hub
        self.state = ServiceState(config, ManualClock(), validity=3.0)
        self.down = True
        self.hub.publish(self.state.snapshot(), [])

    def flip(self) -> None:
        """db changes state; the level follows."""
        self.down = not self.down
        status = DependencyStatus(name="db", kind="tcp", state=DepState.DOWN if self.down else DepState.HEALTHY,
                                  breaker=BreakerState.OPEN if self.down else BreakerState.CLOSED,
                                  reason="connection_refused" if self.down else None, probes=1)
        events = self.state.update(status)
        self.hub.publish(self.state.snapshot(), events)



@contextlib.asynccontextmanager
async def publisher(url: str, heartbeat: float = 0.3) -> AsyncIterator[tuple[RedisPublisher, Owner, CountingMetrics]]:
    """A started RedisPublisher on a fresh hub, with its owner stand-in (level full at seq 2) and metrics."""
    hub = Hub()
    metrics = CountingMetrics()
    pub = RedisPublisher(PublishSettings(redis_url=url, prefix="t", heartbeat=heartbeat),
                         f"svc-{secrets.token_hex(3)}", hub, metrics)  # type: ignore[arg-type]
    await pub.start()
    owner = Owner(hub)
    owner.flip()
    try:
        yield pub, owner, metrics
    finally:
        await pub.aclose()


async def test_publisher_keeps_key_channel_and_stream_in_step(redis_server: Any) -> None:
    """Each event goes to the channel and the stream in seq order; the key holds the newest State with a ttl of
    three heartbeats, refreshed while nothing changes."""
    r = redis.Redis.from_url(redis_server.url)
    async with publisher(redis_server.url, heartbeat=0.3) as (pub, owner, _):
        sub = r.pubsub()  # type: ignore[no-untyped-call]
        sub.subscribe(pub.channel)
        await until(lambda: r.exists(pub.key), what="the state key")
        for _ in range(5):
            owner.flip()
        current = owner.hub.current
        assert current is not None
        await until(lambda: r.get(pub.key) == current.body, what="the key to hold the newest State")
        events = await until(lambda: (e := stream_events(r, pub.stream)) and e[-1]["seq"] == current.seq and e)
        assert_consecutive([e["seq"] for e in events], "the stream")
        assert [e["seq"] for e in events] == list(range(1, current.seq + 1))
        assert events == [orjson.loads(e.body) for e in owner.hub.ring]
        channel: list[int] = []
        # Subscribed before the publisher first ran (no await in between): the channel carried every event.
        while (m := sub.get_message(timeout=0.5)) is not None or len(channel) < current.seq:
            if m is not None and m["type"] == "message":
                channel.append(orjson.loads(m["data"])["seq"])
        assert channel == list(range(1, current.seq + 1))
        assert 0 < r.pttl(pub.key) <= 900
        # Nothing changes for a while: the heartbeat keeps rewriting the key before it can expire.
        deadline = time.monotonic() + 1.5
        await until(lambda: time.monotonic() > deadline and r.exists(pub.key), what="the key to outlive its ttl")
        sub.close()
    # Stopped: nobody refreshes the key and it expires after three heartbeats ("the sidecar is gone").
    await until(lambda: not r.exists(pub.key), within=5, what="the key to expire")


async def test_a_command_failing_inside_the_transaction_is_a_failure_and_nothing_is_lost(redis_server: Any) -> None:
    """Someone made the stream key a string: XADD fails inside EXEC (WRONGTYPE). That is a counted failure with one
    warning, the events stay queued and are retried; once the key is removed they are all published, then a
    resync. The connection is not left half-read: the next write reads its own replies."""
    r = redis.Redis.from_url(redis_server.url)
    async with publisher(redis_server.url) as (pub, owner, metrics):
        await until(lambda: r.exists(pub.key), what="the state key")
        published = owner.state.seq
        r.delete(pub.stream)
        r.set(pub.stream, b"not a stream")
        owner.flip()
        owner.flip()
        await until(lambda: metrics.failed, what="the failed transaction to be counted")
        assert r.type(pub.stream) == b"string"
        r.delete(pub.stream)
        current = owner.hub.current
        assert current is not None
        events = await until(lambda: (e := stream_events(r, pub.stream)) and e[-1]["type"] == "resync" and e,
                             what="the queued events, then the resync")
        assert [e["seq"] for e in events[:-1]] == list(range(published + 1, current.seq + 1))
        assert r.get(pub.key) == current.body


async def test_publisher_survives_an_outage_and_resyncs(own_redis: Any) -> None:
    """Redis killed: the hub never waits, the failure is a metric and one log line, events are kept; Redis back:
    every event (the ones made while it was away included) is published in order, then one ``resync``."""
    r = redis.Redis.from_url(own_redis.url)
    async with publisher(own_redis.url) as (pub, owner, metrics):
        await until(lambda: r.exists(pub.key), what="the state key")
        published = owner.state.seq
        own_redis.kill()
        for _ in range(4):
            owner.flip()
        assert metrics.failed == []  # the owner published without waiting on Redis (a blocking write fails here)
        await until(lambda: metrics.failed, what="a failed publish to be counted")
        assert set(metrics.failed) == {"redis"}
        own_redis.start()
        owner.flip()  # made while Redis is back up, maybe before the publisher noticed
        current = owner.hub.current
        assert current is not None
        events = await until(lambda: (e := stream_events(r, pub.stream)) and e[-1]["type"] == "resync" and e,
                             what="the resync in the restarted Redis")
        assert [e["seq"] for e in events[:-1]] == list(range(published + 1, current.seq + 1))
        resync = events[-1]
        assert resync["seq"] == current.seq
        assert resync["level"] == current.snapshot.level
        assert resync["state"]["seq"] == current.seq
        assert {"service", "boot", "at"} <= set(resync)
        assert r.get(pub.key) == current.body


async def test_publisher_resyncs_when_redis_restarted_between_two_writes(own_redis: Any) -> None:
    """No write failed (the restart fell between two), but the key is gone: it is rewritten and a resync sent."""
    r = redis.Redis.from_url(own_redis.url)
    async with publisher(own_redis.url, heartbeat=60) as (pub, owner, _):
        await until(lambda: r.exists(pub.key), what="the state key")
        own_redis.kill()
        own_redis.start()
        owner.flip()
        current = owner.hub.current
        assert current is not None
        events = await until(lambda: (e := stream_events(r, pub.stream)) and e[-1]["type"] == "resync" and e,
                             what="a resync after the silent restart")
        assert [(e["type"], e["seq"]) for e in events][-1] == ("resync", current.seq)
        assert current.seq in [e["seq"] for e in events if e["type"] != "resync"]
        assert r.get(pub.key) == current.body


async def test_publisher_keeps_the_newest_events_when_the_backlog_overflows(own_redis: Any) -> None:
    """More events than the backlog holds while Redis is away: the newest are published, then a resync."""
    r = redis.Redis.from_url(own_redis.url)
    async with publisher(own_redis.url) as (pub, owner, _):
        await until(lambda: r.exists(pub.key), what="the state key")
        own_redis.kill()
        while owner.state.seq < 1500:
            owner.flip()
        own_redis.start()
        current = owner.hub.current
        assert current is not None
        events = await until(lambda: (e := stream_events(r, pub.stream)) and e[-1]["type"] == "resync" and e,
                             what="the resync after the overflow")
        assert [e["seq"] for e in events[:-1]] == list(range(current.seq - 1023, current.seq + 1))


async def test_publisher_does_not_hold_up_the_daemon_when_redis_hangs(own_redis: Any) -> None:
    """Redis stopped (SIGSTOP: connections open, no answers): every publish returns before the publisher's write
    fails (the owner never waits for Redis); the write is held until the socket timeout and then counted as
    failed; on SIGCONT every event made meanwhile arrives."""
    r = redis.Redis.from_url(own_redis.url)
    async with publisher(own_redis.url) as (pub, owner, metrics):
        await until(lambda: r.exists(pub.key), what="the state key")
        own_redis.pause()
        try:
            for _ in range(3):
                owner.flip()
                await asyncio.sleep(0)  # the publisher starts its write to the hung Redis
            # Publishing did not wait on that write: had it (a blocking client), the write would have failed by now.
            assert metrics.failed == []
            await until(lambda: metrics.failed, within=SOCKET_TIMEOUT * 4 + 10,
                        what="the write held by the hung Redis to fail at the socket timeout")
            assert set(metrics.failed) == {"redis"}
        finally:
            own_redis.resume()
        current = owner.hub.current
        assert current is not None
        await until(lambda: (e := stream_events(r, pub.stream)) and e[-1]["seq"] == current.seq,
                    what="the events to arrive after SIGCONT")


# -------------------------------------------------------------------------------------------------------
# The daemon process


def test_every_level_change_reaches_each_reader_in_order(run_daemon: Any, redis_server: Any, db_port: TcpPort) -> None:
    """redis-cli SUBSCRIBE, an SSE reader and a stream reader each see every event with consecutive seqs, and
    every level change, in order, within a fraction of a second."""
    d = run_daemon(daemon_config(db_port, redis_server.url))
    d.wait_state(level_is("full"))
    service = d.state()["service"]
    cli = RedisCliSubscriber(redis_server.url, f"t:{service}:events")
    sse = SSEReader(d.url)
    wait_for(lambda: sse.messages, 10, what="the snapshot")
    try:
        expected = []
        for _ in range(3):
            db_port.close()
            d.wait_state(level_is("cache_only"))
            db_port.open()
            d.wait_state(level_is("full"))
            expected += ["cache_only", "full"]
        last = d.state()["seq"]
        wait_for(lambda: sse.events() and sse.events()[-1]["seq"] == last, 10, what="SSE to catch up")
        wait_for(lambda: cli.messages() and cli.messages()[-1][1]["seq"] == last, 10, what="redis-cli to catch up")
        r = redis.Redis.from_url(redis_server.url)
        stream = stream_events(r, f"t:{service}:stream")
        readers = {"sse": sse.events(), "redis-cli": [e for _, e in cli.messages()], "stream": stream}
        for who, events in readers.items():
            assert_consecutive([e["seq"] for e in events], who)
            assert [e["level"] for e in events if e["type"] == "level_changed"][-6:] == expected, who
        assert stream[0]["seq"] == 1  # the stream holds everything since the first level
        assert get_json(r, f"t:{service}:state")["seq"] == last
        latencies = {
            "sse": [m["received"] - at_epoch(m["data"]["at"]) for m in sse.messages if m["event"] == "level_changed"],
            "redis-cli": [t - at_epoch(e["at"]) for t, e in cli.messages() if e["type"] == "level_changed"],
        }
        for who, values in latencies.items():  # a number to read, not a check: timings are not asserted here
            print(f"{who}: change -> reader latency max {max(values) * 1000:.1f} ms over {len(values)} changes")
    finally:
        sse.close()
        cli.close()


def test_killing_and_restarting_redis_loses_no_change_made_once_it_is_back(
    run_daemon: Any, own_redis: Any, db_port: TcpPort,
) -> None:
    """While the publishing Redis is down, probing and HTTP go on; once it is back, the change made right then
    reaches a subscriber and the stream, followed by a resync; one publish_failed and one publish_resumed line."""
    d = run_daemon(daemon_config(db_port, own_redis.url))
    d.wait_state(level_is("full"))
    service = d.state()["service"]
    own_redis.kill()
    db_port.close()
    d.wait_state(level_is("cache_only"))  # the level moves on without Redis
    assert d.get("/healthz")[0] == 200
    wait_for(lambda: any(line.get("event") == "publish_failed" for line in d.lines()), 10, what="publish_failed")
    own_redis.start()
    cli = RedisCliSubscriber(own_redis.url, f"t:{service}:events")
    try:
        db_port.open()  # a change made while Redis is back up
        back = d.wait_state(level_is("full"))
        r = redis.Redis.from_url(own_redis.url)
        stream = wait_for(lambda: (e := stream_events(r, f"t:{service}:stream")) and "resync" in
                          [x["type"] for x in e] and e[-1]["seq"] >= back["seq"] and e, 15,
                          what="the change and a resync in the restarted Redis")
        changes = [e for e in stream if e["type"] == "level_changed"]
        assert changes[-1]["level"] == "full"
        assert changes[-1]["seq"] <= back["seq"]
        assert_consecutive([e["seq"] for e in stream if e["type"] != "resync"], "the stream")
        wait_for(lambda: any(e["type"] == "resync" for _, e in cli.messages()), 10, what="redis-cli to see resync")
        seen = [e for _, e in cli.messages()]
        assert any(e["type"] == "level_changed" and e["level"] == "full" for e in seen) or \
            next(e for e in seen if e["type"] == "resync")["level"] == "full"
        state = get_json(r, f"t:{service}:state")
        assert state["level"] == "full"
        assert state["seq"] >= back["seq"]
        events = [line["event"] for line in d.lines()]
        assert events.count("publish_failed") == 1
        assert events.count("publish_resumed") == 1
    finally:
        cli.close()


def test_sse_resumes_with_last_event_id_and_starts_fresh_without(run_daemon: Any, db_port: TcpPort) -> None:
    """Without Last-Event-ID: a snapshot, then events. With the last id seen: exactly the missed events.
    With a bad or future id, or a bare seq (no boot to tell which process it came from): a snapshot again."""
    d = run_daemon(daemon_config(db_port))
    d.wait_state(level_is("full"))
    first = SSEReader(d.url)
    try:
        wait_for(lambda: first.messages, 10, what="the snapshot")
        assert first.messages[0]["event"] == "snapshot"
        snap = first.messages[0]["data"]
        assert first.messages[0]["id"] == f"{snap['boot']}-{snap['seq']}"
        db_port.close()
        d.wait_state(level_is("cache_only"))
        wait_for(lambda: first.events("level_changed"), 10, what="the change on the stream")
    finally:
        first.close()
    last_id = first.messages[-1]["id"]
    db_port.open()  # missed while disconnected
    missed = d.wait_state(level_is("full"))
    resumed = SSEReader(d.url, last_event_id=last_id)
    try:
        wait_for(lambda: resumed.messages and resumed.messages[-1]["data"]["seq"] == missed["seq"], 10,
                 what="the replay")
        assert [m["event"] for m in resumed.messages] == ["dependency_changed", "level_changed"]
        boot, _, last_seq = last_id.rpartition("-")
        assert [m["id"] for m in resumed.messages] == [f"{boot}-{int(last_seq) + n}" for n in (1, 2)]
    finally:
        resumed.close()
    for bad in ("not-a-number", f"{missed['boot']}-{missed['seq'] + 1000}", str(missed["seq"] - 1)):
        fresh = SSEReader(d.url, last_event_id=bad)
        try:
            fresh.wait()
            assert fresh.messages[0]["event"] == "snapshot"
            assert fresh.messages[0]["data"]["seq"] == missed["seq"]
        finally:
            fresh.close()


def test_a_long_poll_returns_on_a_change(run_daemon: Any, db_port: TcpPort) -> None:
    """A blocking query waiting on the current index answers when the level changes: its wait is five minutes,
    so an answer within the test's deadline, with a newer seq, is the change's."""
    d = run_daemon(daemon_config(db_port))
    index = d.wait_state(level_is("full"))["seq"]
    answer: dict[str, Any] = {}

    def poll() -> None:
        status, body, _ = request(f"{d.url}/service-level?index={index}&wait=5m", timeout=310)
        answer.update(status=status, body=body, at=time.time())

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    db_port.close()
    thread.join(60)
    assert answer["status"] == 200
    assert answer["body"]["seq"] > index
    event = next(e for e in d.get("/history")[1] if e["seq"] == index + 1)
    latency = answer["at"] - at_epoch(event["at"])
    print(f"long-poll: change -> answer {latency * 1000:.1f} ms")  # a number to read; not asserted


def test_override_end_to_end(run_daemon: Any, redis_server: Any, db_port: TcpPort) -> None:
    """With the admin token, POST forces the level and DELETE ends it; both are events in history and Redis.
    Wrong or missing tokens change nothing. (The token is a registered secret: no log may contain it.)"""
    token = "adm-" + secrets.token_hex(12)
    SECRETS.add(token)
    d = run_daemon(daemon_config(db_port, redis_server.url, token=token))
    d.wait_state(level_is("full"))
    url, auth = d.url + "/override", {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = orjson.dumps({"level": "cache_only", "ttl": "10m", "reason": "db maintenance"})
    assert request(url, "POST", body, {"Authorization": "Bearer nope"})[0] == 403
    assert request(url, "POST", body)[0] == 401
    assert request(url, "POST", b"{", auth)[0] == 400
    status, state, _ = request(url, "POST", body, auth)
    assert status == 200
    assert state["level"] == "cache_only"
    assert state["override"]["reason"] == "db maintenance"
    status, state, _ = request(url, "DELETE", None, auth)
    assert status == 200
    assert state["override"] is None
    d.wait_state(level_is("full"))
    types = [e["type"] for e in d.get("/history")[1]]
    assert types[-4:] == ["override_set", "level_changed", "override_cleared", "level_changed"]
    r = redis.Redis.from_url(redis_server.url)
    service = state["service"]
    wait_for(lambda: [e["type"] for e in stream_events(r, f"t:{service}:stream")][-4:] == types[-4:], 10,
             what="the override events in the Redis stream")
    assert token not in d.output()


def test_sse_streams_end_when_the_daemon_stops(run_daemon: Any, db_port: TcpPort) -> None:
    """SIGTERM: open streams end (a keep-alive is 15 s away, so ending within the test's deadline is the stop's
    doing) and the daemon exits 0."""
    d = run_daemon(daemon_config(db_port))
    readers = [SSEReader(d.url) for _ in range(5)]
    wait_for(lambda: all(r.messages for r in readers), 10, what="the snapshots")
    d.signal(signal.SIGTERM)
    for r in readers:
        assert r.ended.wait(10), "a stream stayed open after SIGTERM"
    assert d.wait_exit(10) == 0


# -------------------------------------------------------------------------------------------------------
# The app client and failsoft watch


async def test_client_follows_changes_and_reports_the_fallback_when_the_daemon_is_killed(
    run_daemon: Any, db_port: TcpPort,
) -> None:
    """The client holds the level in memory, sees a change through SSE, and reports the fallback level (and
    capabilities) as soon as the daemon is killed."""
    d = run_daemon(daemon_config(db_port))
    d.wait_state(level_is("full"))
    changes: list[Change] = []
    async with ServiceLevelClient(d.url, fallback_level="cache_only", fallback_capabilities=["search"]) as client:
        client.on_change(changes.append)
        assert await client.wait_ready(10)
        assert (client.level, client.capabilities, client.allows("chat")) == ("full", ("chat", "search"), True)
        db_port.close()
        await until(lambda: client.level == "cache_only", what="the client to see cache_only")
        change = next(c for c in changes if c.type == "level_changed")
        assert (change.previous, change.level, change.capabilities) == ("full", "cache_only", ("search",))
        assert not client.allows("chat")
        db_port.open()
        await until(lambda: client.level == "full", what="the client to see full again")
        assert d.proc is not None
        d.proc.kill()
        d.proc.wait(5)
        await until(lambda: not client.fresh, what="the client to notice the daemon is gone")
        assert (client.level, client.capabilities, client.state) == ("cache_only", ("search",), None)
        lost = changes[-1]
        assert (lost.type, lost.previous, lost.level) == ("unreachable", "full", "cache_only")


def watch(url: str, out: Any) -> subprocess.Popen[bytes]:
    """``failsoft watch --url URL`` with its output in ``out``."""
    return subprocess.Popen([sys.executable, "-m", "failsoft", "watch", "--url", url], stdout=out,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ})


def test_watch_prints_one_line_per_event_and_exits_0_on_ctrl_c(run_daemon: Any, db_port: TcpPort,
                                                               tmp_path: Any) -> None:
    """``failsoft watch``: the snapshot, then one line per event with its time and seq; SIGINT exits 0."""
    d = run_daemon(daemon_config(db_port))
    d.wait_state(level_is("full"))
    log = tmp_path / "watch.out"
    with log.open("wb") as out:
        proc = watch(d.url, out)
    try:
        wait_for(lambda: "snapshot level=full" in log.read_text(), 15, what="the snapshot line")
        db_port.close()
        changed = d.wait_state(level_is("cache_only"))
        wait_for(lambda: "level_changed full -> cache_only" in log.read_text(), 10, what="the change line")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
    lines = log.read_text().splitlines()
    line = next(x for x in lines if "level_changed" in x)
    event = next(e for e in d.get("/history")[1] if e["seq"] == changed["seq"])
    assert line == f"{event['at']} seq={event['seq']} level_changed full -> cache_only ({event['reason']})", line
    assert event["reason"].startswith("db down (connection ")
    assert any(" dependency_changed db healthy -> down " in x for x in lines), lines


def test_watch_exits_3_when_the_daemon_cannot_be_reached(tmp_path: Any) -> None:
    """Nothing listens at the URL: exit code 3 and a message naming it."""
    url = f"http://127.0.0.1:{free_port()}"
    log = tmp_path / "watch.out"
    with log.open("wb") as out:
        proc = watch(url, out)
    assert proc.wait(30) == 3
    assert f"cannot reach the daemon at {url}" in log.read_text()
