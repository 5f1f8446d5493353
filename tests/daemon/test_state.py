"""failsoft.daemon.state.ServiceState and run_owner: statuses in; level, events and State out (ManualClock)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from datetime import timedelta
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from support import until

from failsoft.daemon.clock import ManualClock, SystemClock, iso
from failsoft.daemon.config import Config, ConfigError, parse_config
from failsoft.daemon.hub import Hub
from failsoft.daemon.state import UNKNOWN, OverrideCommand, ServiceState, run_owner
from failsoft.policies.model import BreakerState, DependencyStatus, DepState

CONFIG = """
service: checkout-api
http: {listen: "127.0.0.1:0"}
defaults: {startup_grace: 0s}  # these tests judge first probes at once; test_grace.py covers the grace
dependencies:
  db: {kind: tcp, address: "127.0.0.1:1"}
  cache: {kind: tcp, address: "127.0.0.1:2"}
  openai: {kind: llm, provider: openai, api_key: sk-state-test-0001}
  anthropic: {kind: llm, provider: anthropic, api_key: sk-ant-state-test-0002}
llm_failover: [openai, anthropic]
policy:
  levels: [full, degraded, limited, cache_only]
  recover_after: 5s
  rules:
    - {level: cache_only, when: {any_down: [db]}, message: Showing saved data; changes are paused}
    - {level: limited, when: {all_down: [openai, anthropic]}, message: AI features are temporarily unavailable}
    - {level: degraded, when: {any_not_healthy: [cache, openai, anthropic]}}
  capabilities:
    full: [chat, search, write]
    degraded: [chat, search, write]
    limited: [search, write]
    cache_only: [search]
"""
NAMES = ("db", "cache", "openai", "anthropic")
KINDS = {"db": "tcp", "cache": "tcp", "openai": "llm", "anthropic": "llm"}

# The contract's State and dependency entry, key by key.
STATE_KEYS = {"service", "boot", "level", "seq", "since", "reason", "message", "capabilities", "active_llm",
              "override", "dependencies", "updated_at", "valid_until"}
DEPENDENCY_KEYS = {"kind", "state", "breaker", "since", "latency_ms", "consecutive_failures", "reason",
                   "last_error", "retry_at"}


def config() -> Config:
    """The test configuration (no IO: parsing only)."""
    return parse_config(CONFIG, {})


def status(name: str, state: DepState = DepState.HEALTHY, reason: str | None = None, *,
           breaker: BreakerState | None = None, latency_ms: float = 1.0, probes: int = 1) -> DependencyStatus:
    """A probed dependency's status; the breaker follows the state unless given."""
    if breaker is None:
        breaker = BreakerState.OPEN if state is DepState.DOWN else BreakerState.CLOSED
    return DependencyStatus(name=name, kind=KINDS[name], state=state, breaker=breaker, reason=reason,
                            latency_ms=latency_ms, probes=probes,
                            consecutive_failures=3 if state is DepState.DOWN else 0)


def all_healthy(state: ServiceState) -> list[Any]:
    """Report every dependency healthy once; the events of the last report."""
    events: list[Any] = []
    for name in NAMES:
        events = state.update(status(name))
    return events


def types(events: list[Any]) -> list[str]:
    """The event types, in order."""
    return [e.type for e in events]


def test_no_events_and_level_unknown_before_every_dependency_was_probed() -> None:
    """Until each dependency has been probed once nothing is evaluated: no event, level unknown, not ready."""
    state = ServiceState(config(), ManualClock())
    for name in NAMES[:-1]:
        assert state.update(status(name, DepState.DOWN, "connection_refused")) == []
    snap = state.snapshot()
    assert snap.level == UNKNOWN
    assert snap.seq == 0
    assert not snap.ready
    assert snap.to_dict()["message"] is None
    assert snap.to_dict()["capabilities"] is None
    assert state.tick() == []


