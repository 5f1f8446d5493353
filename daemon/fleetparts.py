"""The pieces fleet mode is built from: the Redis client and its errors, a shared dependency target, and the
slot that runs a target's scheduler only while this pod probes it. Used by ``daemon.fleet`` and its neighbours.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from redis import exceptions as rex
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from failsoft.daemon.scheduler import DependencyScheduler
from failsoft.policies.lease import Lease
from failsoft.policies.model import DependencyStatus

STOP_WAIT = 0.5  # a cancelled probe task gets this long to unwind before its probe is closed anyway
SOCKET_TIMEOUT = 3.0  # above the results readers' XREAD BLOCK: a blocked read must not time out on its own

Client = Redis | RedisCluster
# What a failed Redis request raises. Besides redis-py's own errors and the socket's:
# - RedisClusterException, which is not a RedisError: a cluster none of whose nodes answers raises it, and "Redis
#   away" must mean fallback, never a dead task and a stopped daemon;
# - AttributeError from redis-py's asyncio cluster client when a connection is torn down under concurrent use (its
#   writer is already None: seen at a fleet's start on a 3-master cluster);
# - RuntimeError from a closed uvloop transport.
# Each except clause using this wraps Redis calls only, so these are Redis failures: the pod falls back to probing
# alone and tries again, instead of the fleet task dying and taking the daemon with it.
REDIS_ERRORS = (rex.RedisError, rex.RedisClusterException, OSError, TimeoutError, AttributeError, RuntimeError)


def redis_client(url: str, cluster: bool, name: str) -> Client:
    """A client with bounded socket waits and at most one immediate retry; a cluster client if asked."""
    # One retry: after a Redis restart, each pooled connection fails once ("closed by server") before it is
    # replaced; retrying at once on a fresh connection keeps that from looking like a new outage.
    common: dict[str, Any] = {"socket_timeout": SOCKET_TIMEOUT, "socket_connect_timeout": 1.0}
    if cluster:
        return RedisCluster.from_url(url, retry=Retry(NoBackoff(), 1), **common)
    return Redis.from_url(url, retry=Retry(NoBackoff(), 1), health_check_interval=0, client_name=name, **common)


def describe_error(exc: BaseException) -> str:
    """A short, secret-free (after redaction) description of a Redis failure, with a hint for the usual ones."""
    if isinstance(exc, rex.AuthenticationError | rex.AuthorizationError):
        return f"{type(exc).__name__}: the fleet Redis refused the credentials in fleet.redis ({exc})"
    if isinstance(exc, TimeoutError):
        return "TimeoutError: no answer in time"
    return f"{type(exc).__name__}: {exc or type(exc).__name__}"


@dataclass
class ProbeSlot:
    """One shared dependency's scheduler, running only while this pod probes it."""

    name: str
    make: Callable[[], DependencyScheduler]
    scheduler: DependencyScheduler | None = None
    task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Whether this pod probes the dependency now."""
        return self.task is not None

    def start(self, seed: DependencyStatus | None) -> None:
        """Probe from now on, continuing from ``seed`` (the last status known) rather than from scratch."""
        if self.task is not None:
            return
        self.scheduler = self.make()
        if seed is not None and seed.probes:
            self.scheduler.breaker.status = replace(seed, prober=None)
        self.task = asyncio.get_running_loop().create_task(self.scheduler.run(), name=f"probe:{self.name}")

    closing: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        """Stop probing and close the probe's connections (a follower keeps none)."""
        task, scheduler, self.task, self.scheduler = self.task, self.scheduler, None, None
        await _close(task, scheduler)

    def stop_soon(self) -> None:
        """``stop`` in the background: the lease task that calls it must never wait on a probe's goodbye."""
        task, scheduler, self.task, self.scheduler = self.task, self.scheduler, None, None
        if task is not None:
            self.closing = asyncio.get_running_loop().create_task(_close(task, scheduler), name=f"close:{self.name}")


async def _close(task: asyncio.Task[None] | None, scheduler: DependencyScheduler | None) -> None:
    if task is not None:
        task.cancel()
        await asyncio.wait({task}, timeout=STOP_WAIT)
    if scheduler is not None:
        await scheduler.aclose()


@dataclass(frozen=True, slots=True)
class SlotReports:
    """Where ``POST /report`` verdicts about a shared dependency go (``daemon.report.PassiveTarget``): the breaker
    of its scheduler while this pod is its prober (the new status is then shared with every pod, a rate limit's
    ``retry_at`` included). On a follower, whose view is the prober's, a rate limit is relayed to the prober
    (``relay``), so that every pod holds it; reported failures are not: one pod's app must not open the breaker
    of the whole fleet (a quorum of probes decides that, ``confirm_down``)."""

    slot: ProbeSlot
    relay: Callable[[float], bool] | None = None

    def reported_failure(self, reason: str, error: str) -> bool:
        """Open the prober's breaker (False on a follower, or when already open)."""
        scheduler = self.slot.scheduler
        return scheduler.reported_failure(reason, error) if scheduler is not None else False

    def reported_rate_limit(self, retry_after: float, error: str) -> bool:
        """Hold a rate limit on the prober, or relay it to the prober from a follower (False when nothing
        changed or the relay queue is full)."""
        scheduler = self.slot.scheduler
        if scheduler is not None:
            return scheduler.reported_rate_limit(retry_after, error)
        return self.relay(retry_after) if self.relay is not None else False


@dataclass
class Target:
    """A dependency target this pod probes or follows: its lease, its keys, and the local dependencies on it."""

    digest: str
    lease_key: str
    results_key: str
    names: list[str]
    lease: Lease = field(default_factory=Lease)
    slots: list[ProbeSlot] = field(default_factory=list)
    following: bool = False  # this pod applies the prober's results (it caught up with the newest one)

    @property
    def relay_key(self) -> str:
        """The stream through which followers relay the rate limits their apps report to the prober (the same
        hash tag as the results, so both live in one slot of a cluster)."""
        return f"{self.results_key}:relay"

    @property
    def label(self) -> str:
        """The name used in logs and metrics: the (first) local dependency on this target."""
        return self.names[0]


def text(value: Any) -> str | None:
    """A Redis reply (bytes or str) as text."""
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def pod_of(token: str | None) -> str | None:
    """The pod id of a holder token ``<pod>/<boot>``; None for anything else."""
    if token is None or "/" not in token:
        return None
    return token.rpartition("/")[0]
