"""Idle cost: CPU and memory of a daemon probing 10 healthy dependencies once a second, doing nothing else."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from benchlib import Figure, Rows
from serving import cpu_seconds

from failsoft.devtools.localservers import PostgresServer, RedisServer

CONFIG = """
http: {{listen: "127.0.0.1:0"}}
log: {{level: info}}
dependencies:
{deps}
"""


def ten_dependencies(pg: PostgresServer, rd: RedisServer) -> str:
    """4 PostgreSQL, 4 Redis and 2 TCP dependencies on the local servers, at the default 1 s interval."""
    lines = [f'  db{i}: {{kind: postgres, dsn: "{pg.dsn}"}}' for i in range(4)]
    lines += [f'  cache{i}: {{kind: redis, url: "{rd.url}"}}' for i in range(4)]
    lines += [f'  tcp{i}: {{kind: tcp, address: "127.0.0.1:{rd.port}"}}' for i in range(2)]
    return "\n".join(lines)


def bench_idle(rows: Rows, quick: bool) -> None:
    """Idle CPU and RSS on asyncio's loop and on uvloop (when installed), on the same local servers; and, when
    ``make bench`` built it (``BENCH_DAEMON_PYTHON``), from an install of ``failsoft[daemon]`` alone, as deployed."""
    import importlib.util

    loops = ["asyncio", "uvloop"] if importlib.util.find_spec("uvloop") else ["asyncio"]
    deployed = os.environ.get("BENCH_DAEMON_PYTHON", "")
    with PostgresServer() as pg, RedisServer() as rd:
        for loop in loops:
            _idle(rows, quick, pg, rd, loop)
        if deployed and Path(deployed).exists():
            _idle(rows, quick, pg, rd, "asyncio", python=deployed, what="asyncio, failsoft[daemon] alone")
        else:
            rows.skip("idle, failsoft[daemon] alone", "no such install (make bench builds one in .bench/)")


def _idle(rows: Rows, quick: bool, pg: PostgresServer, rd: RedisServer, loop: str, *,
          python: str = sys.executable, what: str = "") -> None:
    """CPU % of one core over a quiet window (after a warm-up), and RSS, for 10 dependencies at 1 Hz."""
    from support import DaemonProcess, rss_kib

    what = what or loop
    window = 20 if quick else 60
    tmp = Path(tempfile.mkdtemp(prefix="failsoft-bench-idle-"))
    d = DaemonProcess(CONFIG.format(deps=ten_dependencies(pg, rd)), tmp, env={"FAILSOFT_EVENT_LOOP": loop},
                      python=python).start()
    try:
        assert d.proc is not None
        time.sleep(3)  # connections made, the first probes done
        c0, t0 = cpu_seconds(d.proc.pid), time.monotonic()
        time.sleep(window)
        cpu = (cpu_seconds(d.proc.pid) - c0) / (time.monotonic() - t0) * 100
        rss = rss_kib(d.proc.pid) / 1024
    finally:
        d.stop()
    key = loop if python == sys.executable else f"{loop}.deployed"
    rows.add(Figure(f"idle CPU, 10 dependencies at 1 Hz ({what})", cpu, "%", samples=[cpu], key=f"idle.cpu.{key}",
                    note=f"{window}s window, % of one core"))
    rows.add(Figure(f"idle RSS, 10 dependencies ({what})", rss, "MiB", samples=[rss], key=f"idle.rss.{key}"))