def test_the_first_evaluation_emits_level_changed_from_unknown() -> None:
    """The last first probe makes the daemon ready; the level goes from unknown to the evaluated one."""
    clock = ManualClock()
    state = ServiceState(config(), clock)
    events = all_healthy(state)
    level_events = [e for e in events if e.type == "level_changed"]
    assert len(level_events) == 1
    first = level_events[0]
    assert first.fields["level"] == "full"
    assert first.fields["previous"] == UNKNOWN
    assert first.fields["dependencies"] == dict.fromkeys(NAMES, "healthy")
    assert first.fields["active_llm"] == "openai"
    assert first.at == clock.now()
    snap = state.snapshot()
    assert (snap.level, snap.ready, snap.since) == ("full", True, clock.now())
    assert snap.seq == events[-1].seq


def test_the_first_level_can_be_a_bad_one() -> None:
    """A dependency down from the start gives the bad level at once (no hysteresis for the first level)."""
    state = ServiceState(config(), ManualClock())
    state.update(status("db", DepState.DOWN, "connection_refused"))
    for name in NAMES[1:]:
        events = state.update(status(name))
    change = next(e for e in events if e.type == "level_changed")
    assert change.fields["level"] == "cache_only"
    assert change.fields["reason"] == "db down (connection refused)"
    assert change.fields["message"] == "Showing saved data; changes are paused"


def test_dependency_changed_on_state_or_breaker_change_only() -> None:
    """A dependency event when the state, breaker or reason changes; none for a new latency alone."""
    clock = ManualClock()
    state = ServiceState(config(), clock)
    all_healthy(state)
    assert state.update(status("cache", latency_ms=99.0)) == []
    events = state.update(status("cache", DepState.DEGRADED, "slow"))
    assert types(events) == ["dependency_changed", "level_changed"]
    assert events[0].fields == {"dependency": "cache", "state": "degraded", "previous": "healthy",
                                "breaker": "closed", "reason": "slow"}
    assert events[1].fields["level"] == "degraded"
    assert events[1].fields["reason"] == "cache degraded (slow)"
    state.update(status("db", DepState.DOWN, "connection_refused"))
    half_open = state.update(status("db", DepState.DOWN, breaker=BreakerState.HALF_OPEN))
    assert types(half_open) == ["dependency_changed"]
    assert half_open[0].fields["breaker"] == "half_open"
    assert half_open[0].fields["previous"] == "down"


def test_seq_grows_by_one_per_event() -> None:
    """Every event takes the next seq; the State's seq is the last event's."""
    clock = ManualClock()
    state = ServiceState(config(), clock)
    seen = all_healthy(state)
    for name, st_, reason in [("db", DepState.DOWN, "timeout"), ("cache", DepState.DEGRADED, "slow"),
                              ("openai", DepState.DOWN, "auth"), ("db", DepState.HEALTHY, None)]:
        seen += state.update(status(name, st_, reason))
    clock.advance(10)
    seen += state.tick()
    seen += state.set_override("limited", 60, "maintenance")
    seen += state.clear_override("deleted")
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    assert state.snapshot().seq == len(seen)


def test_worse_at_once_better_after_recover_after() -> None:
    """db down: cache_only at once. db back: still cache_only, saying it is recovering, until recover_after."""
    clock = ManualClock()
    state = ServiceState(config(), clock)
    all_healthy(state)
    events = state.update(status("db", DepState.DOWN, "connection_refused"))
    assert events[-1].fields["level"] == "cache_only"
    clock.advance(1)
    events = state.update(status("db"))
    assert types(events) == ["dependency_changed"]
    snap = state.snapshot()
    assert snap.level == "cache_only"
    assert snap.reason == "recovering: full once it holds for 5s (all dependencies healthy)"
    assert state.deadline() == clock.monotonic() + 5
    clock.advance(4.9)
    assert state.tick() == []
    clock.advance(0.1)
    events = state.tick()
    assert types(events) == ["level_changed"]
    assert events[0].fields["level"] == "full"
    assert events[0].fields["previous"] == "cache_only"
    assert state.snapshot().since == clock.now()
    assert state.deadline() is None


