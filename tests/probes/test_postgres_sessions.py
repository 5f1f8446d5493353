"""PostgreSQL refusing new sessions, seen by a probe that already has its connection, against a real server.

A server at ``max_connections`` answers every new startup with "sorry, too many clients already" while the
probe's kept connection (and the app's pools) go on working: a running probe must see it within its session
check period (a few seconds), as ``degraded`` with reason ``too_many_connections`` -- the same verdict a probe
starting now gets -- and at the cost of one new session per period, not one per probe.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from support import Hook, until_async

from failsoft.probes.base import Verdict
from failsoft.probes.postgres import PostgresOptions, PostgresProbe

TIMEOUT = 2.0


def make_probe(dsn: str, period: float) -> PostgresProbe:
    """A probe with a session check every ``period`` seconds."""
    return PostgresProbe(PostgresOptions(dsn), TIMEOUT, Hook().hooks(), session_check_period=period)


@contextlib.asynccontextmanager
async def filled(server: Any) -> AsyncIterator[list[asyncpg.Connection]]:
    """Open sessions until the server refuses one with "too many clients"; close them all on exit."""
    held: list[asyncpg.Connection] = []
    try:
        while True:
            try:
                held.append(await asyncpg.connect(server.dsn, timeout=10))
            except asyncpg.TooManyConnectionsError:
                break
            assert len(held) < 500, "the server never refused a session"
        yield held
    finally:
        for conn in held:
            conn.terminate()


async def test_a_running_probe_sees_a_full_server_as_degraded_and_its_recovery(own_postgres: Any) -> None:
    """OK before; once the server is full, degraded/too_many_connections within the period (1 s here) while its
    own query still works; OK again once sessions are admitted."""
    probe = make_probe(own_postgres.dsn, period=1.0)
    try:
        assert (await probe.check()).verdict is Verdict.OK
        async with filled(own_postgres) as held:
            outcome = await until_async(
                lambda: _with_verdict(probe, Verdict.DEGRADED), 10, "the full server to be seen")
            assert outcome.reason == "too_many_connections"
            assert "too many clients" in (outcome.error or "")
            assert len(held) > 5
        outcome = await until_async(lambda: _with_verdict(probe, Verdict.OK), 10, "admitted again")
    finally:
        await probe.aclose()


async def test_a_new_probe_gets_the_same_verdict_as_a_running_one(own_postgres: Any) -> None:
    """A probe that starts while the server is full cannot connect at all, and says the same as a running one:
    degraded/too_many_connections, not down -- two replicas publish the same for one database."""
    async with filled(own_postgres):
        probe = make_probe(own_postgres.dsn, period=1.0)
        try:
            outcome = await probe.check()
        finally:
            await probe.aclose()
    assert (outcome.verdict, outcome.reason) == (Verdict.DEGRADED, "too_many_connections")


async def _with_verdict(probe: PostgresProbe, verdict: Verdict) -> Any:
    outcome = await probe.check()
    return outcome if outcome.verdict is verdict else None


async def test_session_checks_cost_one_new_session_per_period_not_one_per_probe(own_postgres: Any) -> None:
    """With log_connections=on, 20 checks in quick succession make the server log one new session (the kept
    connection's) plus at most one check's, not 20 (the SSLRequest check forked a backend on every probe)."""
    async with _admin(own_postgres) as admin:
        await admin.execute("ALTER SYSTEM SET log_connections = on")
        await admin.execute("SELECT pg_reload_conf()")
    before = own_postgres.log.read_text(errors="replace").count("connection received")
    probe = make_probe(own_postgres.dsn, period=60.0)
    try:
        for _ in range(20):
            assert (await probe.check()).verdict is Verdict.OK
    finally:
        await probe.aclose()
    received = own_postgres.log.read_text(errors="replace").count("connection received") - before
    print(f"\n  20 checks: {received} new connections logged by the server")
    assert 1 <= received <= 2


@contextlib.asynccontextmanager
async def _admin(server: Any) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(server.dsn, timeout=10)
    try:
        yield conn
    finally:
        await conn.close(timeout=5)


@pytest.mark.parametrize(("sqlstate", "reason"), [("53300", "too_many_connections"), ("57P03", "starting_up"),
                                                  ("55000", "not_accepting_connections"), ("28P01", None)])
def test_refusals_are_a_table(sqlstate: str, reason: str | None) -> None:
    """The SQLSTATEs that mean "no new session" map to their reasons; an auth error is not a refusal."""
    from failsoft.policies.classify import postgres_refusal

    assert postgres_refusal(sqlstate) == reason
