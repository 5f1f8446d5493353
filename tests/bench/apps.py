"""Bench rows for the app-facing endpoints: POST /report intake and OFREP evaluation, on the daemon process.

Called by ``tests/bench/run.py`` as ``bench_apps(redis_url, row, note)``; numbers are reported, never asserted.
"""

from __future__ import annotations

import http.client
import json
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from support import DaemonProcess

REPORT_SECONDS = 3.0
CONNECTIONS = 4


def _flood(host: str, port: int, seconds: float) -> tuple[int, int, list[float]]:
    """Bodies of 1,000 success reports as fast as ``CONNECTIONS`` connections go: (accepted, dropped, latencies)."""
    body = json.dumps([{"dependency": "cache", "ok": True, "latency_ms": 1}] * 1000).encode()
    accepted = dropped = 0
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def send() -> None:
        nonlocal accepted, dropped
        conn = http.client.HTTPConnection(host, port, timeout=10)
        while time.monotonic() < deadline:
            t = time.perf_counter()
            conn.request("POST", "/report", body, {"Content-Type": "application/json"})
            answer = json.loads(conn.getresponse().read())
            with lock:
                latencies.append(time.perf_counter() - t)
                accepted += answer["accepted"]
                dropped += answer["dropped"]
        conn.close()

    threads = [threading.Thread(target=send) for _ in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return accepted, dropped, latencies


def _post(conn: http.client.HTTPConnection, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    conn.request("POST", path, b"{}", {"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    resp.read()
    return resp.status, resp.headers.get("ETag", "")


def bench_apps(redis_url: str, row: Callable[..., None], note: Callable[[str, str], None]) -> None:
    """Report intake rate and latency of a 1,000-report body; OFREP single and bulk (304) evaluation latency."""
    d = DaemonProcess(f"""
http: {{listen: "127.0.0.1:0"}}
dependencies:
  cache: {{kind: redis, url: "{redis_url}"}}
policy: {{capabilities: {{full: [chat], degraded: [chat], limited: [], cache_only: []}}}}
""", Path(tempfile.mkdtemp(prefix="failsoft-bench-apps-"))).start()
    try:
        host, port = d.url.removeprefix("http://").split(":")
        accepted, dropped, latencies = _flood(host, int(port), REPORT_SECONDS)
        row("POST /report, a body of 1,000 (4 conns)", latencies)
        note("POST /report intake (4 conns, bodies of 1,000)",
             f"{(accepted + dropped) / REPORT_SECONDS:.0f} reports/s, {dropped} dropped")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        single, bulk = [], []
        for _ in range(500):
            t = time.perf_counter()
            _post(conn, "/ofrep/v1/evaluate/flags/capability.chat")
            single.append(time.perf_counter() - t)
        _, tag = _post(conn, "/ofrep/v1/evaluate/flags")
        for _ in range(500):
            t = time.perf_counter()
            status, new_tag = _post(conn, "/ofrep/v1/evaluate/flags", {"If-None-Match": tag})
            bulk.append(time.perf_counter() - t)
            if status == 200:  # the State changed meanwhile (a probe's latency does not; a state change does)
                tag = new_tag
        conn.close()
        row("OFREP one flag (sequential)", single)
        row("OFREP bulk poll answered 304 (sequential)", bulk)
    finally:
        d.stop()
