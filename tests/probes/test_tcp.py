"""failsoft.probes.tcp: a TCP connect to a real listening socket, and to a closed port."""

from __future__ import annotations

import asyncio
import socket

import pytest
from support import until

from failsoft.devtools.localservers import free_port
from failsoft.policies.classify import exception_reason
from failsoft.probes.base import OK, ProbeHooks
from failsoft.probes.tcp import TcpOptions, TcpProbe


async def test_connect_to_a_listening_port_is_ok() -> None:
    """A server that accepts the connection is healthy; the probe leaves no connection open behind it: the
    server (which never closes first) sees the probe close each connection it made."""
    accepted = 0
    closed_by_probe = 0
    writers: list[asyncio.StreamWriter] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted, closed_by_probe
        accepted += 1
        writers.append(writer)
        if await reader.read() == b"":  # EOF: the probe's side closed
            closed_by_probe += 1

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        probe = TcpProbe(TcpOptions(f"127.0.0.1:{port}"), 1.0, ProbeHooks())
        for _ in range(3):
            assert await probe.check() == OK
        await until(lambda: accepted == 3 and closed_by_probe == 3, what="every probe connection closed")
        await probe.aclose()
    finally:
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()


async def test_connect_to_a_closed_port_is_connection_refused() -> None:
    """Nothing listening: the connect error is classified as connection_refused."""
    probe = TcpProbe(TcpOptions(f"127.0.0.1:{free_port()}"), 1.0, ProbeHooks())
    with pytest.raises(OSError) as caught:
        await probe.check()
    assert exception_reason(caught.value) == ("connection_refused", False)


async def test_ipv6_literal_addresses() -> None:
    """``[::1]:port`` works when the host has IPv6 loopback."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server = await asyncio.start_server(lambda _r, w: w.close(), "::1", 0)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    port = server.sockets[0].getsockname()[1]
    try:
        assert await TcpProbe(TcpOptions(f"[::1]:{port}"), 1.0, ProbeHooks()).check() == OK
    finally:
        server.close()
        await server.wait_closed()
