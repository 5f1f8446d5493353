"""Metrics (issue 5 fills this in): OpenTelemetry SDK instruments exposed at /metrics."""

from __future__ import annotations

from aiohttp import web

from daemon.config import Config
from daemon.hub import Hub, Published, PublishedEvent
from probes.base import Outcome


class Metrics:
    """Every figure the daemon exports. Called from the scheduler, the hub and the publishers."""

    def __init__(self, config: Config, hub: Hub) -> None:
        self.config = config
        self.hub = hub

    def on_probe(self, dependency: str, outcome: Outcome, latency: float) -> None:
        """One probe finished (before the breaker judged it: a slow OK is still ``Verdict.OK`` here)."""

    def observe(self, published: Published, events: list[PublishedEvent]) -> None:
        """A hub listener: every new State and its events."""

    def publish_failed(self, sink: str) -> None:
        """A publish to ``sink`` (redis) failed."""

    def routes(self) -> list[web.RouteDef]:
        """``GET /metrics``."""
        return []

    async def aclose(self) -> None:
        """Stop background work (event-loop lag sampling, exporters)."""
