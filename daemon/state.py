"""The one owner of the service's state: dependency statuses in, level, events and snapshots out.

``ServiceState`` is plain synchronous code driven by ``run_owner``, the single task that mutates it; readers
only ever see the immutable ``Snapshot`` and ``Event`` values it hands to the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from failsoft.daemon.clock import Clock, iso
from failsoft.daemon.config import Config
from failsoft.daemon.logs import Holdable
from failsoft.policies.failover import FailoverMachine
from failsoft.policies.grace import StartupGrace
from failsoft.policies.machine import LevelMachine
from failsoft.policies.model import BreakerState, DependencyStatus, DepState
from failsoft.policies.rules import Evaluation, evaluate

log = Holdable(structlog.get_logger("failsoft.state"))

UNKNOWN = "unknown"
# The major version of docs/schema (State and events). Within it fields are only added; see docs/releases.md.
SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class Override:
    """A level forced by an operator until ``until``."""

    level: str
    reason: str
    until: datetime
    until_mono: float

    def to_dict(self) -> dict[str, Any]:
        """The ``override`` field of the State."""
        return {"level": self.level, "reason": self.reason, "until": iso(self.until)}


@dataclass(frozen=True, slots=True)
class Event:
    """One published change; ``seq`` is the State's seq right after it."""

    type: str
    seq: int
    at: datetime
    fields: Mapping[str, Any]

    def to_dict(self, service: str, boot: str) -> dict[str, Any]:
        """The event as published (HTTP stream, history, Redis)."""
        return {"schema_version": SCHEMA_VERSION, "type": self.type, "service": service, "boot": boot,
                "seq": self.seq, "at": iso(self.at), **self.fields}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The State: what ``GET /service-level`` answers. Immutable; a new one per change."""

    service: str
    boot: str
    level: str
    seq: int
    since: datetime | None
    reason: str | None
    message: str | None
    capabilities: tuple[str, ...] | None
    active_llm: str | None
    override: Override | None
    dependencies: Mapping[str, DependencyStatus]
    updated_at: datetime
    valid_until: datetime
    levels: tuple[str, ...] = ()
    ready: bool = False
    starting: frozenset[str] = frozenset()  # dependencies within their startup grace (see policies/grace.py)

    def to_dict(self) -> dict[str, Any]:
        """The JSON body, field order as in the contract."""
        return {
            "schema_version": SCHEMA_VERSION,
            "service": self.service,
            "boot": self.boot,
            "level": self.level,
            "seq": self.seq,
            "since": iso(self.since),
            "reason": self.reason,
            "message": self.message,
            "capabilities": list(self.capabilities) if self.capabilities is not None else None,
            "active_llm": self.active_llm,
            "override": self.override.to_dict() if self.override else None,
            "dependencies": {name: dependency_dict(d, name in self.starting) for name, d in self.dependencies.items()},
            "updated_at": iso(self.updated_at),
            "valid_until": iso(self.valid_until),
            "levels": list(self.levels),
            "starting": bool(self.starting),
        }


def dependency_dict(d: DependencyStatus, starting: bool = False) -> dict[str, Any]:
    """A dependency's entry in the State; ``starting`` (only while true) marks it within its startup grace."""
    out: dict[str, Any] = {
        "kind": d.kind,
        "state": str(d.state),
        "breaker": str(d.breaker),
        "since": iso(d.since),
        "latency_ms": d.latency_ms,
        "consecutive_failures": d.consecutive_failures,
        "reason": d.reason,
        "last_error": d.last_error,
        "retry_at": iso(d.retry_at),
    }
    out.update(d.details)
    if starting:
        out["starting"] = True
    if d.prober is not None:  # fleet mode only: the State without fleet stays as it was
        out["prober"] = d.prober
    return out


