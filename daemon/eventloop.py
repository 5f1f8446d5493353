"""Which event loop the daemon runs on: uvloop when it is installed (the ``uvloop`` extra), else asyncio's own.

uvloop answers ``GET /service-level`` and fans events out faster and at a lower CPU cost than the default loop
(figures in docs/performance.md); everything else works the same on both. ``FAILSOFT_EVENT_LOOP=asyncio`` forces
the default loop, ``uvloop`` requires uvloop (an error when it is missing), unset means uvloop when installed.
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
    if wanted == "asyncio" or not installed:
        return "asyncio", None
    import uvloop  # optional: imported only when it is installed and wanted

    return "uvloop", uvloop.new_event_loop
