"""Issue 4 fills this in: ``/service-level/events`` (SSE), ``/history`` and ``/override``."""

from __future__ import annotations

from aiohttp import web


def routes() -> list[web.RouteDef]:
    """The streaming, history and admin routes."""
    return []
