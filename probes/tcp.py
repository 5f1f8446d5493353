"""``kind: tcp``: a TCP connect and nothing more."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from failsoft.probes.base import OK, Outcome, ProbeHooks


@dataclass(frozen=True, slots=True)
class TcpOptions:
    """``address: host:port``."""

    address: str

    def problems(self) -> list[tuple[str, str]]:
        """Config errors as (key, message)."""
        host, _, port = self.address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            return [("address", f"expected host:port like 127.0.0.1:5672, got {self.address!r}")]
        return []


class TcpProbe:
    """Opens a connection and closes it at once."""

    def __init__(self, options: TcpOptions, timeout: float, hooks: ProbeHooks) -> None:
        host, _, port = options.address.rpartition(":")
        self._host, self._port = host.strip("[]"), int(port)

    async def check(self) -> Outcome:
        """Connect; any error is raised for the scheduler to classify."""
        _, writer = await asyncio.open_connection(self._host, self._port)
        writer.transport.abort()  # no FIN handshake to wait for: the answer is already known
        return OK

    async def aclose(self) -> None:
        """Nothing is kept open."""