def test_llm_failover_is_an_event_with_the_reason() -> None:
    """The active LLM moving away from a down provider is an llm_failover event naming why."""
    state = ServiceState(config(), ManualClock())
    all_healthy(state)
    events = state.update(status("openai", DepState.DOWN, "connection_refused"))
    failover = next(e for e in events if e.type == "llm_failover")
    assert failover.fields == {"active_llm": "anthropic", "previous": "openai",
                               "reason": "openai down (connection refused)"}
    assert state.snapshot().active_llm == "anthropic"


def test_override_set_forces_the_level_and_expires() -> None:
    """An override forces the published level until its ttl ends; expiry is an event and the level returns."""
    clock = ManualClock()
    state = ServiceState(config(), clock)
    all_healthy(state)
    events = state.set_override("cache_only", 30, "db maintenance")
    assert types(events) == ["override_set", "level_changed"]
    until = clock.now() + timedelta(seconds=30)
    assert events[0].fields == {"level": "cache_only", "reason": "db maintenance", "until": iso(until)}
    assert events[1].fields["level"] == "cache_only"
    assert events[1].fields["reason"] == "override: db maintenance"
    body = state.snapshot().to_dict()
    assert body["override"] == {"level": "cache_only", "reason": "db maintenance", "until": iso(until)}
    assert body["capabilities"] == ["search"]
    assert state.deadline() == clock.monotonic() + 30
    # Dependency changes go on being evaluated under the override without moving the published level.
    assert types(state.update(status("cache", DepState.DEGRADED, "slow"))) == ["dependency_changed"]
    clock.advance(29.9)
    assert state.tick() == []
    clock.advance(0.1)
    events = state.tick()
    assert types(events) == ["override_cleared", "level_changed"]
    assert events[0].fields == {"level": "cache_only", "reason": "expired"}
    assert events[1].fields["level"] == "degraded"
    assert state.snapshot().override is None


def test_override_clear_is_an_event_and_clearing_nothing_is_not() -> None:
    """DELETE /override ends it at once with reason deleted; with no override there is nothing to publish."""
    state = ServiceState(config(), ManualClock())
    all_healthy(state)
    assert state.clear_override("deleted") == []
    state.set_override("limited", 600, "testing")
    events = state.clear_override("deleted")
    assert types(events) == ["override_cleared", "level_changed"]
    assert events[0].fields == {"level": "limited", "reason": "deleted"}
    assert events[1].fields["level"] == "full"


def test_an_override_to_a_better_level_is_published_at_once() -> None:
    """An operator forcing full while the rules say cache_only gets full without waiting for recover_after."""
    state = ServiceState(config(), ManualClock())
    all_healthy(state)
    state.update(status("db", DepState.DOWN, "timeout"))
    events = state.set_override("full", 60, "known false alarm")
    assert events[-1].type == "level_changed"
    assert state.snapshot().level == "full"


def test_the_snapshot_has_every_key_of_the_contract_state() -> None:
    """The State: every key of the contract, dependency entries with theirs, timestamps as ISO UTC strings."""
    clock = ManualClock()
    state = ServiceState(config(), clock, boot="9f1c2a", validity=15)
    all_healthy(state)
    state.update(status("openai", DepState.DOWN, "connection_refused"))
    body = orjson.loads(orjson.dumps(state.snapshot().to_dict()))
    assert set(body) >= STATE_KEYS
    assert body["service"] == "checkout-api"
    assert body["boot"] == "9f1c2a"
    assert body["level"] == "degraded"
    assert body["message"] is None
    assert body["capabilities"] == ["chat", "search", "write"]
    assert body["active_llm"] == "anthropic"
    assert body["override"] is None
    assert body["updated_at"] == iso(clock.now())
    assert body["valid_until"] == iso(clock.now() + timedelta(seconds=15))
    assert body["since"].endswith("Z")
    assert set(body["dependencies"]) == set(NAMES)
    for name, entry in body["dependencies"].items():
        assert set(entry) >= DEPENDENCY_KEYS, name
        assert entry["kind"] == KINDS[name]
    openai = body["dependencies"]["openai"]
    assert (openai["state"], openai["breaker"], openai["reason"]) == ("down", "open", "connection_refused")


