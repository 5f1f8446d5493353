"""The small costs: one probe per kind, the owner's work per probe result, GET latency and the long-poll wake."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
from benchlib import Rows

from failsoft.daemon.clock import SystemClock
from failsoft.daemon.config import parse_config
from failsoft.daemon.hub import Hub
from failsoft.daemon.state import OverrideCommand, ServiceState
from failsoft.devtools.localservers import PostgresServer, RedisServer
from failsoft.policies.model import DependencyStatus, DepState
from failsoft.probes import KINDS
from failsoft.probes.base import ProbeHooks


async def timed(fn: Callable[[], Awaitable[object]], n: int) -> list[float]:
    """Run ``fn`` n times, return the durations."""
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t)
    return out


async def _probes(rows: Rows, pg: PostgresServer, rd: RedisServer) -> None:
    """One probe's latency per kind against local servers (kept connections, as in the daemon)."""
    config = parse_config(f"""
dependencies:
  db: {{kind: postgres, dsn: "{pg.dsn}"}}
  cache: {{kind: redis, url: "{rd.url}"}}
  tcp: {{kind: tcp, address: "127.0.0.1:{rd.port}"}}
""", {})
    for dep in config.dependencies.values():
        probe = KINDS[dep.kind].create(dep.options, 2.0, ProbeHooks())
        await probe.check()  # connect once, as the daemon does
        rows.latency(f"probe {dep.kind} (check, warm)", await timed(probe.check, 300), key=f"probe.{dep.kind}")
        await probe.aclose()


async def _owner(rows: Rows) -> None:
    """The owner's cost per probe result that changes something (a failure counted), 10 dependencies."""
    deps = "\n".join(f"  d{i}: {{kind: tcp, address: '127.0.0.1:{1000 + i}'}}" for i in range(10))
    config = parse_config(f"dependencies:\n{deps}\n", {})
    state = ServiceState(config, SystemClock())
    hub = Hub()
    ok = [DependencyStatus(name=f"d{i}", kind="tcp", state=DepState.HEALTHY, probes=1) for i in range(10)]
    for s in ok:
        state.update(s)
    failing = [DependencyStatus(name=f"d{i}", kind="tcp", state=DepState.HEALTHY, probes=1,
                                consecutive_failures=1) for i in range(10)]
    samples = []
    for i in range(5000):
        status = (failing if i % 2 else ok)[i % 10]
        t = time.perf_counter()
        events = state.update(status)
        hub.publish(state.snapshot(), events)
        samples.append(time.perf_counter() - t)
    rows.latency("owner: a probe result that changes the State -> published", samples, key="owner.publish",
                 unit="µs", scale=1e6)


async def _http_and_longpoll(rows: Rows, pg: PostgresServer) -> None:
    """GET /service-level from one client, and from a change to the return of a waiting long-poll, in-process."""
    from failsoft.daemon.app import Daemon

    config = parse_config(f"""
http: {{listen: "127.0.0.1:0"}}
dependencies: {{db: {{kind: postgres, dsn: "{pg.dsn}"}}}}
""", {})
    daemon = await Daemon.start(config)
    url = f"http://127.0.0.1:{daemon.port}"
    try:
        await daemon.runtime.hub.wait_past(0, 10)
        async with aiohttp.ClientSession() as session:
            async def get() -> None:
                async with session.get(url + "/service-level") as r:
                    await r.read()

            rows.latency("GET /service-level, one client (aiohttp)", await timed(get, 500), key="http.get")
            samples = []
            for i in range(50):
                current = daemon.runtime.hub.current
                assert current is not None
                poll = asyncio.create_task(session.get(f"{url}/service-level?index={current.seq}&wait=10s"))
                await asyncio.sleep(0.02)  # let the poll arrive and wait
                t = time.perf_counter()
                daemon.runtime.inbox.put_nowait(OverrideCommand("cache_only" if i % 2 == 0 else None, 60, "bench"))
                resp = await poll
                await resp.read()
                samples.append(time.perf_counter() - t)
        rows.latency("long-poll wake after a change", samples, key="http.longpoll")
    finally:
        await daemon.stop()


def bench_basics(rows: Rows, quick: bool) -> None:
    """Probe latency per kind, the owner's cost, GET latency and the long-poll wake."""
    del quick  # these are short either way
    with PostgresServer() as pg, RedisServer() as rd:
        asyncio.run(_probes(rows, pg, rd))
        asyncio.run(_owner(rows))
        asyncio.run(_http_and_longpoll(rows, pg))

