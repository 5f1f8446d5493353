"""failsoft.daemon.fanout.direct_writer: the events of one publish reach a reader's socket in one write, only
those above the reader's floor, as SSE frames or as HTTP/1.1 chunks. A real socket pair carries the bytes."""

from __future__ import annotations

import asyncio
import socket

import pytest

from failsoft.daemon.fanout import direct_writer
from failsoft.daemon.hub import Batch, PublishedEvent


def event(seq: int) -> PublishedEvent:
    """An event as the hub builds it."""
    data = {"type": "level_changed", "boot": "b0", "seq": seq}
    return PublishedEvent(seq, "level_changed", data, b'{"seq":%d}' % seq)


async def received(peer: socket.socket, size: int) -> bytes:
    """Exactly ``size`` bytes from the peer, read as they arrive."""
    loop = asyncio.get_running_loop()
    out = b""
    while len(out) < size:
        out += await asyncio.wait_for(loop.sock_recv(peer, size - len(out)), 5)
    return out


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_batch_is_one_write_of_the_events_above_the_floor(chunked: bool) -> None:
    """Floor 5: of a batch of 4..7 only 6 and 7 go out; the next batch goes out whole; the bytes are the frames
    (or chunks) in seq order, and nothing else."""
    loop = asyncio.get_running_loop()
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    writes: list[bytes] = []
    write = transport.write

    def counted(data: bytes | bytearray | memoryview) -> None:
        writes.append(bytes(data))
        write(data)

    transport.write = counted  # type: ignore[method-assign]
    try:
        deliver = direct_writer(transport, floor=5, chunked=chunked)  # type: ignore[arg-type]
        first, second = Batch(tuple(event(s) for s in (4, 5, 6, 7))), Batch((event(8), event(9)))
        assert deliver(first) and deliver(second)
        assert deliver(Batch((event(3),)))  # entirely below the floor: nothing to write, and no error
        piece = (lambda e: e.chunk) if chunked else (lambda e: e.frame)
        expected = [piece(event(6)) + piece(event(7)), piece(event(8)) + piece(event(9))]
        assert writes == expected
        assert await received(peer, sum(map(len, expected))) == b"".join(expected)
    finally:
        transport.close()
        peer.close()
