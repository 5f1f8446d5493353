"""confirm_down in process, with a real Redis and a real probe: a Fleet (the only pod, so the prober) probes a
TCP port nobody listens on; the test plays the other pods by answering the check request in the target's stream.

- another pod votes ``down``: K = 2 failures, the down result is applied (and shared);
- another pod votes ``up``: not confirmed, the down result is never applied here.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from support import until, until_async

from failsoft.daemon.app import _probe_factory
from failsoft.daemon.breaker import Breaker
from failsoft.daemon.clock import SystemClock
from failsoft.daemon.config import Config, parse_config
from failsoft.daemon.fleet import Fleet
from failsoft.daemon.scheduler import DependencyScheduler
from failsoft.devtools.localservers import free_port
from failsoft.policies.model import DependencyStatus, DepState


def fleet_config(url: str) -> Config:
    """One shared TCP dependency on a closed port, confirm_down 2, a 1 s lease."""
    return parse_config(f"""
service: confirm-{secrets.token_hex(3)}
pod: pod-a
defaults: {{interval: 100ms, timeout: 200ms, unhealthy_threshold: 1, down_interval: {{initial: 1s, max: 1s}}}}
dependencies:
  db: {{kind: tcp, address: "127.0.0.1:{free_port()}"}}
fleet: {{redis: "{url}", lease: 1s, confirm_down: 2, prefix: "t-{secrets.token_hex(3)}"}}
""", {})


def scheduler_factory(config: Config) -> Callable[[str, Callable[[DependencyStatus], None]], DependencyScheduler]:
    """What the daemon builds schedulers with."""
    clock = SystemClock()

    def make(name: str, report: Callable[[DependencyStatus], None]) -> DependencyScheduler:
        dep = config.dependencies[name]
        return DependencyScheduler(Breaker(dep.name, dep.kind, dep.settings),
                                   _probe_factory(dep.kind, dep.options, dep.settings.timeout, None),
                                   report, clock, config.redactor())

    return make


async def answer_checks(url: str, fleet: Fleet, vote: str) -> None:
    """Play another pod: answer every check request in the target's stream with ``vote``."""
    target = next(iter(fleet.targets.values()))
    client: Any = aioredis.Redis.from_url(url)
    last = "0-0"
    try:
        while True:
            reply = await client.xread({target.results_key: last}, block=200)
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id
                    if b"check" in fields:
                        await client.hset(f"{target.results_key}:votes:{fields[b'check'].decode()}", "pod-b", vote)
    finally:
        await client.aclose()


async def _at_least(count: Any, n: int) -> bool:
    return bool(await count >= n)


@pytest.mark.parametrize(("vote", "applied"), [("down", True), ("up", False)])
async def test_a_shared_dependency_is_down_for_the_fleet_only_once_enough_pods_agree(
    redis_server: Any, vote: str, applied: bool
) -> None:
    """With confirm_down 2 the prober's own failure is held back and the others are asked; a second failure
    confirms it (applied here and shared), a pod that reaches the dependency keeps it from being applied."""
    config = fleet_config(redis_server.url)
    reported: list[DependencyStatus] = []
    fleet = Fleet(config, secrets.token_hex(3), reported.append, SystemClock(), scheduler_factory(config))
    tasks = fleet.start()
    other = asyncio.create_task(answer_checks(redis_server.url, fleet, vote))
    try:
        target = next(iter(fleet.targets.values()))
        await until(lambda: target.slots[0].running, 10, what="the pod to become the prober")
        if applied:
            await until(lambda: any(s.state is DepState.DOWN for s in reported), 10, what="down confirmed")
            client: Any = aioredis.Redis.from_url(redis_server.url)
            try:
                entries = await client.xrange(target.results_key)
                assert any(b"result" in fields and b'"down"' in fields[b"result"] for _, fields in entries)
            finally:
                await client.aclose()
        else:
            # A second check request means the first round ended (a new one starts only then), not confirmed.
            client = aioredis.Redis.from_url(redis_server.url)
            try:
                async def checks() -> int:
                    return sum(b"check" in f for _, f in await client.xrange(target.results_key))

                await until_async(lambda: _at_least(checks(), 2), 15, what="two rounds of checks")
            finally:
                await client.aclose()
            assert target.slots[0].running
            assert not any(s.state is DepState.DOWN for s in reported), reported
    finally:
        other.cancel()
        for task in tasks.values():
            task.cancel()
        await fleet.aclose()
