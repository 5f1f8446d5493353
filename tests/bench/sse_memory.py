"""The daemon's memory with N idle event streams open: the figures behind the Kubernetes sidecar's memory limit.

A real ``failsoft run`` process with the example's kinds of dependencies (PostgreSQL, Redis, and a TCP check
standing in for the LLM API) and N clients that each opened ``GET /service-level/events``, read the snapshot
and then stay idle. RSS is read from /proc once the daemon counts N subscribers and has settled; the slope
between the largest and the smallest N is the cost of one idle stream. docs/kubernetes.md ("Sizing") quotes a
run of ``python tests/bench/sse_memory.py``.
"""

from __future__ import annotations

import re
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))

from support import DaemonProcess, request, rss_kib, wait_for

STEPS = (0, 500, 1000, 2000, 4000)


def rss_mib(pid: int) -> float:
    """The resident set of a process, in MiB."""
    return rss_kib(pid) / 1024


def subscribers(url: str) -> int:
    """The daemon's own count of open event streams (failsoft_sse_subscribers)."""
    status, text, _ = request(url + "/metrics")
    assert status == 200, f"/metrics answered {status}"
    match = re.search(r"^failsoft_sse_subscribers(?:\{[^}]*\})? ([0-9.e+]+)$", str(text), re.MULTILINE)
    assert match, "no failsoft_sse_subscribers in /metrics"
    return int(float(match[1]))


def open_stream(host: str, port: int) -> socket.socket:
    """One SSE client: the request, then read until the snapshot event is complete; the socket stays open."""
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(f"GET /service-level/events HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    seen = b""
    while b"\n\n" not in seen.partition(b"event: snapshot")[2]:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"the stream ended early: {seen[:300]!r}")
        seen += chunk
    return sock


def settled_rss(pid: int) -> float:
    """RSS once it has stopped moving (three equal-ish readings 0.5 s apart), in MiB."""
    readings = [rss_mib(pid)]
    for _ in range(20):
        time.sleep(0.5)
        readings.append(rss_mib(pid))
        if max(readings[-3:]) - min(readings[-3:]) < 0.25 and len(readings) >= 3:
            break
    return readings[-1]


def measure(pg_dsn: str, redis_url: str, steps: tuple[int, ...] = STEPS) -> list[tuple[int, float]]:
    """(streams, RSS MiB) for each step, on one daemon whose streams only ever grow."""
    redis_port = int(redis_url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])
    config = f"""
http: {{listen: "127.0.0.1:0"}}
publish: {{redis: cache}}
dependencies:
  db: {{kind: postgres, dsn: "{pg_dsn}"}}
  cache: {{kind: redis, url: "{redis_url}"}}
  api: {{kind: tcp, address: "127.0.0.1:{redis_port}", interval: 15s}}
"""
    socks: list[socket.socket] = []
    with tempfile.TemporaryDirectory() as tmp:
        daemon = DaemonProcess(config, Path(tmp)).start()
        assert daemon.proc is not None
        host, port = "127.0.0.1", int(daemon.url.rsplit(":", 1)[1])
        try:
            table = []
            for n in steps:
                while len(socks) < n:
                    socks.append(open_stream(host, port))
                wait_for(lambda n=n: subscribers(daemon.url) == n or None, 60, what=f"{n} subscribers")  # type: ignore[misc]
                table.append((n, settled_rss(daemon.proc.pid)))
            return table
        finally:
            for sock in socks:
                sock.close()
            daemon.stop()


def bench_sse_memory(pg_dsn: str, redis_url: str, note: Callable[[str, str], None]) -> None:
    """Rows for ``make bench``: RSS at each step and the cost of one idle stream."""
    table = measure(pg_dsn, redis_url)
    for n, mib in table:
        note(f"daemon RSS, {n} idle SSE streams", f"{mib:.1f} MiB")
    (n0, m0), (n1, m1) = table[0], table[-1]
    note("RSS per idle SSE stream", f"{(m1 - m0) * 1024 / (n1 - n0):.1f} KiB")


if __name__ == "__main__":
    from failsoft.devtools.localservers import PostgresServer, RedisServer

    with PostgresServer() as pg, RedisServer() as rd:
        bench_sse_memory(pg.dsn, rd.url, lambda what, value: print(f"{what:40} {value}"))
