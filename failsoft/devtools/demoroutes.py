"""The demo's fault switches over HTTP, for the status page's buttons: ``GET /_demo``, ``POST /_demo/<fault>``.

These routes exist only inside ``failsoft demo`` (it passes them to ``Daemon.start``); ``failsoft run`` never has
them. A ``POST`` must carry ``X-Failsoft-Demo: 1``: a custom header makes a browser ask first (CORS preflight),
and no origin is ever allowed here, so another web site open in the same browser cannot flip the switches.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from failsoft.daemon.api import JSON, error
from failsoft.daemon.statuspage import DEMO_ROUTE

if TYPE_CHECKING:
    from failsoft.devtools.demo import Demo

HEADER = "X-Failsoft-Demo"


@dataclass(frozen=True, slots=True)
class Fault:
    """One switch: the demo command it runs and what its button says in each position."""

    name: str
    start: str  # the button while the fault is off
    stop: str  # ... and while it is on
    effect: str  # what turning it on does
    undo: str  # what turning it off does


FAULTS = (
    Fault("db", "Crash PostgreSQL", "Restart PostgreSQL", "kill -9 → level cache_only", "start it again"),
    Fault("cache", "Hang Redis", "Resume Redis", "SIGSTOP → level degraded", "SIGCONT"),
    Fault("openai", "Break OpenAI", "Heal OpenAI", "HTTP 500s → active LLM anthropic", "answer normally again"),
    Fault("anthropic", "Break Anthropic", "Heal Anthropic", "connection resets (both broken → limited)",
          "answer normally again"),
    Fault("ratelimit", "Rate-limit OpenAI", "Lift the rate limit", "429, retry-after 10s → degraded",
          "answer normally again"),
)


def describe(demo: Demo) -> dict[str, Any]:
    """The switches and their positions, as the page draws them."""
    active = demo.active_faults()
    return {"faults": [
        {"name": f.name, "active": f.name in active, "action": f.stop if f.name in active else f.start,
         "effect": f.undo if f.name in active else f.effect}
        for f in FAULTS
    ]}


def routes(demo: Demo) -> list[web.RouteDef]:
    """The demo-only routes; the GET is named so that the status page knows to show its buttons."""
    lock = asyncio.Lock()  # one switch at a time: restarting PostgreSQL takes seconds and must not interleave

    async def show(request: web.Request) -> web.Response:
        """``GET /_demo``: the fault switches."""
        return web.Response(body=orjson.dumps(describe(demo)), content_type=JSON,
                            headers={"Cache-Control": "no-store"})

    async def flip(request: web.Request) -> web.Response:
        """``POST /_demo/<fault>``: turn a fault on, or off again. Answers what happened and the new positions."""
        if request.headers.get(HEADER) != "1":
            return error(403, "forbidden", f"demo switches need the header {HEADER}: 1")
        name = request.match_info["fault"]
        if name not in {f.name for f in FAULTS}:
            return error(404, "not_found", f"no demo fault {name[:40]!r}; try one of "
                         + ", ".join(f.name for f in FAULTS))
        async with lock:
            message = await demo.command(name)
        return web.Response(body=orjson.dumps({"message": message, **describe(demo)}), content_type=JSON,
                            headers={"Cache-Control": "no-store"})

    return [
        web.get("/_demo", show, name=DEMO_ROUTE),
        web.post("/_demo/{fault}", flip),
    ]
