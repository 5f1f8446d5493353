"""The app's client against the real daemon process: its failure policy (fail_safe / fail_open) when the sidecar is
killed, the synchronous client (also across a fork, as gunicorn workers are made), and the Redis source with the
SSE stream's gap rules (seq per boot, resync)."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import secrets
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from support import DaemonProcess, until, wait_for

from failsoft.client import Change, ServiceLevelClient, SyncServiceLevelClient
from failsoft.devtools.localservers import free_port

pytestmark = pytest.mark.e2e


class Port:
    """A TCP port the test opens (the dependency answers) and closes (connection refused)."""

    def __init__(self) -> None:
        self.port = free_port()
        self._sock: socket.socket | None = None

    def open(self) -> None:
        """Listen, accepting and closing every connection in a thread."""
        sock = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        sock.settimeout(0.05)
        self._sock = sock

        def accept() -> None:
            while True:
                try:
                    sock.accept()[0].close()
                except TimeoutError:
                    continue
                except OSError:
                    return

        threading.Thread(target=accept, daemon=True).start()

    def close(self) -> None:
        """Stop listening: connects are refused from now on."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


@pytest.fixture
def db() -> Iterator[Port]:
    """The dependency's port, open at the start."""
    port = Port()
    port.open()
    yield port
    port.close()


def config(db: Port, port: int = 0, publish: str = "") -> str:
    """``db`` decides cache_only; fast probes; no startup grace; optionally published to Redis."""
    return f"""
service: clients-{secrets.token_hex(3)}
http: {{listen: "127.0.0.1:{port}"}}
{publish}
defaults: {{interval: 100ms, fast_interval: 50ms, timeout: 500ms, jitter: 0, unhealthy_threshold: 1,
            healthy_threshold: 1, down_interval: {{initial: 100ms, max: 200ms}}, startup_grace: 0s}}
dependencies:
  db: {{kind: tcp, address: "127.0.0.1:{db.port}"}}
policy:
  levels: [full, cache_only]
  rules: [{{level: cache_only, when: {{any_down: [db]}}}}]
  recover_after: 0s
  capabilities: {{full: [search, write], cache_only: [search]}}
"""