def test_the_snapshot_is_immutable() -> None:
    """Readers get a frozen value: a later change does not alter a snapshot already handed out."""
    state = ServiceState(config(), ManualClock())
    all_healthy(state)
    before = state.snapshot()
    state.update(status("db", DepState.DOWN, "timeout"))
    assert before.level == "full"
    assert before.dependencies["db"].state is DepState.HEALTHY
    assert dataclasses.is_dataclass(before)
    try:
        before.level = "x"  # type: ignore[misc]
    except dataclasses.FrozenInstanceError:
        pass
    else:
        raise AssertionError("Snapshot is mutable")


# -- seq as a property ---------------------------------------------------------------------------------

actions = st.one_of(
    st.tuples(st.just("update"), st.sampled_from(NAMES), st.sampled_from(list(DepState)[:3]),
              st.sampled_from([None, "timeout", "slow"])),
    st.tuples(st.just("advance"), st.floats(0, 8, allow_nan=False)),
    st.tuples(st.just("override"), st.sampled_from(["full", "limited", "cache_only"]), st.floats(0.5, 20)),
    st.tuples(st.just("clear")),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(actions, max_size=60))
def test_seq_never_goes_back_and_never_skips(script: list[tuple[Any, ...]]) -> None:
    """Whatever happens, events carry 1, 2, 3, ... and the State's seq equals the last event's seq."""
    clock = ManualClock()
    state = ServiceState(config(), clock)
    events = all_healthy(state)
    seen = list(events)
    for action in script:
        if action[0] == "update":
            seen += state.update(status(action[1], action[2], action[3]))
        elif action[0] == "advance":
            clock.advance(action[1])
            seen += state.tick()
        elif action[0] == "override":
            seen += state.set_override(action[1], action[2], "prop")
        else:
            seen += state.clear_override("deleted")
        assert state.snapshot().seq == (seen[-1].seq if seen else 0)
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    levels = [e.fields["level"] for e in seen if e.type == "level_changed"]
    assert all(a != b for a, b in itertools.pairwise(levels)), "a level_changed that changes nothing"


# -- the owner task ------------------------------------------------------------------------------------


async def test_run_owner_publishes_applies_statuses_and_answers_override_commands() -> None:
    """The owner publishes the unknown State at once, then each change; an override command gets its events."""
    hub = Hub()
    state = ServiceState(config(), SystemClock())
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    owner = asyncio.create_task(run_owner(state, inbox, hub, refresh=60))
    try:
        async with asyncio.timeout(5):
            first = await hub.wait_past(-1, 5)
            assert first is not None
            assert (first.snapshot.level, first.seq) == (UNKNOWN, 0)
            for name in NAMES:
                inbox.put_nowait(status(name))
            ready = await hub.wait_past(0, 5)
            while ready is not None and ready.snapshot.level == UNKNOWN:
                ready = await hub.wait_past(ready.seq, 5)
            assert ready is not None
            assert ready.snapshot.level == "full"
            assert [e.type for e in hub.ring] == ["llm_failover", "level_changed"]
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            inbox.put_nowait(OverrideCommand("cache_only", 60, "drill", done))
            events = await done
            assert [e.type for e in events] == ["override_set", "level_changed"]
            published = await hub.wait_past(ready.seq, 5)
            assert published is not None
            assert orjson.loads(published.body)["override"]["reason"] == "drill"
            done = asyncio.get_running_loop().create_future()
            inbox.put_nowait(OverrideCommand(None, done=done))
            assert [e.type for e in await done] == ["override_cleared", "level_changed"]
    finally:
        owner.cancel()


