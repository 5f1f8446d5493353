"""Fleet mode, the Redis side: leases, shared probing and the fallback to local probing.

One ``Fleet`` per daemon. Its lease task asks ``policies.lease`` what to do with each lease (one per shared
dependency *target*, one for the service's publication leader) and does it with the scripts in ``fleetkeys``.
From the leases follows who probes what:

- the holder of a target's lease probes it (its schedulers run) and shares every result through the target's
  results stream, fenced by the lease;
- every other pod reads that stream and puts the results into the owner's inbox, the same path as a local probe
  outcome (one writer); its schedulers for that target are stopped and their probes closed (no connection);
- when Redis cannot be reached, every pod probes everything itself (``fallback``), loudly, and goes back to
  sharing once Redis answers again.

Only lease TTLs and the pod's own monotonic clock are used for lease decisions, never a wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson
import structlog

from failsoft.daemon.clock import Clock
from failsoft.daemon.config import Config
from failsoft.daemon.fleetconfirm import DownConfirmation
from failsoft.daemon.fleetkeys import (
    ACQUIRE,
    RELAY_MAXLEN,
    RELEASE,
    RENEW,
    RESULTS_MAXLEN,
    SHARE,
    service_keys,
    status_from_wire,
    status_to_wire,
    target_digest,
    target_keys,
)
from failsoft.daemon.fleetparts import (
    REDIS_ERRORS,
    Client,
    ProbeSlot,
    SlotReports,
    Target,
    describe_error,
    pod_of,
    redis_client,
    text,
)
from failsoft.daemon.redact import Redactor, url_password
from failsoft.daemon.scheduler import DependencyScheduler
from failsoft.policies import lease as leases
from failsoft.policies.lease import Action, Change, Lease, Reply, ReplyKind
from failsoft.policies.model import DependencyStatus

log = structlog.get_logger("failsoft.fleet")

LEADER = "leader"  # the lease name of the publication leader (dependency names label the others)
READ_BLOCK_MS = 1000  # a results reader wakes at least this often
READ_RETRY_MIN, READ_RETRY_MAX = 0.1, 2.0
CLOSE_WAIT = 0.5  # at shutdown, releasing the leases may take this long (a successor then need not wait)
MAX_SLEEP = 0.5  # the lease task looks at its leases at least this often
NEWEST = 10  # entries read back to find the newest result (confirm_down's requests sit between results)
RELAY_QUEUE = 256  # rate limits waiting to be relayed to probers; beyond it one is dropped (a later one follows)
MAX_RELAYED_WAIT = 86_400.0  # a relayed retry_after above a day is garbage in Redis, not a rate limit

SchedulerFactory = Callable[[str, Callable[[DependencyStatus], None]], DependencyScheduler]


class Fleet:
    """Leases, shared probing and fallback for one daemon (see the module docstring)."""

    def __init__(self, config: Config, boot: str, report: Callable[[DependencyStatus], None], clock: Clock,
                 make_scheduler: SchedulerFactory, *, rng: random.Random | None = None) -> None:
        assert config.fleet is not None
        self.settings = config.fleet
        self.config = config
        self.pod = config.pod
        self.boot = boot
        self.token = f"{self.pod}/{boot}"
        self.keys = service_keys(self.settings.prefix, config.service, self.settings.cluster)
        self.clock = clock
        self._report = report
        self._rng = rng or random.Random()  # noqa: S311 - spreading attempts, not cryptography
        self._redact = Redactor([*config.secrets, *([pw] if (pw := url_password(self.settings.redis_url)) else [])])
        self.ttl = self.settings.lease
        self._ttl_ms = max(1, round(self.ttl * 1000))
        # When Redis counts as unreachable (every pod then probes alone): not on a merely busy machine (half a
        # second at least), and soon enough to matter. Lease safety does not depend on it: a holder acts only
        # until sent_at + 0.9 x lease, however long its requests take.
        self.request_timeout = max(0.5, min(1.0, self.ttl / 4))
        self.leader = Lease()
        self.leader_term = 0  # how many times this pod became the leader (a new term publishes a resync first)
        self.targets: dict[str, Target] = {}
        self.by_dependency: dict[str, Target] = {}
        for name in self.settings.shared:
            dep = config.dependencies[name]
            digest = target_digest(dep)
            target = self.targets.get(digest)
            if target is None:
                keys = target_keys(self.settings.prefix, digest, self.settings.cluster)
                target = self.targets[digest] = Target(digest, keys.lease, keys.results, [])
            target.names.append(name)
            if not target.slots:  # two dependencies on one target: one probe, its results applied to both
                target.slots.append(ProbeSlot(name, functools.partial(make_scheduler, name, self.on_local_result)))
            self.by_dependency[name] = target
        self.last: dict[str, DependencyStatus] = {}
        self.redis_ok: bool | None = None  # None until the first request
        self.on_lease_change: list[Callable[[str, Change, str | None], None]] = []
        self.on_result_applied: Callable[[str], None] = lambda _: None
        self.on_fallback: Callable[[], None] = lambda: None
        self._outbox: asyncio.Queue[tuple[Target, str, bytes]] = asyncio.Queue()
        self._relay_out: asyncio.Queue[tuple[Target, float]] = asyncio.Queue(maxsize=RELAY_QUEUE)
        self.confirm = DownConfirmation(self, lambda name: make_scheduler(name, lambda _: None))
        self._tasks: list[asyncio.Task[None]] = []
        self.client: Client | None = None
        self._scripts: dict[str, Any] = {}

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> dict[str, asyncio.Task[None]]:
        """Connect lazily and start the lease task, the sharer and one results reader per target."""
        self.client = redis_client(self.settings.redis_url, self.settings.cluster, "failsoft-fleet")
        for name, script in (("acquire", ACQUIRE), ("renew", RENEW), ("release", RELEASE), ("share", SHARE)):
            self._scripts[name] = self.client.register_script(script)
        now = self.clock.monotonic()
        self.leader = leases.start(now, self.ttl, self._rng.random())
        for target in self.targets.values():
            target.lease = leases.start(now, self.ttl, self._rng.random())
        loop = asyncio.get_running_loop()
        tasks = {"fleet:leases": loop.create_task(self._lease_loop(), name="fleet:leases"),
                 "fleet:share": loop.create_task(self._share_loop(), name="fleet:share"),
                 "fleet:relay": loop.create_task(self._relay_loop(), name="fleet:relay")}
        for target in self.targets.values():
            tasks[f"fleet:follow:{target.label}"] = loop.create_task(self._follow(target),
                                                                     name=f"fleet:follow:{target.label}")
            tasks[f"fleet:relayed:{target.label}"] = loop.create_task(self._relayed(target),
                                                                      name=f"fleet:relayed:{target.label}")
        self._tasks = list(tasks.values())
        return tasks

    async def aclose(self) -> None:
        """Stop the probes, give back the leases we hold (so a successor need not wait for them to expire)."""
        for task in self._tasks:
            task.cancel()
        await self.confirm.aclose()
        slots = [slot for t in self.targets.values() for slot in t.slots]
        await asyncio.gather(*(slot.stop() for slot in slots),
                             *(slot.closing for slot in slots if slot.closing is not None), return_exceptions=True)
        if self.client is None:
            return
        now = self.clock.monotonic()
        held = [t.lease_key for t in self.targets.values() if t.lease.holding(now)]
        if self.leader.holding(now):
            held.append(self.keys.leader)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_WAIT):
                for key in held:
                    await self._scripts["release"](keys=[key], args=[self.token])
                # Leave the fleet now rather than 3 heartbeats from now (and free our pod id for a restart).
                if await self._scripts["release"](keys=[self.keys.claim(self.pod)], args=[self.token]):
                    await self.client.delete(self.keys.pod(self.pod))
                    await self.client.srem(self.keys.pods, self.pod)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.aclose(), CLOSE_WAIT)

    # -- what others ask -----------------------------------------------------------------------------------

    def leading(self) -> bool:
        """Whether this pod is the publication leader right now."""
        return self.leader.holding(self.clock.monotonic())

    def probing(self, target: Target) -> bool:
        """Whether this pod probes ``target`` itself now: as its prober, or because Redis is away."""
        # Before the first answer (None) nothing is known yet: wait for it rather than probe a shared dependency.
        return target.lease.holding(self.clock.monotonic()) or self.redis_ok is False

    def redact(self, text: str) -> str:
        """``text`` with every secret of the config and of the fleet Redis URL masked."""
        return self._redact(text)

    def passive_targets(self) -> dict[str, SlotReports]:
        """For ``POST /report``: each shared dependency's verdicts go to its scheduler while this pod probes it."""
        return {name: SlotReports(target.slots[0], functools.partial(self.relay_rate_limit, target))
                for name, target in self.by_dependency.items()}

    def relay_rate_limit(self, target: Target, retry_after: float) -> bool:
        """A follower's app reported a rate limit of a shared dependency: queue it for the prober (False when the
        queue is full; the reports that filled it say the same)."""
        try:
            self._relay_out.put_nowait((target, retry_after))
        except asyncio.QueueFull:
            return False
        return True

    def rename(self, pod: str) -> None:
        """Use another pod id (a live process uses ours); leases held under the old token are given up."""
        log.error("fleet_pod_renamed", previous=self.pod, pod=pod)
        self.pod, self.token = pod, f"{pod}/{self.boot}"

    # -- local results -------------------------------------------------------------------------------------

    def on_own_result(self, status: DependencyStatus) -> None:
        """A dependency this pod always probes itself (not shared) reported: apply it, naming this pod."""
        self._report(replace(status, prober=self.pod))

    def on_local_result(self, status: DependencyStatus) -> None:
        """A shared dependency's scheduler reported: apply it here and, as its prober, share it."""
        status = replace(status, prober=self.pod)
        target = self.by_dependency[status.name]
        if target.lease.holding(self.clock.monotonic()) and self.confirm.hold(target, status):
            return  # confirm_down: held back until enough pods agree
        self.publish_local(target, status)

    def publish_local(self, target: Target, status: DependencyStatus) -> None:
        """Apply this pod's own result for ``target`` and, as its prober, share it."""
        for name in target.names:
            self.last[name] = replace(status, name=name)
            self._report(self.last[name])
        if target.lease.holding(self.clock.monotonic()):
            self._outbox.put_nowait((target, "result", status_to_wire(status, self.pod, self.token)))

    def share_entry(self, target: Target, field_name: str, body: bytes) -> None:
        """Append to the target's stream, fenced by its lease (queued behind the results, in order)."""
        self._outbox.put_nowait((target, field_name, body))

    async def _share_loop(self) -> None:
        """Write shared results in order; one lost while Redis is away is not retried (the next one follows)."""
        while True:
            target, field_name, body = await self._outbox.get()
            with contextlib.suppress(*REDIS_ERRORS):
                async with asyncio.timeout(self.request_timeout):
                    await self._scripts["share"](keys=[target.lease_key, target.results_key],
                                                 args=[self.token, RESULTS_MAXLEN, body, field_name])

    async def _relay_loop(self) -> None:
        """Append the rate limits reported on this pod to their targets' relay streams (not fenced: any pod may
        relay; a relay lost while Redis is away does not matter, as every pod then probes, and holds, itself)."""
        client: Any = self.client
        assert client is not None
        while True:
            target, retry_after = await self._relay_out.get()
            with contextlib.suppress(*REDIS_ERRORS):
                async with asyncio.timeout(self.request_timeout):
                    await client.xadd(target.relay_key, {"retry_after": f"{retry_after:.3f}", "pod": self.pod},
                                      maxlen=RELAY_MAXLEN, approximate=True)

    async def _relayed(self, target: Target) -> None:
        """Read the rate limits that followers relay for ``target`` and, while this pod probes it, hold them on its
        breaker: the held status (with its ``retry_at``) then reaches every pod as the prober's result."""
        client: Any = self.client
        assert client is not None
        last_id: Any = None
        delay = READ_RETRY_MIN
        while True:
            try:
                if last_id is None:  # only what is relayed from now on: an old entry would extend a past limit
                    newest = await client.xrevrange(target.relay_key, count=1)
                    last_id = newest[0][0] if newest else "0-0"
                reply = await client.xread({target.relay_key: last_id}, count=RELAY_MAXLEN, block=READ_BLOCK_MS)
                delay = READ_RETRY_MIN
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS:
                last_id = None
                await asyncio.sleep(delay * (0.5 + self._rng.random() / 2))
                delay = min(READ_RETRY_MAX, delay * 2)
                continue
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    last_id = entry_id
                    self._hold_relayed(target, fields)

    def _hold_relayed(self, target: Target, fields: dict[Any, Any]) -> None:
        scheduler = target.slots[0].scheduler
        if scheduler is None or not target.lease.holding(self.clock.monotonic()):
            return  # not the prober: the prober holds it and shares the result
        try:
            wait = float(text(fields.get(b"retry_after")) or "nan")
        except ValueError:
            wait = float("nan")
        if not 0.0 < wait <= MAX_RELAYED_WAIT:  # NaN fails both comparisons
            log.warning("fleet_relay_unreadable", dependency=target.label)
            return
        pod = (text(fields.get(b"pod")) or "?")[:64]
        scheduler.reported_rate_limit(wait, f"the app on pod {pod} reported a rate limit; retry after {wait:g}s")


    # -- remote results ------------------------------------------------------------------------------------

    async def _follow(self, target: Target) -> None:
        """Read the target's results stream and apply what its prober found, while this pod does not probe it."""
        client: Any = self.client  # redis-py's stream replies are loosely typed
        assert client is not None
        last_id: Any = None
        delay = READ_RETRY_MIN
        while True:
            try:
                if last_id is None:
                    newest = await client.xrevrange(target.results_key, count=NEWEST)
                    last_id = newest[0][0] if newest else "0-0"
                    self._apply_newest(target, newest)
                reply = await client.xread({target.results_key: last_id}, count=RESULTS_MAXLEN,
                                                block=READ_BLOCK_MS)
                delay = READ_RETRY_MIN
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS:
                last_id = None  # after a reconnect, start again from the newest result
                await asyncio.sleep(delay * (0.5 + self._rng.random() / 2))
                delay = min(READ_RETRY_MAX, delay * 2)
                continue
            for _, entries in reply or []:
                results = []
                for entry_id, fields in entries:
                    last_id = entry_id
                    check = fields.get(b"check")
                    if check is not None:
                        self.confirm.on_check(target, text(check) or "", text(fields.get(b"token")) or "")
                    else:
                        results.append(fields)
                if results:
                    self._apply(target, results[-1])  # only the newest result matters

    def _apply(self, target: Target, fields: dict[Any, Any]) -> None:
        raw = fields.get(b"result", fields.get("result"))
        if raw is None or self.probing(target):
            return
        for name in target.names:
            result = status_from_wire(raw, name)
            if result is None:
                log.warning("fleet_result_unreadable", dependency=name)
                return
            if result.token == self.token or result.status.kind != self.config.dependencies[name].kind:
                return
            status = replace(result.status, last_error=self._redact(result.status.last_error or "") or None)
            self.last[name] = status
            self._report(status)
            self.on_result_applied(name)

    # -- leases --------------------------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        """Acquire, renew or step down each lease when due; then start or stop the probes that follow from it."""
        while True:
            for target in self.targets.values():
                target.lease = await self._drive(target.label, target.lease, target.lease_key)
            self.leader = await self._drive(LEADER, self.leader, self.keys.leader)
            await self._reconcile()
            now = self.clock.monotonic()
            times = [lease.next_try for lease in (self.leader, *(t.lease for t in self.targets.values()))]
            times += [lease.held_until for lease in (self.leader, *(t.lease for t in self.targets.values()))
                      if lease.held_until is not None]
            await asyncio.sleep(min(MAX_SLEEP, max(0.01, min(times) - now)))

    async def _drive(self, name: str, lease: Lease, key: str) -> Lease:
        now = self.clock.monotonic()
        action = leases.decide(lease, now)
        change: Change | None = None
        if action is Action.WAIT:
            return lease
        if action is Action.STEP_DOWN:
            lease, change = leases.step_down(lease, now, self.ttl, self._rng.random())
        else:
            sent = self.clock.monotonic()
            reply = await self._request(action, key)
            lease, change = leases.observe(lease, self.token, reply, sent_at=sent, now=self.clock.monotonic(),
                                           ttl=self.ttl, spread=self._rng.random())
        if change is Change.ACQUIRED and name == LEADER:
            self.leader_term += 1
        if change is not None:
            holder = lease.holder.rpartition("/")[0] if lease.holder else None
            fields = {"lease": name, "change": str(change), "holder": holder, "pod": self.pod}
            (log.warning if change in (Change.LOST, Change.STEPPED_DOWN) else log.info)("fleet_lease", **fields)
            for callback in self.on_lease_change:
                callback(name, change, holder)
        return lease

    async def _request(self, action: Action, key: str) -> Reply:
        try:
            async with asyncio.timeout(self.request_timeout):
                if action is Action.ACQUIRE:
                    ok, holder, pttl = await self._scripts["acquire"](keys=[key], args=[self.token, self._ttl_ms])
                    reply = Reply(ReplyKind.ACQUIRED) if int(ok) == 1 else Reply(
                        ReplyKind.HELD_BY, text(holder), int(pttl))
                else:
                    renewed = await self._scripts["renew"](keys=[key], args=[self.token, self._ttl_ms])
                    reply = Reply(ReplyKind.ACQUIRED if int(renewed) == 1 else ReplyKind.LOST)
        except asyncio.CancelledError:
            raise
        except REDIS_ERRORS as exc:
            self.redis_state(False, exc)
            return Reply(ReplyKind.UNREACHABLE)
        self.redis_state(True)
        return reply

    def redis_state(self, ok: bool, exc: BaseException | None = None) -> None:
        """Record whether the fleet Redis answers; one log line (and a metric) per change, not per request."""
        if ok == self.redis_ok:
            return
        previous, self.redis_ok = self.redis_ok, ok
        if not ok:
            log.error("fleet_redis_unreachable", error=self._redact(describe_error(exc)) if exc else None,
                      action="probing every dependency locally until it answers again")
            self.on_fallback()
        elif previous is False:
            log.info("fleet_redis_back", action="sharing probes again")

    async def _reconcile(self) -> None:
        """Run the schedulers this pod should run now, stop (and close) the others."""
        for target in self.targets.values():
            local = self.probing(target)
            for slot in target.slots:
                if local and not slot.running:
                    slot.start(self.last.get(slot.name))
                elif not local and slot.running:
                    slot.stop_soon()
            if not local and not target.following:
                # Just became a follower (or started as one): take the newest result now rather than waiting for
                # the next one, which may be a whole (long) interval away.
                target.following = await self._catch_up(target)
            elif local:
                target.following = False

    async def _catch_up(self, target: Target) -> bool:
        assert self.client is not None
        try:
            async with asyncio.timeout(self.request_timeout):
                newest: Any = await self.client.xrevrange(target.results_key, count=NEWEST)
        except asyncio.CancelledError:
            raise
        except REDIS_ERRORS:
            return False
        self._apply_newest(target, newest)
        return True

    def _apply_newest(self, target: Target, newest_first: list[Any]) -> None:
        for _, fields in newest_first:
            if b"result" in fields:
                self._apply(target, fields)
                return

    # -- GET /fleet and the leader's count ---------------------------------------------------------------------

    async def pod_states(self) -> list[dict[str, Any]]:
        """The States of the live pods (a pod key expires 3 heartbeats after its last write); prunes the dead."""
        client, keys = self.client, self.keys
        assert client is not None
        members = sorted(t for m in await client.smembers(keys.pods) if (t := text(m)))
        if not members:
            return []
        bodies = await client.mget([keys.pod(m) for m in members])
        gone = [m for m, b in zip(members, bodies, strict=True) if b is None]
        if gone:
            await client.srem(keys.pods, *gone)
        states = []
        for member, body in zip(members, bodies, strict=True):
            with contextlib.suppress(ValueError):
                state = orjson.loads(body) if body is not None else None
                if isinstance(state, dict):
                    states.append({**state, "pod": member})
        return states

    async def lease_holders(self) -> tuple[str | None, dict[str, str | None]]:
        """(leader pod, {shared dependency: prober pod}) as Redis says now."""
        assert self.client is not None
        async with asyncio.timeout(self.request_timeout * 2):
            leader = text(await self.client.get(self.keys.leader))
            probers = {}
            for name, target in self.by_dependency.items():
                probers[name] = pod_of(text(await self.client.get(target.lease_key)))
        return pod_of(leader), probers

