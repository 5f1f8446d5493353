"""``GET /fleet``: the fleet as Redis sees it now (leader, probers, live pods), from any pod.

An adapter over ``Fleet``: it reads Redis on each request and keeps no state of its own.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

from failsoft.daemon.api import error, json_response

if TYPE_CHECKING:  # fleet mode's modules are imported only when a config has a fleet section (app.py)
    from failsoft.daemon.fleet import Fleet

POD_FIELDS = ("pod", "level", "seq", "boot", "updated_at")


def routes(fleet: Fleet | None, service: str) -> list[web.RouteDef]:
    """The ``/fleet`` route; without fleet mode it answers 404 saying so."""

    async def get_fleet(_: web.Request) -> web.Response:
        if fleet is None:
            return error(404, "fleet_off", "fleet mode is off: this daemon's config has no `fleet` section")
        from failsoft.daemon.fleetparts import REDIS_ERRORS, describe_error

        if fleet.client is None:
            return error(503, "starting", "the daemon is starting")
        try:
            leader, probers = await fleet.lease_holders()
            async with asyncio.timeout(fleet.request_timeout * 2):
                states = await fleet.pod_states()
        except asyncio.CancelledError:
            raise
        except REDIS_ERRORS as exc:
            return error(503, "fleet_redis_unreachable",
                         "the fleet's Redis does not answer; every pod probes everything itself meanwhile ("
                         + fleet.redact(describe_error(exc)) + ")")
        pods: list[dict[str, Any]] = [{k: s.get(k) for k in POD_FIELDS} for s in states]
        return json_response({"service": service, "leader": leader, "probers": probers, "pods": pods})

    return [web.get("/fleet", get_fleet)]
