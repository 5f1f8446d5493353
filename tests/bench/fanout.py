"""Fan-out: from ``POST /override`` (a real change through the owner) to every subscriber having the event.

SSE readers live in another process (``fanout_client.py``), so the daemon's loop does only the daemon's work;
CLOCK_MONOTONIC is shared by processes, so receipt times compare with the time the request was sent. The Redis
row has one SSE reader and one Redis pub/sub subscriber, both in this process.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import aiohttp
from benchlib import Rows

from failsoft.devtools.localservers import RedisServer

TOKEN = "bench-admin-token-0123456789"


def _config(rd: RedisServer) -> str:
    return textwrap.dedent(f"""
        service: bench
        http: {{listen: "127.0.0.1:0", admin_token: "{TOKEN}"}}
        dependencies:
          cache: {{kind: redis, url: "{rd.url}"}}
        publish: {{redis: "{rd.url}"}}
        policy:
          levels: [full, cache_only]
          rules: [{{level: cache_only, when: {{any_down: [cache]}}}}]
    """)


class Admin:
    """Sets and clears the override over one kept connection, with requests built in advance: the time taken is
    the moment the request's bytes are handed to the kernel, so a latency is the daemon's and the loopback's, not
    the bench client building a request (aiohttp's client spends ~0.5 ms on that before anything leaves)."""

    def __init__(self, url: str) -> None:
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        body = json.dumps({"level": "cache_only", "ttl": "5m", "reason": "bench"}).encode()
        head = f"Host: {self.host}\r\nAuthorization: Bearer {TOKEN}\r\n"
        self.set = (f"POST /override HTTP/1.1\r\n{head}Content-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        self.clear = f"DELETE /override HTTP/1.1\r\n{head}Content-Length: 0\r\n\r\n".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Admin:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.writer is not None
        self.writer.close()

    async def override(self, on: bool) -> float:
        """Set (or clear) the override; the CLOCK_MONOTONIC time just before the request left."""
        assert self.reader is not None and self.writer is not None
        t0 = time.monotonic()
        self.writer.write(self.set if on else self.clear)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(int(line.split(b":", 1)[1]) for line in head.lower().split(b"\r\n")
                      if line.startswith(b"content-length:"))
        await self.reader.readexactly(length)
        if status != 200:
            raise RuntimeError(f"the override answered {status}")
        return t0


async def _crowd(url: str, count: int, rounds: int) -> tuple[list[float], int]:
    """Latencies (s) over ``rounds`` changes to ``count`` readers, and how many receipts were missing."""
    host, port = url.removeprefix("http://").split(":")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).with_name("fanout_client.py")), host, port, str(count),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=16 * 1024 * 1024)
    assert proc.stdin is not None and proc.stdout is not None
    latencies: list[float] = []
    missing = 0
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        if line.strip() != b"ready":
            raise RuntimeError(f"the SSE crowd did not start: {line!r}")
        async with Admin(url) as admin:
            for i in range(rounds):
                on = i % 2 == 0
                proc.stdin.write(f"watch event: {'override_set' if on else 'override_cleared'}\n".encode())
                await proc.stdin.drain()
                await proc.stdout.readline()
                await asyncio.sleep(0.05)
                t0 = await admin.override(on)
                proc.stdin.write(b"report\n")
                await proc.stdin.drain()
                seen = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
                missing += sum(1 for t in seen if t is None)
                latencies += [t - t0 for t in seen if t is not None]
    finally:
        proc.stdin.close()
        proc.kill()
        await proc.wait()
    return latencies, missing


async def _sse_and_redis(url: str, rd: RedisServer, rounds: int) -> tuple[list[float], list[float]]:
    """Latencies to one SSE reader and one Redis subscriber, both here."""
    from redis.asyncio import Redis

    sse_times: list[float] = []
    redis_times: list[float] = []
    client = Redis.from_url(rd.url)
    pubsub = client.pubsub()
    await pubsub.subscribe("failsoft:bench:events")
    async with aiohttp.ClientSession() as session, Admin(url) as admin:
        stream = await session.get(url + "/service-level/events")

        async def sse_next(marker: bytes) -> float:
            while marker not in await stream.content.readline():
                pass
            return time.monotonic()

        async def redis_next(marker: bytes) -> float:
            while True:
                msg = await pubsub.get_message(timeout=10)
                if msg and msg["type"] == "message" and marker in msg["data"]:
                    return time.monotonic()

        await sse_next(b"event: snapshot")
        for i in range(rounds):
            on = i % 2 == 0
            marker = b"override_set" if on else b"override_cleared"
            waiters = asyncio.gather(sse_next(b"event: " + marker), redis_next(b'"type":"' + marker))
            await asyncio.sleep(0.02)
            t0 = await admin.override(on)
            sse, red = await asyncio.wait_for(waiters, 10)
            sse_times.append(sse - t0)
            redis_times.append(red - t0)
        stream.close()
    await pubsub.aclose()
    await client.aclose()
    return sse_times, redis_times


def bench_fanout(rows: Rows, quick: bool, sizes: tuple[int, ...] = (1, 100, 1000, 5000)) -> None:
    """One change to N SSE readers (p50/p99/max over every receipt of every round), and to 1 SSE + 1 Redis."""
    from support import DaemonProcess

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the daemon: 5,000 streams
    rounds = 10 if quick else 30
    with RedisServer() as rd:
        tmp = Path(tempfile.mkdtemp(prefix="failsoft-bench-fanout-"))
        d = DaemonProcess(_config(rd), tmp).start()
        try:
            sse, red = asyncio.run(_sse_and_redis(d.url, rd, rounds * 3))
            rows.latency("change -> 1 SSE reader (with 1 Redis subscriber)", sse, key="fanout.sse1_with_redis")
            rows.latency("change -> 1 Redis subscriber (with 1 SSE reader)", red, key="fanout.redis1")
            for n in sizes:
                if n > hard - 200:
                    rows.skip(f"change -> {n} SSE readers", f"RLIMIT_NOFILE hard limit {hard} is too low")
                    continue
                lat, missing = asyncio.run(_crowd(d.url, n, max(4, rounds // (1 + n // 1000))))
                rows.latency(f"change -> {n} SSE readers", lat, key=f"fanout.sse{n}",
                             note=f"{missing} missing" if missing else "none missing")
                time.sleep(0.5)
        finally:
            d.stop()
