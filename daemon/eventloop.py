"""Which event loop the daemon runs on: asyncio's own unless ``FAILSOFT_EVENT_LOOP=uvloop`` asks for uvloop.

uvloop answers ``GET /service-level`` and fans events out faster than the default loop (figures in
docs/performance.md), but it is opt-in: its transports raise ``RuntimeError`` where asyncio's raise
``ConnectionError``, and redis-py's cluster client lets that escape (seen in fleet mode on a Redis Cluster: the
fleet's publisher task died at start and took the daemon with it). Reliability first; speed when asked for.
``FAILSOFT_EVENT_LOOP=uvloop`` requires uvloop (an error when it is missing); unset or ``asyncio`` means asyncio.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Mapping

CHOICES = ("asyncio", "uvloop")


class EventLoopError(Exception):
    """``FAILSOFT_EVENT_LOOP`` names a loop that cannot be used; the message says what to do."""


def loop_factory(env: Mapping[str, str]) -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """(the loop's name, a factory for ``asyncio.Runner``; None means asyncio's default)."""
    wanted = env.get("FAILSOFT_EVENT_LOOP", "").strip().lower()
    if wanted not in ("", *CHOICES):
        raise EventLoopError(f"FAILSOFT_EVENT_LOOP must be asyncio or uvloop, got {wanted[:40]!r}")
    installed = importlib.util.find_spec("uvloop") is not None
    if wanted == "uvloop" and not installed:
        raise EventLoopError("FAILSOFT_EVENT_LOOP=uvloop but uvloop is not installed: pip install 'failsoft[uvloop]'")
    if wanted != "uvloop":
        return "asyncio", None
    import uvloop  # optional: imported only when it is installed and wanted

    return "uvloop", uvloop.new_event_loop