class ServiceState:
    """Evaluates the policy over dependency statuses and keeps seq, level, active LLM and override."""

    def __init__(self, config: Config, clock: Clock, *, boot: str | None = None, validity: float = 15.0) -> None:
        self.config = config
        self.clock = clock
        self.boot = boot or secrets.token_hex(3)
        self.validity = validity  # how long a reader may trust a copy of the State
        policy = config.policy
        self.deps: dict[str, DependencyStatus] = {
            name: DependencyStatus(name=name, kind=d.kind) for name, d in config.dependencies.items()
        }
        self.seq = 0
        self.level = UNKNOWN
        self.level_since: datetime | None = None
        self.evaluation: Evaluation | None = None
        self.machine = LevelMachine(policy.recover_after)
        self.failover = FailoverMachine(config.llm_failover, policy.recover_after)
        self.override: Override | None = None
        self._starting: frozenset[str] = frozenset()  # as of the last evaluation, to log the end of a grace
        self.ready = not self.deps  # with nothing to probe, the best level is known at once
        self.grace = StartupGrace(clock.monotonic(), {n: d.settings.startup_grace
                                                      for n, d in config.dependencies.items()})
        self.changed = True  # something a reader would see moved since the last snapshot was taken

    # -- inputs ------------------------------------------------------------------------------------------

    def update(self, status: DependencyStatus) -> list[Event]:
        """A dependency was probed."""
        prev = self.deps[status.name]
        self.deps[status.name] = status
        self.grace = self.grace.step(status)
        if prev.probes == 0 and status.probes > 0:
            _log_first_state(status)
        if self.ready and _visible(prev) == _visible(status):
            # Only the latency and the probe count moved: nothing to evaluate, nothing to publish now. The next
            # change or refresh (``run_owner``) carries the newest latency.
            return []
        self.changed = True
        events: list[Event] = []
        if self.ready and (prev.state, prev.breaker, prev.reason) != (status.state, status.breaker, status.reason):
            events.append(self._event("dependency_changed", {
                "dependency": status.name, "state": str(status.state), "previous": str(prev.state),
                "breaker": str(status.breaker), "reason": status.reason,
            }))
            _log_dependency(prev, status)
        if not self.ready and all(d.probes for d in self.deps.values()):
            self.ready = True
        return events + self._evaluate()

    def set_override(self, level: str, ttl: float, reason: str) -> list[Event]:
        """Force ``level`` for ``ttl`` seconds."""
        until = self.clock.now() + timedelta(seconds=ttl)
        self.override = Override(level, reason, until, self.clock.monotonic() + ttl)
        events = [self._event("override_set", self.override.to_dict())]
        log.warning("override_set", service_level=level, reason=reason, until=iso(until))
        return events + self._evaluate()

    def clear_override(self, why: str) -> list[Event]:
        """End the override (deleted, or its ttl ran out)."""
        if self.override is None:
            return []
        old, self.override = self.override, None
        events = [self._event("override_cleared", {"level": old.level, "reason": why})]
        log.warning("override_cleared", service_level=old.level, reason=why)
        return events + self._evaluate()

    def tick(self) -> list[Event]:
        """Time passed: hysteresis holds may have ended, an override may have expired."""
        if self.override is not None and self.clock.monotonic() >= self.override.until_mono:
            return self.clear_override("expired")
        return self._evaluate()

    def deadline(self) -> float | None:
        """The monotonic time at which ``tick`` may change something, or None."""
        times = [self.machine.deadline(), self.failover.deadline(),
                 self.override.until_mono if self.override else None, self.grace.deadline(self.clock.monotonic())]
        pending = [t for t in times if t is not None]
        return min(pending) if pending else None

    # -- evaluation --------------------------------------------------------------------------------------

    def _evaluate(self) -> list[Event]:
        if not self.ready:
            return []
        now = self.clock.monotonic()
        policy = self.config.policy
        starting = self.grace.starting(now)
        for name in self._starting - starting:  # a grace ended, or the dependency answered
            if name not in self.grace.answered:
                log.warning("startup_grace_ended", dependency=name, state=str(self.deps[name].state),
                            reason=self.deps[name].reason, grace_s=self.grace.grace[name])
        self._starting = starting
        self.evaluation = evaluate(policy, self.grace.view(self.deps, now))
        self.machine = self.machine.step(policy.severity(self.evaluation.level), now)
        events = []
        previous_llm = self.failover.active
        self.failover = self.failover.step(self.deps, now)
        if self.failover.active != previous_llm:
            events.append(self._failover_event(previous_llm))
        assert self.machine.published is not None
        level = self.override.level if self.override else policy.levels[self.machine.published]
        if level != self.level:
            previous, self.level, self.level_since = self.level, level, self.clock.now()
            events.append(self._event("level_changed", {
                "level": level, "previous": previous, "reason": self.reason(), "message": policy.message_for(level),
                "capabilities": _list_or_none(policy.capabilities_for(level)),
                "dependencies": {n: str(d.state) for n, d in self.deps.items()}, "active_llm": self.failover.active,
            }))
            # A move to a worse level (or a first level below the best) is what an operator must see.
            worse = policy.severity(level) > (policy.severity(previous) if previous in policy.levels else 0)
            (log.warning if worse else log.info)("level_changed", service_level=level, previous=previous,
                                                 reason=self.reason())
        return events

    def _failover_event(self, previous: str | None) -> Event:
        active = self.failover.active
        if previous is not None and self.deps[previous].state is not DepState.HEALTHY:
            reason = self.deps[previous].describe()  # e.g. "openai degraded (rate limited)"
        elif active is None:
            reason = "no usable LLM provider"
        elif previous is None:
            reason = f"{active} usable"
        else:
            reason = f"{self.deps[active].describe()}, preferred over {previous}"
        # Choosing the first provider is news; leaving one is a warning.
        (log.info if previous is None else log.warning)("llm_failover", active_llm=active, previous=previous,
                                                        reason=reason)
        return self._event("llm_failover", {"active_llm": active, "previous": previous, "reason": reason})

    def reason(self) -> str | None:
        """Why the published level is what it is."""
        if self.override is not None:
            return f"override: {self.override.reason}"
        ev = self.evaluation
        if ev is None:
            return None
        if self.level not in (ev.level, UNKNOWN):
            return f"recovering: {ev.level} once it holds for {self.config.policy.recover_after:g}s ({ev.reason})"
        waiting = sorted(n for n in self._starting if self.deps[n].state not in (DepState.HEALTHY, DepState.DEGRADED))
        if waiting:  # the policy sees these as healthy for now: say so
            return f"{ev.reason}; starting: waiting for {', '.join(waiting)} to answer (startup_grace)"
        return ev.reason

    def _event(self, type_: str, fields: dict[str, Any]) -> Event:
        self.seq += 1
        return Event(type_, self.seq, self.clock.now(), fields)

    # -- output ------------------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The current State, stamped now."""
        self.changed = False
        now = self.clock.now()
        policy = self.config.policy
        known = self.level != UNKNOWN
        return Snapshot(
            service=self.config.service,
            boot=self.boot,
            level=self.level,
            seq=self.seq,
            since=self.level_since,
            reason=self.reason(),
            message=policy.message_for(self.level) if known else None,
            capabilities=policy.capabilities_for(self.level) if known else None,
            active_llm=self.failover.active,
            override=self.override,
            dependencies=dict(self.deps),
            updated_at=now,
            valid_until=now + timedelta(seconds=self.validity),
            levels=policy.levels,
            ready=self.ready,
            starting=self.grace.starting(self.clock.monotonic()),
        )


