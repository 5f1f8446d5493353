"""``make bench``: what failsoft costs and how fast it reacts, beside its anchors, measured in one run.

Not a test: numbers on shared machines are noisy, so they are reported, never asserted. Every figure of one run is
printed as one Markdown table with the anchors measured in the same run (HAProxy for detection, a bare aiohttp
app and nginx for serving), so ratios compare like with like. ``BENCH_JSON=path`` also writes the figures as JSON.

Each measurement is a module of this folder with a function ``bench_<name>(rows, quick)`` that adds rows to a
``benchlib.Rows``; ``MODULES`` lists them in the order they run. A module added by another piece of work is picked
up without editing this list when it defines ``bench(rows, quick)`` (e.g. ``tests/bench/fleet.py``). Settings:

- ``BENCH_QUICK=0``: the full run (more rounds, longer windows); by default the quick one (a few minutes).
- ``BENCH_ONLY=detection,serving``: only these modules.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "lib"))

from benchlib import Rows  # noqa: E402 - after the path set-up above

from failsoft.daemon import logs  # noqa: E402

MODULES = ["detection", "serving", "fanout", "idle", "basics", "apps", "sse_memory"]
NOT_BENCHES = {"run", "benchlib", "fanout_client"}


def bench_apps(rows: Rows, quick: bool) -> None:
    """``apps.bench_apps`` (POST /report, OFREP) speaks the older ``row``/``note`` shape: adapted here."""
    del quick
    from apps import bench_apps as apps

    from failsoft.devtools.localservers import RedisServer

    def row(what: str, samples: list[float], unit: str = "ms", scale: float = 1000.0) -> None:
        rows.latency(what, samples, key="apps." + what, unit=unit, scale=scale)

    with RedisServer() as rd:
        apps(rd.url, row, rows.note)


def bench_sse_memory(rows: Rows, quick: bool) -> None:
    """``sse_memory.bench_sse_memory`` (RSS with N idle streams) speaks the ``note`` shape: adapted here."""
    del quick
    from sse_memory import bench_sse_memory as sse_memory

    from failsoft.devtools.localservers import PostgresServer, RedisServer

    with PostgresServer() as pg, RedisServer() as rd:
        sse_memory(pg.dsn, rd.url, rows.note)


ADAPTED = {"apps": bench_apps, "sse_memory": bench_sse_memory}  # modules whose bench function has another shape


def machine() -> str:
    """Cores and CPU model, for the table's caption."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return f"{os.cpu_count()} cores, {model}"


def benches(only: set[str]) -> list[tuple[str, Callable[[Rows, bool], None]]]:
    """The bench functions to run: MODULES in order, then any other module here that defines ``bench``."""
    out: list[tuple[str, Callable[[Rows, bool], None]]] = []
    names = MODULES + sorted(p.stem for p in HERE.glob("*.py") if p.stem not in {*MODULES, *NOT_BENCHES})
    for name in names:
        if only and name not in only:
            continue
        if name in ADAPTED:
            out.append((name, ADAPTED[name]))
            continue
        module = importlib.import_module(name)
        fn = getattr(module, f"bench_{name}", None) or getattr(module, "bench", None)
        if callable(fn):
            out.append((name, fn))
    return out


def main() -> None:
    """Run every measurement, print the table, write the JSON when asked."""
    os.environ.setdefault("FAILSOFT_TEST_DOCKER", "never")
    logs.configure("error")  # in-process daemons stay quiet (the long-poll bench sets overrides)
    quick = os.environ.get("BENCH_QUICK", "1") != "0"
    only = {m.strip() for m in os.environ.get("BENCH_ONLY", "").split(",") if m.strip()}
    rows = Rows()
    started = time.monotonic()
    for name, fn in benches(only):
        t = time.monotonic()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        try:
            fn(rows, quick)
        except Exception as exc:  # one broken bench must not hide the others' figures
            traceback.print_exc()
            rows.skip(name, f"failed: {type(exc).__name__}: {exc}")
        print(f"bench: {name} took {time.monotonic() - t:.0f}s", file=sys.stderr, flush=True)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    caption = (f"failsoft bench, {when}, {machine()}, Python {sys.version.split()[0]}, "
               f"{'quick' if quick else 'full'} run in {time.monotonic() - started:.0f}s")
    print(f"\n{caption}\n")
    print(rows.table())
    if path := os.environ.get("BENCH_JSON"):
        Path(path).write_text(json.dumps({"caption": caption, "date": when, "machine": machine(),
                                          **rows.as_json()}, indent=2))
        print(f"\nfigures written to {path}")


if __name__ == "__main__":
    main()
