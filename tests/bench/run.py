"""``make bench``: what failsoft costs and how fast it reacts, measured on this machine, printed as a table.

Not a test: numbers on shared machines are noisy, so they are reported, never asserted. Each row says how many
samples it took; percentiles are over those samples.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))

from apps import bench_apps
from sse_memory import bench_sse_memory
from support import DaemonProcess

from failsoft.daemon import logs
from failsoft.daemon.clock import SystemClock
from failsoft.daemon.config import parse_config
from failsoft.daemon.hub import Hub
from failsoft.daemon.state import OverrideCommand, ServiceState
from failsoft.devtools.localservers import PostgresServer, RedisServer
from failsoft.policies.model import DependencyStatus, DepState
from failsoft.probes import KINDS
from failsoft.probes.base import ProbeHooks

ROWS: list[tuple[str, str, str, str, str]] = []


def row(what: str, samples: list[float], unit: str = "ms", scale: float = 1000.0) -> None:
    """Add a row with p50, p99 and max of ``samples`` (seconds, shown in ``unit``)."""
    s = sorted(x * scale for x in samples)
    p99 = s[min(len(s) - 1, int(len(s) * 0.99))]
    ROWS.append((what, str(len(s)), f"{statistics.median(s):.3f} {unit}", f"{p99:.3f} {unit}", f"{s[-1]:.3f} {unit}"))


def note(what: str, value: str) -> None:
    """Add a row with one figure."""
    ROWS.append((what, "1", value, "", ""))


async def timed(fn: Callable[[], Awaitable[object]], n: int) -> list[float]:
    """Run ``fn`` n times, return the durations."""
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t)
    return out


async def bench_probes(pg: PostgresServer, rd: RedisServer) -> None:
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
        row(f"probe {dep.kind} (check, warm)", await timed(probe.check, 300))
        await probe.aclose()


async def bench_hub() -> None:
    """The owner's cost per probe result: update + evaluate + snapshot + serialise, 10 dependencies."""
    deps = "\n".join(f"  d{i}: {{kind: tcp, address: '127.0.0.1:{1000 + i}'}}" for i in range(10))
    config = parse_config(f"dependencies:\n{deps}\n", {})
    clock = SystemClock()
    state = ServiceState(config, clock)
    hub = Hub()
    statuses = [DependencyStatus(name=f"d{i}", kind="tcp", state=DepState.HEALTHY, probes=1) for i in range(10)]
    for s in statuses:
        state.update(s)
    samples = []
    for i in range(5000):
        t = time.perf_counter()
        events = state.update(statuses[i % 10])
        hub.publish(state.snapshot(), events)
        samples.append(time.perf_counter() - t)
    row("owner: one probe result -> published State", samples, "µs", 1e6)


async def bench_http(url: str) -> None:
    """GET /service-level latency and throughput from one client with 8 connections."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as session:
        async def get() -> None:
            async with session.get(url + "/service-level") as r:
                await r.read()

        row("GET /service-level (sequential)", await timed(get, 500))
        n = 4000
        t = time.perf_counter()
        await asyncio.gather(*(get() for _ in range(n)))
        note("GET /service-level throughput (8 conns)", f"{n / (time.perf_counter() - t):.0f} req/s")


def bench_detection(pg: PostgresServer, rd: RedisServer) -> None:
    """Crash-to-published-down time for PostgreSQL (kill -9) and hang-to-down for Redis (SIGSTOP)."""
    tmp = Path(tempfile.mkdtemp(prefix="failsoft-bench-"))
    d = DaemonProcess(f"""
http: {{listen: "127.0.0.1:0"}}
defaults: {{down_interval: {{initial: 200ms, max: 1s}}}}
dependencies:
  db: {{kind: postgres, dsn: "{pg.dsn}"}}
  cache: {{kind: redis, url: "{rd.url}"}}
policy: {{recover_after: 0s, rules: [{{level: cache_only, when: {{any_down: [db]}}}}]}}
""", tmp).start()

    def wait(pred: Callable[[dict[str, object]], bool], timeout: float = 20) -> float:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if pred(d.state()):
                return time.perf_counter() - t0
            time.sleep(0.005)
        raise RuntimeError("timed out")

    crash, hang, recover = [], [], []
    try:
        for _ in range(3):
            wait(lambda s: s["dependencies"]["db"]["state"] == "healthy")  # type: ignore[index]
            pg.kill()
            crash.append(wait(lambda s: s["dependencies"]["db"]["state"] == "down"))  # type: ignore[index]
            pg.start()
            recover.append(wait(lambda s: s["dependencies"]["db"]["state"] == "healthy"))  # type: ignore[index]
            wait(lambda s: s["dependencies"]["cache"]["state"] == "healthy")  # type: ignore[index]
            rd.pause()
            hang.append(wait(lambda s: s["dependencies"]["cache"]["state"] == "down"))  # type: ignore[index]
            rd.resume()
        rss = _rss_kib(d.proc.pid) if d.proc else 0
    finally:
        d.stop()
    row("detect: postgres kill -9 -> down", crash)
    row("detect: redis SIGSTOP -> down", hang)
    row("recover: postgres up -> healthy (max 1s)", recover)
    note("daemon RSS, 2 dependencies", f"{rss / 1024:.1f} MiB")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def bench_longpoll(pg: PostgresServer) -> None:
    """From a change of the State to the return of a waiting long-poll, in-process."""
    from failsoft.daemon.app import Daemon

    config = parse_config(f"""
http: {{listen: "127.0.0.1:0"}}
dependencies: {{db: {{kind: postgres, dsn: "{pg.dsn}"}}}}
""", {})
    daemon = await Daemon.start(config)
    url = f"http://127.0.0.1:{daemon.port}"
    try:
        await daemon.runtime.hub.wait_past(0, 10)  # the first evaluation publishes seq 1
        await bench_http(url)
        samples = []
        async with aiohttp.ClientSession() as session:
            for i in range(50):
                seq = daemon.runtime.hub.current.seq
                poll = asyncio.create_task(session.get(f"{url}/service-level?index={seq}&wait=10s"))
                await asyncio.sleep(0.02)  # let the poll arrive and wait
                t = time.perf_counter()
                # A real owner message that changes the State: set, then clear, an override.
                daemon.runtime.inbox.put_nowait(OverrideCommand("cache_only" if i % 2 == 0 else None, 60, "bench"))
                resp = await poll
                await resp.read()
                samples.append(time.perf_counter() - t)
        row("long-poll wake after a change", samples)
    finally:
        await daemon.stop()


def main() -> None:
    """Run every measurement and print the table."""
    os.environ.setdefault("FAILSOFT_TEST_DOCKER", "never")
    logs.configure("warning")  # the in-process daemon of the long-poll bench stays quiet
    with PostgresServer() as pg, RedisServer() as rd:
        asyncio.run(bench_probes(pg, rd))  # type: ignore[arg-type]
        asyncio.run(bench_hub())
        asyncio.run(bench_longpoll(pg))  # type: ignore[arg-type]
        bench_detection(pg, rd)  # type: ignore[arg-type]
        bench_apps(rd.url, row, note)
        bench_sse_memory(pg.dsn, rd.url, note)
    header = ("measurement", "n", "p50", "p99", "max")
    widths = [max(len(r[i]) for r in [header, *ROWS]) for i in range(5)]
    cpu = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"\nfailsoft bench ({cpu} cores, Python {sys.version.split()[0]}; numbers from a shared machine)\n")
    for r in [header, tuple("-" * w for w in widths), *ROWS]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    main()
