"""Fleet mode's publication: every pod's own key, and the leader's one coherent State, channel and stream.

A hub listener (synchronous) keeps the newest own State and queues own events; one writer task does the IO:

- every pod, on every change and heartbeat, writes its State to ``P:S:pod:<pod>`` (expiring after 3 heartbeats)
  through the POD script, which also claims the pod id and returns the fleet seq (remembered as a floor);
- the leader (``Fleet.leading()``) then reads the live pods' levels, takes the most common one (ties: the worse)
  as the fleet's level, and writes ``P:S:state`` plus the events through the PUBLISH script, which checks the
  leader lease and numbers the events with the fleet seq in the same step. A new leader first publishes a
  ``resync``; the leader's own ``level_changed`` events are replaced by the fleet's.

Without ``publish`` in the config only the pod keys are written (the leader lease still exists for ``/fleet``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import orjson
import structlog

from failsoft.daemon.clock import Clock, iso
from failsoft.daemon.config import Config
from failsoft.daemon.fleet import LEADER, Fleet
from failsoft.daemon.fleetkeys import POD, PUBLISH, with_seq_placeholder
from failsoft.daemon.fleetparts import REDIS_ERRORS, describe_error
from failsoft.daemon.hub import Hub, Published, PublishedEvent
from failsoft.daemon.publish_redis import BACKLOG, STREAM_MAXLEN
from failsoft.daemon.state import SCHEMA_VERSION
from failsoft.policies.lease import Change
from failsoft.policies.quorum import fleet_level

log = structlog.get_logger("failsoft.fleet")

POLL = 1.0  # the leader re-reads the pods' levels at least this often (and on each own change)


class FleetPublisher:
    """Writes this pod's key and, while leading, the fleet's publication (see the module docstring)."""

    def __init__(self, config: Config, fleet: Fleet, hub: Hub, clock: Clock) -> None:
        self.config = config
        self.fleet = fleet
        self.hub = hub
        self.clock = clock
        self.heartbeat = config.publish.heartbeat if config.publish else 5.0
        self.publishing = config.publish is not None
        self._pod_ttl_ms = max(1, round(3 * self.heartbeat * 1000))
        self._state_ttl_ms = self._pod_ttl_ms
        self._latest: Published | None = None
        self._backlog: deque[PublishedEvent] = deque(maxlen=BACKLOG)
        self._wake = asyncio.Event()
        self.floor = 0  # the highest fleet seq seen: the seq never goes back, even if Redis lost its key
        self._leading = False  # we published as leader last time (a new leader starts with a resync)
        self._term = 0  # the leader term we published in
        self._level: str | None = None  # the fleet level last published, and since when
        self._since: str | None = None
        self._conflict: tuple[str, float] | None = None  # (other token, first seen) for our pod id
        self._pod_seq: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._scripts: dict[str, Any] = {}

    def on_publish(self, published: Published, events: list[PublishedEvent]) -> None:
        """Hub listener: keep the newest State and queue the events; wake the writer on a change."""
        first = self._latest is None
        self._latest = published
        self._backlog.extend(events)
        if events or first:
            self._wake.set()

    def start(self) -> asyncio.Task[None]:
        """Follow the hub and start the writer task."""
        assert self.fleet.client is not None
        self._scripts = {"pod": self.fleet.client.register_script(POD),
                         "publish": self.fleet.client.register_script(PUBLISH)}
        self.hub.add_listener(self.on_publish)
        self.fleet.on_lease_change.append(self._lease_changed)
        if self.hub.current is not None:
            self._latest = self.hub.current
        self._task = asyncio.get_running_loop().create_task(self._run(), name="fleet:publish")
        return self._task

    def _lease_changed(self, lease: str, change: Change, _holder: str | None) -> None:
        if lease == LEADER and change is Change.ACQUIRED:
            self._wake.set()  # publish as the new leader now, not at the next heartbeat

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_beat = loop.time()
        while True:
            period = min(self.heartbeat, POLL) if self.fleet.leading() else self.heartbeat
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, min(next_beat, loop.time() + period) - loop.time())):
                    await self._wake.wait()
            self._wake.clear()
            if self._latest is None:
                continue
            changed = self._latest.seq != self._pod_seq
            if changed or loop.time() >= next_beat:
                await self._write_pod(self._latest)
                next_beat = loop.time() + self.heartbeat
            if self.publishing and self.fleet.leading():
                await self._publish(self._latest)
            else:
                self._leading = False
                self._backlog.clear()  # the leader publishes the fleet's events, not us

    # -- the pod key -----------------------------------------------------------------------------------------

    async def _write_pod(self, latest: Published) -> None:
        fleet, keys = self.fleet, self.fleet.keys
        body = orjson.dumps({**orjson.loads(latest.body), "pod": fleet.pod})
        try:
            async with asyncio.timeout(fleet.request_timeout):
                ok, other, seq = await self._scripts["pod"](
                    keys=[keys.claim(fleet.pod), keys.pod(fleet.pod), keys.pods, keys.seq],
                    args=[fleet.token, self._pod_ttl_ms, body, fleet.pod])
        except asyncio.CancelledError:
            raise
        except REDIS_ERRORS as exc:
            fleet.redis_state(False, exc)
            return
        fleet.redis_state(True)
        self.floor = max(self.floor, int(seq))
        if int(ok) == 1:
            self._conflict = None
            self._pod_seq = latest.seq
            return
        self._pod_id_taken(_text(other))

    def _pod_id_taken(self, other: str) -> None:
        """Another process claims our pod id. A dead earlier run of this pod (a container restart) stops renewing
        and its claim expires within 3 heartbeats; a claim still renewed by the same process after that is a live
        duplicate: we rename ourselves ``<pod>-<boot>`` and say so, rather than refusing to start (a sidecar that
        exits would hold the app pod back over a naming mistake, while a renamed one keeps every guarantee)."""
        now = self.clock.monotonic()
        if self._conflict is None or self._conflict[0] != other:
            self._conflict = (other, now)
            log.warning("fleet_pod_id_in_use", pod=self.fleet.pod, by=other,
                        action="waiting up to 3 heartbeats for it to expire (a restart of this pod)")
            return
        if now - self._conflict[1] > 3 * self.heartbeat:
            self.fleet.rename(f"{self.fleet.pod}-{self.fleet.boot}")
            self._conflict = None
            self._wake.set()

    # -- the leader's publication ----------------------------------------------------------------------------

    async def _publish(self, latest: Published) -> None:
        fleet, keys = self.fleet, self.fleet.keys
        if self._term != fleet.leader_term:  # leadership lost and won back in between: a new term
            self._leading, self._term = False, fleet.leader_term
        try:
            async with asyncio.timeout(fleet.request_timeout * 2):
                levels = await self._pod_levels()
                if not self._leading:
                    await self._take_over()
            events, level, since = self._events(latest, levels)
            state = self._state(latest, level, since, levels)
            args: list[Any] = [fleet.token, self.floor, self._state_ttl_ms, keys.events,
                               "SPUBLISH" if fleet.settings.cluster else "PUBLISH", STREAM_MAXLEN,
                               with_seq_placeholder(state), len(events)]
            args += [with_seq_placeholder(body) for body in events]
            async with asyncio.timeout(fleet.request_timeout * 2):
                seq = int(await self._scripts["publish"](keys=[keys.leader, keys.seq, keys.state, keys.stream],
                                                         args=args))
        except asyncio.CancelledError:
            raise
        except REDIS_ERRORS as exc:
            fleet.redis_state(False, exc)
            log.debug("fleet_publish_failed", error=fleet.redact(describe_error(exc)))
            self._leading = False  # readers may have missed something: the next write starts with a resync
            return
        if seq < 0:  # fenced: the lease is someone else's by now
            self._leading = False
            return
        self.floor = max(self.floor, seq)
        self._backlog.clear()
        self._level, self._since = level, since
        if not self._leading:
            log.info("fleet_publishing", pod=fleet.pod, seq=seq, service_level=self._level)
        self._leading = True

    async def _pod_levels(self) -> list[str]:
        """The levels of the live pods."""
        return [str(state.get("level")) for state in await self.fleet.pod_states()]

    async def _take_over(self) -> None:
        """Read what the previous leader published, so the fleet level's history goes on from there."""
        client = self.fleet.client
        assert client is not None
        with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):
            body = await client.get(self.fleet.keys.state)
            if body is not None:
                previous = orjson.loads(body)
                self._level, self._since = str(previous["level"]), previous.get("since")
                self.floor = max(self.floor, int(previous.get("seq") or 0))

    def _events(self, latest: Published, levels: list[str]) -> tuple[list[bytes], str, str | None]:
        """The events to publish now, the fleet level and since when it holds (committed once written)."""
        snap = latest.snapshot
        policy = self.config.policy
        level = fleet_level(levels, policy.levels) or snap.level
        now = iso(self.clock.now())
        base = {"schema_version": SCHEMA_VERSION, "service": snap.service, "boot": snap.boot, "seq": -1, "at": now}
        out: list[bytes] = []
        if not self._leading:
            # As without fleet mode, a resync carries the whole State; here it takes a seq of its own (the
            # fleet's seq only ever grows), and the State inside says the same seq.
            state = orjson.Fragment(self._state(latest, level, self._since or now, levels))
            out.append(orjson.dumps({"type": "resync", **base, "level": level, "leader": self.fleet.pod,
                                     "reason": "a new leader publishes for the fleet", "state": state}))
        # The leader's own events, renumbered by the script; its own level changes give way to the fleet's.
        out += [orjson.dumps({**e.data, "seq": -1}) for e in self._backlog if e.type != "level_changed"]
        since = self._since
        if level not in (self._level, "unknown"):
            since = now
            if self._level is not None:
                out.append(orjson.dumps({
                    "type": "level_changed", **base, "level": level, "previous": self._level,
                    "reason": self._reason(snap.level, level, levels), "message": policy.message_for(level),
                    "capabilities": _list(policy.capabilities_for(level)),
                    "dependencies": {n: str(d.state) for n, d in snap.dependencies.items()},
                    "active_llm": snap.active_llm}))
        return out, level, since

    def _reason(self, own: str, level: str, levels: list[str]) -> str | None:
        counted = [lv for lv in levels if lv in self.config.policy.levels]
        if own == level and self._latest is not None:
            return self._latest.snapshot.reason
        return f"{counted.count(level)} of {len(counted)} pods at {level}"

    def _state(self, latest: Published, level: str, since: str | None, levels: list[str]) -> bytes:
        """The leader's own State with the fleet's level (seq left as the placeholder for the script)."""
        state = orjson.loads(latest.body)
        policy = self.config.policy
        known = level != "unknown"
        if state.get("level") != level:
            state["reason"] = self._reason(state.get("level", ""), level, levels)
        state.update({
            "seq": -1, "level": level, "since": since or state.get("since"),
            "message": policy.message_for(level) if known else None,
            "capabilities": _list(policy.capabilities_for(level)) if known else None,
            "leader": self.fleet.pod,
        })
        return orjson.dumps(state)


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _list(items: tuple[str, ...] | None) -> list[str] | None:
    return list(items) if items is not None else None