def _visible(d: DependencyStatus) -> tuple[object, ...]:
    """What of a dependency's status readers act on: everything but the latency and the probe count."""
    return (d.state, d.breaker, d.since, d.consecutive_failures, d.reason, d.last_error, d.retry_at, d.details,
            d.probes == 0)


def _list_or_none(items: tuple[str, ...] | None) -> list[str] | None:
    return list(items) if items is not None else None


def _log_dependency(prev: DependencyStatus, new: DependencyStatus) -> None:
    fields = {"dependency": new.name, "kind": new.kind, "state": str(new.state), "previous": str(prev.state),
              "breaker": str(new.breaker), "reason": new.reason, "last_error": new.last_error,
              "consecutive_failures": new.consecutive_failures}
    if new.breaker != prev.breaker:
        name = {BreakerState.OPEN: "breaker_opened", BreakerState.HALF_OPEN: "breaker_half_open",
                BreakerState.CLOSED: "breaker_closed"}[new.breaker]
        log.info(name, dependency=new.name, kind=new.kind, previous=str(prev.breaker), state=str(new.state),
                 reason=new.reason, consecutive_failures=new.consecutive_failures)
    if (new.state, new.reason) == (prev.state, prev.reason):
        return  # only the breaker moved (the line above says so): not a change of state
    # Warn once when it goes down; a half-open re-probe of a dependency already down is not news.
    level = "warning" if new.state is DepState.DOWN and prev.state is not DepState.DOWN else "info"
    getattr(log, level)("dependency_changed", **fields)


