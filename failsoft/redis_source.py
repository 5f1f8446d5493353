"""The client's Redis source: the State key and the event channel the daemon writes with ``publish.redis``.

For apps that cannot reach the sidecar's port (another pod, a job, a language without an SSE client nearby) but
can reach the Redis the sidecar publishes to. redis-py is imported only when this source is used
(``pip install 'failsoft[redis]'``), so ``import failsoft.client`` stays light.

Key names follow the daemon's (P = prefix, S = service): ``P:S:state`` and ``P:S:events``. The channel is
subscribed *before* the key is read, so no event published after that read is missed; the gap rules (a seq
skipped or another boot -> read the key again) live in the client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any


class StateMissing(Exception):
    """The State key is absent: the sidecar is gone (the key expires after 3 heartbeats) or publishes elsewhere."""


class RedisSource:
    """``P:S:state`` and ``P:S:events`` on one Redis server."""

    def __init__(self, url: str, base: str) -> None:
        self.url = url
        self.state_key = f"{base}:state"
        self.channel = f"{base}:events"
        self._client: Any = None
        self._timeout = 5.0

    @contextlib.asynccontextmanager
    async def connect(self, connect_timeout: float) -> AsyncIterator[AsyncIterator[bytes]]:
        """Subscribe to the channel (confirmed), then yield an iterator of the JSON of each event published."""
        import redis.asyncio as aioredis  # only apps that use this source need redis-py

        # No client retries: a lost connection ends this source, and the client reconnects with its own backoff.
        timeout = self._timeout = connect_timeout
        # No socket timeout: the channel is quiet while nothing changes. Reads of the key have their own deadline,
        # so a hung Redis is noticed by the client's refresher.
        client: Any = aioredis.Redis.from_url(self.url, socket_connect_timeout=timeout, retry_on_timeout=False,
                                              retry=None)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            while (msg := await pubsub.get_message(timeout=timeout)) is None or msg["type"] != "subscribe":
                if msg is None:
                    raise TimeoutError(f"no confirmation of SUBSCRIBE {self.channel} within {timeout:g}s")
            self._client = client
            yield self._messages(pubsub)
        finally:
            self._client = None
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            with contextlib.suppress(Exception):
                await client.aclose()

    @staticmethod
    async def _messages(pubsub: Any) -> AsyncIterator[bytes]:
        # Blocking reads without a deadline: the channel is quiet while nothing changes; liveness is the client's
        # refresher, which reads the key before the State's valid_until runs out.
        while True:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            if msg is not None and msg.get("type") == "message":
                yield bytes(msg["data"])

    async def state(self) -> bytes:
        """The State JSON from the key; StateMissing when it is absent."""
        if self._client is None:
            raise StateMissing("not connected to Redis")
        async with asyncio.timeout(self._timeout):
            raw = await self._client.get(self.state_key)
        if raw is None:
            raise StateMissing(f"{self.state_key} is missing: the sidecar is gone or does not publish to this Redis")
        return bytes(raw)