async def test_run_owner_publishes_the_recovery_when_the_hold_ends_without_new_input() -> None:
    """The owner wakes up at the hysteresis deadline by itself: no new status is needed to publish the upgrade."""
    text = CONFIG.replace("recover_after: 5s", "recover_after: 300ms")
    hub = Hub()
    state = ServiceState(parse_config(text, {}), SystemClock())
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    owner = asyncio.create_task(run_owner(state, inbox, hub, refresh=60))
    try:
        async with asyncio.timeout(5):
            for name in NAMES:
                inbox.put_nowait(status(name, DepState.DOWN if name == "db" else DepState.HEALTHY, "timeout"))
            inbox.put_nowait(status("db"))
            while hub.current is None or "recovering" not in (hub.current.snapshot.reason or ""):
                await hub.wait_past(hub.current.seq if hub.current else -1, 1)
            seq = hub.current.seq
            recovered = await hub.wait_past(seq, 3)
            assert recovered is not None
            assert recovered.snapshot.level == "full"
    finally:
        owner.cancel()


def test_a_config_without_dependencies_is_refused_or_ready_at_once() -> None:
    """Nothing to probe must not mean 'unknown and not ready forever' (503 on /readyz and /service-level for the
    life of the pod): either the config is refused, naming ``dependencies``, or the daemon is ready at once."""
    try:
        config_ = parse_config('http: {listen: "127.0.0.1:0"}\n', {})
    except ConfigError as exc:
        assert any(e.startswith("dependencies") for e in exc.errors), exc.errors
        return
    state = ServiceState(config_, ManualClock())
    state.tick()
    snap = state.snapshot()
    assert snap.ready
    assert snap.level == config_.policy.levels[0]


async def test_run_owner_refreshes_the_state_while_nothing_changes() -> None:
    """With no input at all the owner republishes every ``refresh`` seconds, so updated_at and valid_until move
    on (a reader must be able to tell a live sidecar from a stale copy) while seq stays put."""
    hub = Hub()
    published: list[Any] = []
    three = asyncio.Event()

    def listener(pub: Any, _: list[Any]) -> None:
        published.append(pub.snapshot)
        if len(published) >= 3:
            three.set()

    hub.add_listener(listener)
    state = ServiceState(config(), SystemClock(), validity=15)
    owner = asyncio.create_task(run_owner(state, asyncio.Queue(), hub, refresh=0.2))
    try:
        await asyncio.wait_for(three.wait(), 5)
    finally:
        owner.cancel()
    first, third = published[0], published[2]
    assert third.updated_at > first.updated_at
    assert third.valid_until > first.valid_until
    assert (third.valid_until - third.updated_at).total_seconds() == 15
    assert first.seq == third.seq == 0


async def test_a_probe_result_that_only_moves_the_latency_is_not_published_again() -> None:
    """The State is serialised once per change: a probe result whose only news is its latency (and probe count)
    publishes nothing, while the next one that changes something a reader acts on (a failure counted) publishes
    at once, carrying the newest latency too."""
    hub = Hub()
    published: list[Any] = []
    hub.add_listener(lambda pub, _: published.append(pub))
    state = ServiceState(config(), SystemClock())
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    owner = asyncio.create_task(run_owner(state, inbox, hub, refresh=60))
    try:
        for name in NAMES:
            inbox.put_nowait(status(name))
        await until(lambda: hub.current is not None and hub.current.snapshot.level == "full", 5)
        count = len(published)
        for i in range(20):
            inbox.put_nowait(status("db", latency_ms=2.0 + i, probes=2 + i))
        await until(inbox.empty, 5)
        await asyncio.sleep(0)  # let the owner finish the last message
        assert len(published) == count
        failing = dataclasses.replace(status("db", latency_ms=99.0, probes=30), consecutive_failures=1)
        inbox.put_nowait(failing)
        await until(lambda: len(published) > count, 5)
        db = orjson.loads(published[-1].body)["dependencies"]["db"]
        assert (db["consecutive_failures"], db["latency_ms"]) == (1, 99.0)
    finally:
        owner.cancel()
