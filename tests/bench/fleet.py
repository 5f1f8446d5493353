"""The fleet bench: N = 1, 10, 50 daemons (separate processes) in fleet mode against one PostgreSQL, one Redis and
the LLM simulator. Reports, for each N: requests per second reaching the simulator and monitoring connections on
PostgreSQL (the goal: independent of N), the prober failover time after SIGKILL of the prober (goal: at most
``lease`` + one interval), the time until all N pods show a shared dependency down after its fault (goal: the
prober's detection time + 100 ms) and the RSS per daemon.

``bench_fleet`` is what ``tests/bench/run.py`` (``make bench``) calls: N = 1 and 10 in a quick run, 1, 10 and 50
with ``BENCH_QUICK=0``; ``fleet_rows()`` returns the rows, and ``python tests/bench/fleet.py [N ...]`` prints them.
Numbers, not assertions: a shared machine is noisy.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))

from support import DaemonProcess, pg_monitoring_connections, rss_kib

from failsoft.devtools.llmsim import ThreadedSimulator
from failsoft.devtools.localservers import PostgresServer, RedisServer

Row = tuple[str, str, str, str, str]
SIZES = (1, 10, 50)
LEASE = 2.0  # seconds
INTERVAL = 1.0  # the shared dependencies' probe interval
WINDOW = 10.0  # seconds over which the probe load is counted


def config(pg: PostgresServer, rd: RedisServer, sim: ThreadedSimulator, service: str) -> str:
    """Every daemon's config: db and openai shared, the level published to the same Redis."""
    return f"""
service: {service}
http: {{listen: "127.0.0.1:0"}}
publish: {{redis: "{rd.url}", heartbeat: 2s}}
fleet: {{redis: "{rd.url}", lease: {LEASE}s}}
defaults: {{interval: {INTERVAL}s, timeout: 1s, unhealthy_threshold: 1, down_interval: {{initial: 500ms, max: 1s}}}}
dependencies:
  db: {{kind: postgres, dsn: "{pg.dsn}"}}
  openai: {json.dumps(sim.dependency_config("openai"))}
"""