class Wall:
    """The app's wall clock, movable: the client compares the State's valid_until with it."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


async def test_fail_safe_falls_back_at_once_and_fail_open_keeps_the_last_level_for_a_bounded_time(
    run_daemon: Any, db: Port
) -> None:
    """A sidecar killed with SIGKILL (a crash loop's first crash): the fail_safe client reports the fallback at
    once; the fail_open client keeps reporting full (``serving == "stale"``) until ``fail_open_max`` past the
    State's valid_until, then the fallback; both are live again when the sidecar is back on its port."""
    port = free_port()
    d: DaemonProcess = run_daemon(config(db, port))
    wall = Wall()
    safe = ServiceLevelClient(d.url, fallback_level="cache_only", backoff_max=0.5)
    open_ = ServiceLevelClient(d.url, fallback_level="cache_only", failure_mode="fail_open", fail_open_max=60,
                               backoff_max=0.5, wall_clock=wall)
    async with safe, open_:
        assert await safe.wait_ready(10) and await open_.wait_ready(10)
        assert (safe.level, open_.level, open_.serving) == ("full", "full", "live")
        d.signal(signal.SIGKILL)
        await until(lambda: not safe.fresh and not open_.fresh, 10, what="both to lose the daemon")
        assert (safe.level, safe.capabilities, safe.serving) == ("cache_only", (), "fallback")
        assert (open_.level, open_.capabilities, open_.serving) == ("full", ("search", "write"), "stale")
        held = open_._held
        assert held is not None
        wall.offset = held.valid_until + 59 - time.time()  # just within the bound
        assert open_.level == "full"
        wall.offset = held.valid_until + 61 - time.time()  # past it
        assert (open_.level, open_.serving) == ("cache_only", "fallback")
        wall.offset = 0
        d.proc = None
        run_daemon(config(db, port))  # the sidecar comes back on the same port (a new boot)
        await until(lambda: safe.fresh and open_.fresh, 20, what="both to reconnect")
        assert (safe.level, open_.level, open_.serving) == ("full", "full", "live")


def test_failure_mode_is_checked() -> None:
    """An unknown failure mode, a negative bound and a Redis URL without a service are refused at once."""
    with pytest.raises(ValueError, match="failure_mode"):
        ServiceLevelClient(failure_mode="fail_closed")
    with pytest.raises(ValueError, match="fail_open_max"):
        ServiceLevelClient(failure_mode="fail_open", fail_open_max=-1)
    with pytest.raises(ValueError, match="service="):
        ServiceLevelClient("redis://127.0.0.1:6379/0")
    with pytest.raises(ValueError, match="failure_mode"):
        SyncServiceLevelClient(failure_mode="open")
    with pytest.raises(ValueError, match="cannot send reports"):
        ServiceLevelClient("redis://127.0.0.1:6379/0", service="s").report("db", False)


def test_the_synchronous_client_follows_the_level_from_plain_threads(run_daemon: Any, db: Port) -> None:
    """No event loop in the caller: ``wait_ready`` blocks, reads are plain attribute reads, ``on_change`` callbacks
    arrive from the client's thread, and ``close`` stops the thread (reads then report the fallback)."""
    d: DaemonProcess = run_daemon(config(db))
    changes: list[Change] = []
    client = SyncServiceLevelClient(d.url, fallback_level="cache_only")
    assert [t for t in threading.enumerate() if t.name == "failsoft-client"] == []  # nothing runs before use
    with client:
        assert client.wait_ready(10)
        undo = client.on_change(changes.append)
        assert (client.level, client.allows("write"), client.serving) == ("full", True, "live")
        db.close()
        wait_for(lambda: client.level == "cache_only", 10, what="cache_only")
        assert not client.allows("write") and client.allows("search")
        wait_for(lambda: any(c.type == "level_changed" and c.level == "cache_only" for c in changes), 5)
        undo()
    assert not any(t.name == "failsoft-client" and t.is_alive() for t in threading.enumerate())
    assert client._client is None


def test_the_synchronous_client_reports_call_outcomes(run_daemon: Any, db: Port) -> None:
    """``report()`` from a plain thread reaches ``POST /report``: five reported timeouts open db's breaker
    (``reported_timeout``) while its port still answers."""
    d: DaemonProcess = run_daemon(config(db))
    with SyncServiceLevelClient(d.url) as client:
        assert client.wait_ready(10)
        for _ in range(5):
            client.report("db", False, reason="timeout", latency_ms=500)
        state = d.wait_state(lambda s: s["dependencies"]["db"]["state"] == "down", 15, what="db down by reports")
        assert state["dependencies"]["db"]["reason"] == "reported_timeout"


def _read_in_child(client: SyncServiceLevelClient, out: Any) -> None:
    out.put((client.wait_ready(10), client.level, client.allows("write")))


def test_the_synchronous_client_starts_again_in_a_forked_worker(run_daemon: Any, db: Port) -> None:
    """A client used in the parent, then a fork (as a pre-forking WSGI server makes workers): the child's first
    read starts a thread of its own and gets the live level."""
    d: DaemonProcess = run_daemon(config(db))
    client = SyncServiceLevelClient(d.url).start()
    try:
        assert client.wait_ready(10) and client.level == "full"
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()
        child = ctx.Process(target=_read_in_child, args=(client, out))
        child.start()
        assert out.get(timeout=30) == (True, "full", True)
        child.join(10)
        assert child.exitcode == 0
    finally:
        client.close()


async def test_the_redis_source_follows_the_daemons_publication_with_the_gap_rules(
    run_daemon: Any, db: Port, redis_server: Any
) -> None:
    """A client reading Redis only: the State from the key, changes from the channel; an event that skips seqs or
    comes from another boot makes it read the key again (a ``resync`` change); the daemon's own ``resync`` event
    (the key found gone) is taken as a State; with the daemon killed and its key gone, the fallback is reported."""
    text = config(db, publish=f'publish: {{redis: "{redis_server.url}", prefix: "cs", heartbeat: 300ms}}')
    service = text.split("service: ", 1)[1].split("\n", 1)[0]
    d: DaemonProcess = run_daemon(text)
    changes: list[Change] = []
    client = ServiceLevelClient(redis_server.url, service=service, prefix="cs", fallback_level="cache_only",
                                backoff_max=0.5)
    client.on_change(changes.append)
    r = redis.Redis.from_url(redis_server.url)
    channel, key = f"cs:{service}:events", f"cs:{service}:state"
    async with client:
        assert await client.wait_ready(10)
        assert (client.level, client.capabilities) == ("full", ("search", "write"))
        assert client.state is not None and client.state["service"] == service
        db.close()
        await until(lambda: client.level == "cache_only", 10, what="cache_only from the channel")
        assert any(c.type == "level_changed" and c.level == "cache_only" for c in changes)

        # A gap: an event 5 seqs ahead of the last one seen. The client reads the key instead of trusting it.
        boot, seq = client.state["boot"], client.state["seq"]
        fake = {"type": "level_changed", "service": service, "boot": boot, "seq": seq + 5, "level": "full"}
        await asyncio.to_thread(r.publish, channel, json.dumps(fake))
        await until(lambda: any(c.type == "resync" for c in changes), 10, what="a resync after the gap")
        assert client.level == "cache_only"  # the key's truth, not the fake event's level
        # Another boot: the same.
        resyncs = sum(c.type == "resync" for c in changes)
        other = {**fake, "boot": "another", "seq": 1}
        await asyncio.to_thread(r.publish, channel, json.dumps(other))
        await until(lambda: sum(c.type == "resync" for c in changes) > resyncs, 10, what="a resync after a reboot")
        assert client.level == "cache_only"
        # The daemon's own resync (it finds its key gone) carries the State.
        resyncs = sum(c.type == "resync" for c in changes)
        await asyncio.to_thread(r.delete, key)
        await until(lambda: sum(c.type == "resync" for c in changes) > resyncs, 10, what="the daemon's resync")
        db.open()
        await until(lambda: client.level == "full", 10, what="full again")

        d.signal(signal.SIGKILL)
        d.wait_exit(10)
        await asyncio.to_thread(r.delete, key)  # as if its 3 heartbeats had passed
        await until(lambda: not client.fresh, 10, what="the client to notice the key is gone")
        assert (client.level, client.capabilities) == ("cache_only", ())
        assert "missing" in (client.last_error or "")
    r.close()