def _log_first_state(d: DependencyStatus) -> None:
    """One line per dependency at start: what its first probe found."""
    log.info("dependency_first_state", dependency=d.name, kind=d.kind, state=str(d.state), breaker=str(d.breaker),
             reason=d.reason, last_error=d.last_error, latency_ms=d.latency_ms)


# -- the owner task --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OverrideCommand:
    """A request from the HTTP API; ``level`` None clears the override. ``done`` receives the events."""

    level: str | None
    ttl: float = 0.0
    reason: str = ""
    done: asyncio.Future[list[Event]] | None = None


class Publisher(Protocol):
    """Where the owner sends each new snapshot and its events (the hub)."""

    def publish(self, snapshot: Snapshot, events: list[Event]) -> None:
        """Take a new State and the events that led to it."""


async def run_owner(
    state: ServiceState, inbox: asyncio.Queue[DependencyStatus | OverrideCommand], hub: Publisher, refresh: float
) -> None:
    """The single task that mutates ``state``: applies inbox messages and timers, publishes each result.

    The snapshot is also refreshed every ``refresh`` seconds so that ``valid_until`` keeps moving while
    nothing changes.
    """
    clock = state.clock
    next_refresh = clock.monotonic() + refresh
    hub.publish(state.snapshot(), state.tick())  # the first evaluation, when there is nothing to wait for
    while True:
        now = clock.monotonic()
        wake = min(t for t in (state.deadline(), next_refresh) if t is not None)
        msg: DependencyStatus | OverrideCommand | None = None
        # asyncio.timeout rather than wait_for: on 3.11 wait_for can lose a cancellation, and shutdown cancels us.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, wake - now)):
                msg = await inbox.get()
        # The lines this change logs are written once it is published and the readers' tasks (the Redis writer)
        # have had their turn: a level reaches the apps first.
        with log.held():
            if isinstance(msg, DependencyStatus):
                events = state.update(msg)
            elif isinstance(msg, OverrideCommand):
                if msg.level:
                    events = state.set_override(msg.level, msg.ttl, msg.reason)
                else:
                    events = state.clear_override("deleted")
                if msg.done is not None and not msg.done.done():
                    msg.done.set_result(events)
            else:
                events = state.tick()
            refreshed = clock.monotonic() >= next_refresh
            if refreshed:
                next_refresh = clock.monotonic() + refresh
            # A probe result that changed nothing a reader acts on (its latency only) is not serialised again: the
            # State is built and serialised once per change, and once per refresh so that valid_until moves.
            if events or state.changed or refreshed or msg is None or isinstance(msg, OverrideCommand):
                hub.publish(state.snapshot(), events)
                await asyncio.sleep(0)

