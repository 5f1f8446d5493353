"""failsoft.client: the app's client against the real HTTP routes (hub, state owner, SSE) on a loopback port.

The daemon side runs in process so that the tests can stop it, restart it (a new boot) and move its level
precisely; the client under test is exactly what an app runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from support import db, until

from failsoft.client import Change, ServiceLevelClient, format_change
from failsoft.daemon import stream
from failsoft.daemon.api import Runtime, build_app
from failsoft.daemon.clock import SystemClock
from failsoft.daemon.config import parse_config
from failsoft.daemon.hub import Hub
from failsoft.daemon.state import OverrideCommand, ServiceState, run_owner
from failsoft.devtools.localservers import free_port

CONFIG = """
service: client-test
http: {listen: "127.0.0.1:0"}
dependencies:
  db: {kind: tcp, address: "127.0.0.1:1"}
policy:
  levels: [full, cache_only]
  rules: [{level: cache_only, when: {any_down: [db]}}]
  recover_after: 0s
  capabilities: {full: [chat, search], cache_only: [search]}
"""




@dataclass
class Daemon:
    """The HTTP side of a daemon, in process: its hub, state and owner task."""

    url: str
    hub: Hub
    state: ServiceState
    runtime: Runtime
    runner: web.AppRunner

    def move(self, *downs: bool) -> None:
        """Feed ``db`` statuses as the owner would, publishing after each (without yielding in between)."""
        for down in downs:
            events = self.state.update(db(down))
            self.hub.publish(self.state.snapshot(), events)

    async def stop(self) -> None:
        """Stop serving, as the daemon does at shutdown (streams end, the port closes)."""
        self.runtime.stopping.set()
        self.runtime.tasks["owner"].cancel()
        await self.runner.cleanup()


async def start_daemon(port: int = 0, *, validity: float = 15.0, refresh: float = 3600.0) -> Daemon:
    """Serve the API and the stream routes on ``port`` with ``db`` healthy (level full).

    The real clock: the client compares ``valid_until`` with the app's wall clock, as it does in production.
    """
    config = parse_config(CONFIG, {})
    hub = Hub()
    state = ServiceState(config, SystemClock(), validity=validity)
    runtime = Runtime(config=config, hub=hub, inbox=asyncio.Queue())
    runtime.tasks["owner"] = asyncio.create_task(run_owner(state, runtime.inbox, hub, refresh=refresh))
    runner = web.AppRunner(build_app(runtime, stream.routes()), access_log=None, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
    d = Daemon(f"http://127.0.0.1:{runner.addresses[0][1]}", hub, state, runtime, runner)
    await until(lambda: hub.current is not None, what="the first publish")
    d.move(False)
    return d


@contextlib.asynccontextmanager
async def daemon(**kwargs: Any) -> AsyncIterator[Daemon]:
    """``start_daemon`` with cleanup."""
    d = await start_daemon(**kwargs)
    try:
        yield d
    finally:
        await d.stop()




def moves(changes: list[Change]) -> list[tuple[str, str, str]]:
    """(type, previous, level) of each change."""
    return [(c.type, c.previous, c.level) for c in changes]


async def test_before_any_state_every_read_is_the_fallback() -> None:
    """A client that never connected reports the configured fallback, without any IO."""
    client = ServiceLevelClient(f"http://127.0.0.1:{free_port()}", fallback_level="limited",
                                fallback_capabilities=["search"])
    assert (client.level, client.capabilities, client.state, client.fresh) == ("limited", ("search",), None, False)
    assert client.allows("search")
    assert not client.allows("chat")


async def test_the_client_holds_the_state_and_follows_each_change() -> None:
    """After the snapshot, reads answer from memory; each event is one change with the level before and after."""
    async with daemon() as d, ServiceLevelClient(d.url) as client:
        changes: list[Change] = []
        client.on_change(changes.append)
        assert await client.wait_ready(5)
        assert (client.level, client.capabilities) == ("full", ("chat", "search"))
        assert client.allows("chat")
        assert client.state is not None
        assert client.state["seq"] == d.hub.current.seq  # type: ignore[union-attr]
        d.move(True)
        await until(lambda: client.level == "cache_only", what="cache_only")
        assert (client.capabilities, client.allows("chat"), client.allows("search")) == (("search",), False, True)
        # The snapshot moved the reported level from the fallback to the daemon's level.
        assert moves(changes) == [("snapshot", "cache_only", "full"), ("dependency_changed", "full", "full"),
                                  ("level_changed", "full", "cache_only")]
        assert [c.seq for c in changes] == [1, 2, 3]
        assert changes[2].capabilities == ("search",)
        assert changes[2].state is not None
        assert changes[2].state["level"] == "cache_only"


async def test_each_change_names_its_own_levels_when_they_come_in_a_burst() -> None:
    """Down and up again before the client reads: each level_changed still says which level it left and reached."""
    async with daemon() as d, ServiceLevelClient(d.url, fallback_capabilities=["nothing"]) as client:
        assert await client.wait_ready(5)
        changes: list[Change] = []
        client.on_change(changes.append)
        d.move(True, False)
        await until(lambda: len(changes) == 4, what="four changes")
        assert moves(changes) == [
            ("dependency_changed", "full", "full"), ("level_changed", "full", "cache_only"),
            ("dependency_changed", "cache_only", "cache_only"), ("level_changed", "cache_only", "full"),
        ]
        # cache_only came and went before any State showed it: its capabilities were not known, so the
        # client was as careful as its fallback for that moment.
        assert changes[1].capabilities == ("nothing",)
        assert changes[3].capabilities == ("chat", "search")


async def test_overrides_reach_the_client_as_changes() -> None:
    """An override forces the level through the same stream (override_set, then level_changed)."""
    async with daemon() as d, ServiceLevelClient(d.url) as client:
        assert await client.wait_ready(5)
        changes: list[Change] = []
        client.on_change(changes.append)
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        d.runtime.inbox.put_nowait(OverrideCommand("cache_only", 60, "maintenance", done=done))
        await until(lambda: client.level == "cache_only", what="the override")
        assert moves(changes) == [("override_set", "full", "full"), ("level_changed", "full", "cache_only")]
        assert client.state is not None
        assert client.state["override"]["reason"] == "maintenance"


async def test_a_quiet_stream_is_kept_fresh_by_refreshing_the_state() -> None:
    """No change for several validity periods: the client renews the State and never reports the fallback."""
    async with daemon(validity=1.0, refresh=0.3) as d, ServiceLevelClient(d.url) as client:
        assert await client.wait_ready(5)
        first_until = client.state["valid_until"]  # type: ignore[index]
        stale_seen = []
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            if not client.fresh:
                stale_seen.append(time.monotonic())
            await asyncio.sleep(0.02)
        assert not stale_seen
        assert client.state["valid_until"] > first_until  # type: ignore[index]
        assert client.level == "full"


async def test_a_state_past_its_valid_until_is_not_reported() -> None:
    """When the held State is past ``valid_until`` (by the app's clock), the fallback is reported instead."""
    now = [time.time()]
    async with daemon() as d, ServiceLevelClient(d.url, wall_clock=lambda: now[0]) as client:
        assert await client.wait_ready(5)
        assert client.level == "full"
        now[0] += 3600
        assert (client.level, client.capabilities, client.state, client.fresh) == ("cache_only", (), None, False)
        now[0] -= 3600
        await until(lambda: client.fresh, what="the client to trust the State again")
        assert client.level == "full"


async def test_the_client_reports_the_fallback_while_the_daemon_is_gone_and_resyncs_after() -> None:
    """The daemon stops: one ``unreachable`` change and the fallback; a new daemon on the same port: a snapshot
    of its State (a new boot), and changes again."""
    d = await start_daemon()
    port = int(d.url.rsplit(":", 1)[1])
    changes: list[Change] = []
    async with ServiceLevelClient(d.url, backoff_initial=0.05, backoff_max=0.2) as client:
        client.on_change(changes.append)
        assert await client.wait_ready(5)
        old_boot = client.state["boot"]  # type: ignore[index]
        await d.stop()
        await until(lambda: changes and changes[-1].type == "unreachable", what="the unreachable change")
        assert (changes[-1].previous, changes[-1].level, client.level) == ("full", "cache_only", "cache_only")
        assert changes[-1].event["reason"]
        async with daemon(port=port) as again:
            again.move(True)
            await until(lambda: client.fresh and client.state and client.state["boot"] != old_boot,
                        what="the new daemon's snapshot")
            assert changes[-1].type == "snapshot"
            assert client.level == "cache_only"
            assert client.allows("search")
            again.move(False)
            await until(lambda: client.level == "full", what="a change from the new daemon")
        assert [c.type for c in changes].count("unreachable") == 1


async def test_changes_can_be_iterated_and_the_iteration_ends_with_the_client() -> None:
    """``async for change in client.changes()`` yields each change and stops when the client is closed."""
    async with daemon() as d:
        client = ServiceLevelClient(d.url)
        changes = client.changes()
        counted: list[Change] = []
        client.on_change(counted.append)
        await client.start()

        async def consume() -> list[Change]:
            return [change async for change in changes]

        consumer = asyncio.create_task(consume())
        assert await client.wait_ready(5)
        d.move(True)
        await until(lambda: len(counted) == 3, what="snapshot and two events")
        await client.aclose()
        seen = await asyncio.wait_for(consumer, 5)
        assert [c.type for c in seen] == ["snapshot", "dependency_changed", "level_changed"]


async def test_a_failing_callback_does_not_stop_the_others_and_undo_removes_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Callbacks run in the client's task: one raising is logged (with its traceback, on the failsoft.client
    logger), the next still runs; undo unregisters."""
    caplog.set_level(logging.ERROR, logger="failsoft.client")
    async with daemon() as d, ServiceLevelClient(d.url) as client:
        assert await client.wait_ready(5)
        seen: list[str] = []
        removed: list[str] = []

        def broken(change: Change) -> None:
            raise RuntimeError("app bug")

        client.on_change(broken)
        undo = client.on_change(lambda c: removed.append(c.type))
        client.on_change(lambda c: seen.append(c.type))
        undo()
        d.move(True)
        await until(lambda: "level_changed" in seen, what="the change despite the broken callback")
        assert removed == []
        assert client.level == "cache_only"
    failed = [r for r in caplog.records if r.name == "failsoft.client" and "callback failed" in r.getMessage()]
    assert failed, "the failing callback was not logged"
    assert all(r.levelno == logging.ERROR for r in failed)
    assert failed[0].exc_info is not None and str(failed[0].exc_info[1]) == "app bug"


async def test_wait_ready_gives_up_after_the_failed_attempts_asked_for() -> None:
    """Nothing listening: ``wait_ready(3600, attempts=1)`` returns False after that one failed attempt (not at the
    end of its hour), with the error kept."""
    async with ServiceLevelClient(f"http://127.0.0.1:{free_port()}") as client:
        assert not await asyncio.wait_for(client.wait_ready(3600, attempts=1), 60)
        assert client.failed_attempts >= 1
        assert client.last_error
        assert client.level == "cache_only"


@pytest.mark.parametrize("path", ["/nope", "/healthz"])
async def test_a_server_that_is_not_a_failsoft_stream_is_unreachable(path: str) -> None:
    """A URL that does not lead to the event stream (404, or JSON instead of SSE) never counts as connected."""
    async with daemon() as d, ServiceLevelClient(d.url + path) as client:
        assert not await client.wait_ready(5, attempts=2)
        assert client.level == "cache_only"


def test_format_change_prints_one_line_per_event() -> None:
    """The ``failsoft watch`` line: time, seq, type, what moved and why."""
    def line(type_: str, **event: Any) -> str:
        return format_change(Change(type_, "x", "y", (), {"at": "2026-11-29T12:00:03.120Z", "seq": 8, **event}))

    assert line("level_changed", previous="full", level="cache_only", reason="db down (connection refused)") == \
        "2026-11-29T12:00:03.120Z seq=8 level_changed full -> cache_only (db down (connection refused))"
    assert line("dependency_changed", dependency="db", previous="healthy", state="down", breaker="open",
                reason="timeout") == "2026-11-29T12:00:03.120Z seq=8 dependency_changed db healthy -> down " \
                                     "(breaker open) (timeout)"
    assert line("llm_failover", previous="openai", active_llm="anthropic") == \
        "2026-11-29T12:00:03.120Z seq=8 llm_failover openai -> anthropic"
    assert line("override_set", level="cache_only", until="2026-11-29T12:30:00.000Z", reason="maint") == \
        "2026-11-29T12:00:03.120Z seq=8 override_set cache_only until 2026-11-29T12:30:00.000Z (maint)"
    snapshot = format_change(Change("snapshot", "full", "cache_only", (), {
        "updated_at": "2026-11-29T12:00:00.000Z", "seq": 3, "level": "full", "reason": "all dependencies healthy"}))
    assert snapshot == "2026-11-29T12:00:00.000Z seq=3 snapshot level=full (all dependencies healthy)"
    lost = format_change(Change("unreachable", "cache_only", "full", (), {"at": "2026-11-29T12:00:09.000Z",
                                                                          "reason": "ServerDisconnectedError"}))
    assert lost == "2026-11-29T12:00:09.000Z unreachable reporting cache_only until the daemon answers " \
                   "(ServerDisconnectedError)"
