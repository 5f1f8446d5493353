"""The one shape every probe has, and the outcome it reports.

A probe is built from a dependency's config, answers ``await check()`` with an :class:`Outcome` or raises,
and releases what it holds in ``await aclose()``. Deadlines, timing and turning exceptions into outcomes
happen once, in the scheduler (``daemon.scheduler``), never inside a probe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp

# The outcome types are plain data that the pure policies also use; they live there and are re-exported here.
from failsoft.policies.model import OK, Outcome, Verdict, degraded


class ProbeFailure(Exception):
    """Raised by a probe that knows exactly why it failed (a code from the classification tables)."""

    def __init__(self, reason: str, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.fatal = fatal


@dataclass(frozen=True, slots=True)
class ProbeHooks:
    """Callbacks the scheduler hands to a probe.

    ``connection_lost`` is called when a connection the probe keeps open drops between checks (the server
    crashed or closed it), so that the scheduler probes again at once instead of at the next interval.
    """

    connection_lost: Callable[[], None] = lambda: None
    # One client session (one connection pool) shared by the HTTP-based probes of the process; a probe that is
    # given one never closes it: its owner does.
    http_session: aiohttp.ClientSession | None = None


class Probe(Protocol):
    """A dependency check. ``check`` may be cancelled at the deadline and must leave the probe reusable."""

    async def check(self) -> Outcome:
        """Talk to the dependency once and say how it answered."""
        ...

    async def aclose(self) -> None:
        """Release connections; must not hang (terminate, do not wait for a graceful goodbye)."""
        ...


__all__ = ["OK", "Outcome", "Probe", "ProbeFailure", "ProbeHooks", "Verdict", "degraded"]
