"""``fleet.confirm_down: K``: a shared dependency is down for the fleet only once K pods' own probes failed.

When the prober's own probe finds a shared dependency down (it was not), the prober holds that result back and
asks the other pods to check once: a ``check`` entry in the target's results stream, fenced by the lease. Each
pod that follows the target probes it once itself (a fresh probe, closed right after) and votes ``down`` or
``up`` in a small hash next to the stream. The prober counts (``policies.quorum.down_confirmed``): K failures
confirm at once; when the window ends, the votes so far confirm only if no pod reached the dependency (a fleet
smaller than K must not keep a dead dependency up). Confirmed, the down result is applied and shared as usual;
not confirmed, the fleet keeps the last shared status, and the next failed probe asks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from failsoft.daemon.scheduler import DependencyScheduler
from failsoft.policies.model import DependencyStatus, DepState
from failsoft.policies.quorum import down_confirmed
from failsoft.probes.base import Verdict

if TYPE_CHECKING:
    from failsoft.daemon.fleet import Fleet
    from failsoft.daemon.fleetparts import Target

log = structlog.get_logger("failsoft.fleet")

VOTES_TTL_MS = 60_000  # a round's votes are kept this long (far past any window)
POLL = 0.05  # the prober re-counts the votes this often during a round


class DownConfirmation:
    """Both sides of confirm_down for one pod: the prober's rounds and a follower's single checks."""

    def __init__(self, fleet: Fleet, make_scheduler: Callable[[str], DependencyScheduler]) -> None:
        self.fleet = fleet
        self.wanted = fleet.settings.confirm_down
        self._make = make_scheduler
        self._rounds: dict[str, asyncio.Task[None]] = {}
        self._pending: dict[str, DependencyStatus] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def hold(self, target: Target, status: DependencyStatus) -> bool:
        """Whether the prober must hold ``status`` back until the fleet confirms it (and start a round if so)."""
        shown = self.fleet.last.get(target.label)
        newly_down = status.state is DepState.DOWN and (shown is None or shown.state is not DepState.DOWN)
        if self.wanted <= 1 or self.fleet.redis_ok is not True or not newly_down:
            self._cancel(target)
            return False
        self._pending[target.digest] = status
        running = self._rounds.get(target.digest)
        if running is None or running.done():
            self._rounds[target.digest] = asyncio.get_running_loop().create_task(
                self._round(target), name=f"fleet:confirm:{target.label}")
        return True

    def _cancel(self, target: Target) -> None:
        self._pending.pop(target.digest, None)
        task = self._rounds.pop(target.digest, None)
        if task is not None:
            task.cancel()

    def window(self, target: Target) -> float:
        """How long followers have to answer: their probe's deadline twice, plus time to read the request."""
        settings = self.fleet.config.dependencies[target.label].settings
        return 2 * settings.timeout + 0.5

    async def _round(self, target: Target) -> None:
        fleet = self.fleet
        client: Any = fleet.client
        request = secrets.token_hex(4)
        votes = f"{target.results_key}:votes:{request}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.window(target)
        try:
            await client.hset(votes, fleet.pod, "down")
            await client.pexpire(votes, VOTES_TTL_MS)
            fleet.share_entry(target, "check", request.encode())
            log.info("fleet_confirm_down_asked", dependency=target.label, wanted=self.wanted)
            while True:
                counted = list((await client.hgetall(votes)).values())
                failed = sum(v in (b"down", "down") for v in counted)
                succeeded = len(counted) - failed
                over = loop.time() >= deadline
                if down_confirmed(failed, succeeded, self.wanted, over):
                    pending = self._pending.pop(target.digest, None)
                    log.warning("fleet_down_confirmed", dependency=target.label, failed=failed, up=succeeded)
                    if pending is not None:
                        fleet.publish_local(target, pending)
                    return
                if over:
                    log.info("fleet_down_not_confirmed", dependency=target.label, failed=failed, up=succeeded,
                             wanted=self.wanted)
                    return
                await asyncio.sleep(POLL)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - Redis failed mid-round: the pod judges alone, as in fallback
            pending = self._pending.pop(target.digest, None)
            log.warning("fleet_confirm_failed", dependency=target.label, error=fleet.redact(repr(exc)))
            if pending is not None:
                fleet.publish_local(target, pending)

    def on_check(self, target: Target, request: str, token: str) -> None:
        """A follower was asked to check: probe once, vote, close the probe."""
        if token == self.fleet.token or self.fleet.probing(target):
            return
        task = asyncio.get_running_loop().create_task(self._check(target, request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check(self, target: Target, request: str) -> None:
        scheduler = self._make(target.label)
        try:
            outcome, _ = await scheduler.probe_once()
        finally:
            await scheduler.aclose()
        vote = "up" if outcome.verdict in (Verdict.OK, Verdict.DEGRADED) else "down"
        client: Any = self.fleet.client
        with contextlib.suppress(Exception):
            await client.hset(f"{target.results_key}:votes:{request}", self.fleet.pod, vote)
        log.info("fleet_confirm_down_checked", dependency=target.label, vote=vote)

    async def aclose(self) -> None:
        """Stop every round and check."""
        tasks = [*self._rounds.values(), *self._tasks]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
