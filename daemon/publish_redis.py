"""Issue 4 fills this in: the State key, the pub/sub channel and the stream in Redis."""

from __future__ import annotations

from daemon.config import PublishSettings
from daemon.hub import Hub
from daemon.metrics import Metrics


class RedisPublisher:
    """Publishes every State and event to Redis without ever blocking the daemon."""

    def __init__(self, settings: PublishSettings, service: str, hub: Hub, metrics: Metrics) -> None:
        self.settings = settings
        self.service = service
        self.hub = hub
        self.metrics = metrics

    async def start(self) -> None:
        """Connect in the background and start following the hub."""

    async def aclose(self) -> None:
        """Flush what can be flushed quickly, then close the connection."""
