"""Crash (kill -9) and hang (SIGSTOP) detection of PostgreSQL and Redis: failsoft beside HAProxy, same run.

Both watch the same servers with the same settings: a check every 1 s, every 250 ms once one failed, a 500 ms
deadline, down after 3 failures, up after 2 successes (HAProxy: ``inter 1s fastinter 250ms timeout check 500ms
fall 3 rise 2``, ``option pgsql-check`` and a tcp-check with AUTH + PING for Redis). Each round waits a random
fraction of a second (so the fault lands anywhere in the check period), injects the fault, and times when each
says "down": failsoft from its event stream (the ``dependency_changed`` event's arrival), HAProxy from its log
("Server x is DOWN", read as it is written). The median over the rounds is compared.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import tempfile
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from benchlib import Figure, Rows, free_port, median

from failsoft.devtools.localservers import PostgresServer, RedisServer

HAPROXY_CONF = """
global
    log stdout format raw local0 info
defaults
    mode tcp
    log global
    timeout connect 500ms
    timeout check 500ms
    timeout client 5s
    timeout server 5s
frontend unused
    bind 127.0.0.1:{listen_port}
    default_backend pg
backend pg
    option pgsql-check user failsoft
    server db 127.0.0.1:{pg_port} check inter 1s fastinter 250ms downinter 1s fall 3 rise 2
backend redis
    option tcp-check
    tcp-check connect
    tcp-check send AUTH\\ {redis_password}\\r\\n
    tcp-check expect string +OK
    tcp-check send PING\\r\\n
    tcp-check expect string +PONG
    tcp-check send QUIT\\r\\n
    tcp-check expect string +OK
    server cache 127.0.0.1:{redis_port} check inter 1s fastinter 250ms downinter 1s fall 3 rise 2
"""

FAILSOFT_CONF = """
http: {{listen: "127.0.0.1:0"}}
defaults: {{interval: 1s, fast_interval: 250ms, timeout: 500ms, unhealthy_threshold: 3, healthy_threshold: 2,
            down_interval: {{initial: 250ms, max: 1s}}}}
dependencies:
  db: {{kind: postgres, dsn: "{dsn}"}}
  cache: {{kind: redis, url: "{url}"}}
