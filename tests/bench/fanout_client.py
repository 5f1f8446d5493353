"""A crowd of SSE readers in their own process, for the fan-out bench (``fanout.py`` drives it over stdin).

Each reader is a bare asyncio Protocol (uvloop when installed), so that the readers' own cost hides as little of
the daemon's fan-out time as possible. Commands, one per line: ``watch MARKER`` (forget the last receipts, answer
``ok``), ``report`` (wait up to 10 s until every reader has seen MARKER, print a JSON list of CLOCK_MONOTONIC
receipt times, null for a reader that never saw it).
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

try:
    import uvloop
except ImportError:  # the bench still runs, on the default loop
    uvloop = None


class Reader(asyncio.Protocol):
    """One SSE connection that only looks for the marker in what arrives."""

    marker = b""

    def __init__(self, request: bytes, opened: asyncio.Future[None]) -> None:
        self.request = request
        self.opened = opened
        self.seen: float | None = None
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]  # uvloop's are not asyncio.Transport

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if not self.opened.done() and b"event: snapshot" in data:
            self.opened.set_result(None)
        if self.seen is None and Reader.marker and Reader.marker in self.tail + data:
            self.seen = now
        self.tail = data[-64:]


async def main(host: str, port: int, count: int) -> None:
    """Open ``count`` streams, then answer commands."""
    loop = asyncio.get_running_loop()
    request = f"GET /service-level/events HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    readers = []
    for i in range(count):
        opened: asyncio.Future[None] = loop.create_future()
        _, reader = await loop.create_connection(lambda o=opened: Reader(request, o), host, port)
        readers.append(reader)
        if i % 500 == 499:
            await asyncio.gather(*(r.opened for r in readers))
    await asyncio.gather(*(r.opened for r in readers))
    print("ready", flush=True)
    while line := await loop.run_in_executor(None, sys.stdin.readline):  # the loop keeps reading meanwhile
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "watch":
            Reader.marker = arg.encode()
            for r in readers:
                r.seen = None
            print("ok", flush=True)
        elif cmd == "report":
            deadline = time.monotonic() + 10
            while any(r.seen is None for r in readers) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # polling costs the readers' process, never the daemon
            print(json.dumps([r.seen for r in readers]), flush=True)


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    coro = main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
    if uvloop is not None:
        uvloop.run(coro)
    else:
        asyncio.run(coro)
