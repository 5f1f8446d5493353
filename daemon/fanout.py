"""Event streams' hot path: each event goes straight from the publisher to every reader's socket, bounded.

The hub builds each SSE message once (``PublishedEvent.frame``, and ``chunk``: the same bytes as one HTTP/1.1
chunk). Once a stream has sent its first frames, the publisher writes each new event to the stream's transport in
its own call, for every reader in one loop: no per-reader queue, no per-reader task switch. That is what makes one
change reach thousands of readers in milliseconds.

A reader that stops reading must not hold memory without bound, in the kernel or here:

- ``SEND_BUFFER``: the event-stream socket's kernel send buffer is made small (``SO_SNDBUF``; Linux doubles the
  value for its bookkeeping). By default Linux grows it up to ``net.ipv4.tcp_wmem``'s maximum (4 MiB), which a
  stalled reader fills before anything notices; SSE messages are small, so a small buffer costs nothing.
- ``WRITE_BUFFER_LIMIT``: once the kernel buffer is full, the transport buffers in user space; beyond this many
  bytes the reader is cut off (the stream is dropped, and ``Last-Event-ID`` lets it resume from the ring).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from failsoft.daemon.hub import Batch

SEND_BUFFER = 16 * 1024  # bytes asked for with SO_SNDBUF (the kernel reserves twice this)
WRITE_BUFFER_LIMIT = 64 * 1024  # bytes queued in user space for one reader before it is dropped


def bound_send_buffer(transport: asyncio.BaseTransport | None) -> None:
    """Make the kernel send buffer of an event stream's socket small (see ``SEND_BUFFER``)."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)


def direct_writer(transport: asyncio.Transport, floor: int, chunked: bool) -> Callable[[Batch], bool]:
    """A ``Subscription.deliver_directly`` callback writing the events above ``floor`` to ``transport``.

    ``chunked``: the response uses chunked transfer encoding (HTTP/1.1), so each event is one chunk, exactly as
    aiohttp's own writes on the same transport are. The events of one publish go out in one write (the bytes are
    joined once for all readers, ``Batch``). It returns False when the reader is too far behind
    (``WRITE_BUFFER_LIMIT``), and True otherwise, also once the connection is closing (its stream ends).
    """
    def deliver(batch: Batch) -> bool:
        if transport.is_closing():
            return True
        if transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
            return False
        if batch.events[0].seq > floor:
            transport.write(batch.chunks if chunked else batch.frames)
        elif fresh := [e.chunk if chunked else e.frame for e in batch.events if e.seq > floor]:
            transport.write(b"".join(fresh))
        return True

    return deliver