def until(check: Any, timeout: float, what: str) -> Any:
    """Poll ``check`` until truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


async def _all_down(urls: list[str], within: float) -> tuple[float, float, float]:
    """(seconds until the first pod, until every pod shows openai down, the longest polling sweep: the resolution),
    polling all pods at once."""
    t0 = time.monotonic()
    first: float | None = None
    seen: set[str] = set()
    sweep = 0.0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        async def down(url: str) -> bool:
            async with session.get(url + "/service-level") as resp:
                state = await resp.json()
            return bool(state["dependencies"]["openai"]["state"] == "down")

        while time.monotonic() - t0 < within:
            pending = [u for u in urls if u not in seen]
            started = time.monotonic()
            results = await asyncio.gather(*(down(u) for u in pending), return_exceptions=True)
            sweep = max(sweep, time.monotonic() - started)
            now = time.monotonic() - t0
            for url, result in zip(pending, results, strict=True):
                if result is True:
                    seen.add(url)
                    first = now if first is None else first
            if len(seen) == len(urls):
                return first or now, now, sweep
            await asyncio.sleep(0.01)
    raise RuntimeError("not every pod showed openai down")


def measure(n: int, pg: PostgresServer, rd: RedisServer, sim: ThreadedSimulator) -> list[Row]:
    """One fleet of ``n`` daemons: its rows."""
    tmp = Path(tempfile.mkdtemp(prefix="failsoft-bench-fleet-"))
    text = config(pg, rd, sim, f"bench-{n}-{os.getpid()}")
    daemons = [DaemonProcess(text, tmp, {"FAILSOFT_POD": f"pod-{i}"}) for i in range(n)]
    rows: list[Row] = []
    try:
        for d in daemons:  # start them all, then wait: 50 interpreters starting one by one would take minutes
            d.start(wait_ready=False)
        for d in daemons:
            until(lambda d=d: d.get("/readyz")[0] == 200, 120, "readiness")
        until(lambda: (v := daemons[0].get("/fleet")[1]) and len(v["pods"]) == n, 60, "every pod in /fleet")
        time.sleep(2 * LEASE)  # let start-up settle: the rates below are steady-state
        before, t = sim.requests("openai"), time.monotonic()
        time.sleep(WINDOW)
        rate = (sim.requests("openai") - before) / (time.monotonic() - t)
        conns = pg_monitoring_connections(pg.dsn)
        rss = [rss_kib(d.proc.pid) / 1024 for d in daemons if d.proc is not None]
        rows.append((f"fleet N={n}: simulator requests/s (openai, interval {INTERVAL:g}s)", "1", f"{rate:.2f}/s",
                     "", ""))
        rows.append((f"fleet N={n}: monitoring connections on PostgreSQL", "1", str(conns), "", ""))
        rows.append((f"fleet N={n}: RSS per daemon", str(len(rss)), f"{statistics.median(rss):.1f} MiB", "",
                     f"{max(rss):.1f} MiB"))
        # Failover: SIGKILL the prober of openai; time to the first request from another pod.
        prober = daemons[0].get("/fleet")[1]["probers"]["openai"]
        victim = next(d for d in daemons if d.env.get("FAILSOFT_POD") == prober)
        survivors = [d for d in daemons if d is not victim]
        if survivors:
            victim.signal(signal.SIGKILL)
            victim.wait_exit()
            killed_at, count = time.monotonic(), sim.requests("openai")
            until(lambda: sim.requests("openai") > count, 30, "a new prober")
            took = sim.received("openai")[-1].at - killed_at
            rows.append((f"fleet N={n}: prober failover after SIGKILL (lease {LEASE:g}s + interval "
                         f"{INTERVAL:g}s)", "1", f"{took * 1000:.0f} ms", "", ""))
            until(lambda: (v := survivors[0].get("/fleet")[1]) and v["probers"]["openai"] not in (None, prober),
                  30, "/fleet naming the new prober")
        # Detection: the simulator fails; time until the first pod (the prober) and every pod show it down.
        live = survivors or daemons
        sim.set_mode("openai", "error")
        first, last, sweep = asyncio.run(_all_down([d.url for d in live], 60))
        sim.set_mode("openai", "healthy")
        rows.append((f"fleet N={len(live)}: fault -> prober shows down", "1", f"{first * 1000:.0f} ms", "", ""))
        rows.append((f"fleet N={len(live)}: fault -> all pods show down", "1", f"{last * 1000:.0f} ms",
                     f"+{(last - first) * 1000:.0f} ms after the first",
                     f"(polling sweep up to {sweep * 1000:.0f} ms)"))
    finally:
        for d in daemons:
            if d.proc is not None and d.proc.poll() is None:
                d.proc.terminate()
        for d in daemons:
            d.stop()
    return rows


def fleet_rows(sizes: tuple[int, ...] = SIZES) -> list[Row]:
    """Every fleet size's rows, each fleet against the same servers (its own service name)."""
    os.environ.setdefault("FAILSOFT_TEST_DOCKER", "never")
    rows: list[Row] = []
    sim = ThreadedSimulator({"openai": "openai"}).start()
    try:
        with PostgresServer() as pg, RedisServer() as rd:
            for n in sizes:
                rows += measure(n, pg, rd, sim)  # type: ignore[arg-type]
    finally:
        sim.stop()
    return rows


def bench_fleet(rows: Any, quick: bool) -> None:
    """The runner's entry point: one text row per figure (``rows`` is benchlib's ``Rows``)."""
    for what, _n, value, extra, more in fleet_rows((1, 10) if quick else SIZES):
        rows.note(what, " ".join(x for x in (value, extra, more) if x))


def main() -> None:
    """Print the fleet table (sizes from the command line, default 1 10 50)."""
    sizes = tuple(int(a) for a in sys.argv[1:]) or SIZES
    rows = fleet_rows(sizes)
    header = ("measurement", "n", "value", "", "")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    print(f"\nfailsoft fleet bench ({os.cpu_count()} cores; numbers from a shared machine)\n")
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