"""


class Watch:
    """Lines from a stream read in a thread, each with the CLOCK_MONOTONIC time it arrived: (time, dep, up)."""

    def __init__(self, lines: Callable[[], object], parse: Callable[[str], tuple[str, bool] | None]) -> None:
        self.seen: list[tuple[float, str, bool]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, args=(lines, parse), daemon=True)
        self._thread.start()

    def _run(self, lines: Callable[[], object], parse: Callable[[str], tuple[str, bool] | None]) -> None:
        for raw in lines():  # type: ignore[attr-defined]
            now = time.monotonic()
            found = parse(raw.decode(errors="replace") if isinstance(raw, bytes) else raw)
            if found is not None:
                with self._lock:
                    self.seen.append((now, *found))

    def state(self, dep: str) -> bool | None:
        """The last state reported for ``dep`` (True: up), or None."""
        with self._lock:
            for _, d, up in reversed(self.seen):
                if d == dep:
                    return up
        return None

    def first_since(self, dep: str, up: bool, since: float) -> float | None:
        """When ``dep`` was first reported ``up``/down after ``since``."""
        with self._lock:
            return next((t for t, d, u in self.seen if d == dep and u == up and t >= since), None)


def _failsoft_event(line: str) -> tuple[str, bool] | None:
    if not line.startswith("data: ") or '"dependency_changed"' not in line:
        return None
    data = json.loads(line[6:])
    if data["state"] == "down":
        return data["dependency"], False
    if data["state"] == "healthy":
        return data["dependency"], True
    return None


def _haproxy_line(line: str) -> tuple[str, bool] | None:
    for name, dep in (("pg/db", "db"), ("redis/cache", "cache")):
        if f"Server {name} is DOWN" in line:
            return dep, False
        if f"Server {name} is UP" in line:
            return dep, True
    return None


def _wait(pred: Callable[[], bool], timeout: float, what: str, watchers: list[Watch]) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}; seen: {[w.seen[-4:] for w in watchers]}")
        time.sleep(0.01)


def bench_detection(rows: Rows, quick: bool) -> None:
    """Median time from kill -9 / SIGSTOP to "down", failsoft and HAProxy, PostgreSQL and Redis."""
    from support import DaemonProcess

    haproxy = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    rounds = 5 if quick else 9
    tmp = Path(tempfile.mkdtemp(prefix="failsoft-bench-detect-"))
    with PostgresServer() as pg, RedisServer() as rd:
        daemon = DaemonProcess(textwrap.dedent(FAILSOFT_CONF.format(dsn=pg.dsn, url=rd.url)), tmp).start()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            stream = urllib.request.urlopen(daemon.url + "/service-level/events", timeout=3600)
            ours = Watch(lambda: stream, _failsoft_event)
            theirs = None
            if haproxy is None:
                rows.skip("HAProxy detection",
                          "haproxy is not installed (apt-get install haproxy; make bench as root)")
            else:
                conf = tmp / "haproxy.cfg"
                conf.write_text(HAPROXY_CONF.format(pg_port=pg.port, redis_port=rd.port, redis_password=rd.password,
                                                    listen_port=free_port()))
                proc = subprocess.Popen([haproxy, "-db", "-f", str(conf)], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT)
                procs.append(proc)
                assert proc.stdout is not None
                out = proc.stdout
                theirs = Watch(lambda: iter(out.readline, b""), _haproxy_line)
            scenarios = [
                ("PostgreSQL kill -9", "db", pg.kill, pg.start),
                ("Redis kill -9", "cache", rd.kill, rd.start),
                ("PostgreSQL SIGSTOP", "db", pg.pause, pg.resume),
                ("Redis SIGSTOP", "cache", rd.pause, rd.resume),
            ]
            watchers = [w for w in (ours, theirs) if w is not None]
            for what, dep, fault, heal in scenarios:
                mine, anchor = [], []
                for _ in range(rounds):
                    # Both see it up, and have for a while: their checks are back at the normal interval.
                    _wait(lambda d=dep: all(w.state(d) is not False for w in watchers), 30, f"{dep} up", watchers)
                    time.sleep(2.5 + random.uniform(0, 1.0))
                    t0 = time.monotonic()
                    fault()
                    _wait(lambda d=dep, t=t0: all(w.first_since(d, False, t) is not None for w in watchers), 30,
                          f"{dep} down", watchers)
                    mine.append(ours.first_since(dep, False, t0) - t0)  # type: ignore[operator]
                    if theirs is not None:
                        anchor.append(theirs.first_since(dep, False, t0) - t0)  # type: ignore[operator]
                    heal()
                    _wait(lambda d=dep, t=t0: all(w.first_since(d, True, t) is not None for w in watchers), 60,
                          f"{dep} up again", watchers)
                key = what.lower().replace(" ", "_").replace("-", "")
                ratio = f"{median(anchor) / median(mine):.2f}x faster than HAProxy" if anchor else ""
                rows.add(Figure(f"detect {what} -> down: failsoft", median(mine) * 1000, "ms",
                                samples=[x * 1000 for x in mine], note=ratio, key=f"detect.{key}.failsoft",
                                max=max(mine) * 1000))
                if anchor:
                    rows.add(Figure(f"detect {what} -> down: HAProxy 2.x", median(anchor) * 1000, "ms",
                                    samples=[x * 1000 for x in anchor], note="anchor", key=f"detect.{key}.haproxy",
                                    max=max(anchor) * 1000))
        finally:
            for p in procs:
                p.terminate()
                p.wait(5)
            daemon.stop()
