"""failsoft.probes.postgres against real PostgreSQL servers: the query, the role, the kept connection and its drops."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import asyncpg
import pytest
from support import Hook, make_server, until_async

from failsoft.daemon.breaker import Breaker
from failsoft.daemon.clock import SystemClock
from failsoft.daemon.config import ProbeSettings
from failsoft.daemon.redact import Redactor
from failsoft.daemon.scheduler import DependencyScheduler
from failsoft.devtools.localservers import PostgresServer, ServerError, free_port
from failsoft.policies.classify import exception_reason
from failsoft.probes.base import OK, Outcome, ProbeFailure, ProbeHooks, Verdict
from failsoft.probes.postgres import PostgresOptions, PostgresProbe

TIMEOUT = 2.0
T = TypeVar("T")





def make_probe(dsn: str, hook: Hook | None = None, **options: Any) -> PostgresProbe:
    """A probe with the test deadline."""
    return PostgresProbe(PostgresOptions(dsn, **options), TIMEOUT, (hook or Hook()).hooks())


@contextlib.asynccontextmanager
async def admin(server: Any) -> AsyncIterator[asyncpg.Connection]:
    """A separate connection for looking at (and acting on) the server from the outside."""
    conn = await asyncpg.connect(server.dsn, timeout=10)
    try:
        yield conn
    finally:
        await conn.close(timeout=5)


async def failsoft_backends(conn: asyncpg.Connection) -> set[int]:
    """Backend pids of connections named ``failsoft`` (the probe's application_name)."""
    rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = 'failsoft'")
    return {r["pid"] for r in rows}


async def test_a_real_query_on_a_primary_is_ok(postgres: Any) -> None:
    """Against a healthy primary the probe answers OK (role primary is the default)."""
    probe = make_probe(postgres.dsn)
    try:
        assert await probe.check() == OK
        assert await make_probe(postgres.dsn, role="any").check() == OK
    finally:
        await probe.aclose()


async def test_one_monitoring_connection_is_kept_across_checks(postgres: Any) -> None:
    """Checks reuse one connection: a single backend, the same pid, check after check."""
    async with admin(postgres) as conn:
        before = await failsoft_backends(conn)
        probe = make_probe(postgres.dsn)
        try:
            await probe.check()
            new = await failsoft_backends(conn) - before
            assert len(new) == 1
            for _ in range(5):
                assert await probe.check() == OK
            assert await failsoft_backends(conn) - before == new
        finally:
            await probe.aclose()


async def test_a_dropped_connection_fires_the_hook_and_the_next_check_reconnects(postgres: Any) -> None:
    """The server ending the probe's backend calls connection_lost at once; the next check reconnects (new pid)."""
    hook = Hook()
    async with admin(postgres) as conn:
        before = await failsoft_backends(conn)
        probe = make_probe(postgres.dsn, hook)
        try:
            await probe.check()
            (pid,) = await failsoft_backends(conn) - before
            await conn.execute("SELECT pg_terminate_backend($1)", pid)
            await asyncio.wait_for(hook.fired.wait(), 5)
            assert await probe.check() == OK
            (new_pid,) = await failsoft_backends(conn) - before
            assert new_pid != pid
            assert hook.count == 1
        finally:
            await probe.aclose()


async def test_closing_the_probe_does_not_fire_the_hook(postgres: Any) -> None:
    """aclose() terminates the kept connection without reporting it as lost (that would trigger a re-probe)."""
    hook = Hook()
    async with admin(postgres) as conn:
        before = await failsoft_backends(conn)
        probe = make_probe(postgres.dsn, hook)
        await probe.check()
        mine = await failsoft_backends(conn) - before
        await probe.aclose()
        # Once the server has seen the connection go, any (wrong) callback of ours has long had its turn.
        await until_async(lambda: _gone(conn, mine), 10, "the probe's backend to end")
    assert hook.count == 0


async def _gone(conn: asyncpg.Connection, pids: set[int]) -> bool:
    return not (await failsoft_backends(conn)) & pids


async def test_a_wrong_password_is_fatal_auth(postgres: Any) -> None:
    """Authentication failures will not heal by waiting: fatal, reason auth, and the password is not in the text."""
    probe = make_probe(postgres.dsn.replace(postgres.password, "not-the-password"))
    with pytest.raises(ProbeFailure) as caught:
        await probe.check()
    assert exception_reason(caught.value) == ("auth", True)
    assert "not-the-password" not in str(caught.value)
    await probe.aclose()


async def test_a_missing_database_is_fatal_misconfigured(postgres: Any) -> None:
    """A DSN naming a database that does not exist is a configuration problem: fatal, misconfigured."""
    probe = make_probe(postgres.dsn.rsplit("/", 1)[0] + "/no_such_database")
    with pytest.raises(ProbeFailure) as caught:
        await probe.check()
    assert exception_reason(caught.value) == ("misconfigured", True)
    await probe.aclose()


async def test_a_closed_port_is_connection_refused() -> None:
    """Nothing listening: a plain failure with reason connection_refused (not a timeout)."""
    probe = make_probe(f"postgresql://failsoft:pw@127.0.0.1:{free_port()}/postgres")
    with pytest.raises(OSError) as caught:
        await asyncio.wait_for(probe.check(), 30)
    assert exception_reason(caught.value) == ("connection_refused", False)


async def test_killing_the_server_fires_the_hook_and_restart_heals(own_postgres: Any) -> None:
    """kill -9 of the server: connection_lost fires at once, checks then fail as connection_refused, and after a
    restart the probe reconnects by itself."""
    hook = Hook()
    probe = make_probe(own_postgres.dsn, hook)
    try:
        assert await probe.check() == OK
        killed = time.monotonic()
        own_postgres.kill()
        await asyncio.wait_for(hook.fired.wait(), 5)
        print(f"connection_lost {1000 * (time.monotonic() - killed):.0f} ms after kill -9")
        with pytest.raises(OSError) as caught:
            await probe.check()
        assert exception_reason(caught.value)[0] == "connection_refused"
        own_postgres.start()
        assert await probe.check() == OK
    finally:
        await probe.aclose()


async def test_a_hung_server_times_out_promptly_and_the_probe_stays_usable(own_postgres: Any) -> None:
    """SIGSTOP: the scheduler's deadline gives a timeout outcome; after SIGCONT the same probe works."""
    settings = ProbeSettings(timeout=0.5)
    holder: list[PostgresProbe] = []

    def factory(wake: Any) -> PostgresProbe:
        holder.append(PostgresProbe(PostgresOptions(own_postgres.dsn), settings.timeout, ProbeHooks(wake)))
        return holder[0]

    scheduler = DependencyScheduler(Breaker("db", "postgres", settings), factory, lambda _: None, SystemClock(),
                                    Redactor([own_postgres.password]))
    try:
        assert (await scheduler.probe_once())[0] == OK
        own_postgres.pause()
        try:
            for _ in range(2):  # a hung kept connection, then a hung new connection
                # The scheduler's deadline answered (reason timeout), not the hung server.
                outcome, _ = await asyncio.wait_for(scheduler.probe_once(), 30)
                assert (outcome.verdict, outcome.reason) == (Verdict.FAILURE, "timeout")
        finally:
            own_postgres.resume()
        await until_async(lambda: _ok(scheduler), 10, "an OK probe after SIGCONT")
    finally:
        await scheduler.aclose()


async def _ok(scheduler: DependencyScheduler) -> bool:
    return (await scheduler.probe_once())[0] == OK


# -- a real standby ------------------------------------------------------------------------------------


class StandbyServer(PostgresServer):
    """A streaming replica of ``primary``: pg_basebackup -R into a temporary directory, then started on its
    own port as the same unprivileged user (standby.signal makes it a hot standby)."""

    name = "postgres-standby"

    def __init__(self, primary: PostgresServer) -> None:
        super().__init__(password=primary.password)
        self.primary = primary

    def _init(self) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        result = subprocess.run(
            [str(self.bindir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "failsoft",
             "-D", str(self.data), "-R", "-X", "stream", "--checkpoint=fast", "--no-sync"],
            capture_output=True, user=self.user, cwd=self.dir, check=False, timeout=60,
            env={**os.environ, "PGPASSWORD": self.primary.password},
        )
        if result.returncode != 0:
            raise ServerError(f"pg_basebackup failed: {result.stderr.decode(errors='replace')[-2000:]}")
        self._initialised = True


@pytest.fixture(scope="module")
def standby() -> Iterator[StandbyServer]:
    """A primary of its own and a hot standby streaming from it, shared by the tests of this module."""
    primary = make_server("postgres")
    try:
        if not isinstance(primary, PostgresServer):
            pytest.skip("the standby is built from the local PostgreSQL binaries")
        server = StandbyServer(primary)
        try:
            server.start()
            yield server
        finally:
            server.close()
    finally:
        primary.close()


async def test_roles_against_a_real_standby(standby: StandbyServer) -> None:
    """A server in recovery is degraded/read_only for role primary. For role replica (or any): while the standby
    has replayed no transaction since it started its lag is unknown, so it is degraded/replication_lag_unknown
    (healthy with ``unknown_lag: healthy``); once it has replayed one it is OK with its lag published (0 when
    caught up)."""
    primary_probe = make_probe(standby.dsn, role="primary")
    replica_probe = make_probe(standby.dsn, role="replica")
    lenient = make_probe(standby.dsn, role="replica", unknown_lag="healthy")
    try:
        outcome = await primary_probe.check()
        assert (outcome.verdict, outcome.reason) == (Verdict.DEGRADED, "read_only")
        async with admin(standby) as replica:
            assert await replica.fetchval("SELECT pg_last_xact_replay_timestamp() IS NULL")  # the fresh standby
        outcome = await replica_probe.check()
        assert (outcome.verdict, outcome.reason) == (Verdict.DEGRADED, "replication_lag_unknown")
        assert (await make_probe(standby.dsn, role="any").check()).reason == "replication_lag_unknown"
        assert await lenient.check() == OK

        async with admin(standby.primary) as primary, admin(standby) as replica:
            await primary.execute("CREATE TABLE IF NOT EXISTS first_write (x int); INSERT INTO first_write VALUES (1)")
            await until_async(lambda: replica.fetchval("SELECT pg_last_xact_replay_timestamp() IS NOT NULL"), 20,
                              "the standby to replay a first transaction")
        outcome = await until_async(lambda: _caught_up(replica_probe), 20, "the replica to be caught up")
        assert outcome.verdict is Verdict.OK
        assert outcome.details["replication_lag_s"] == 0
        assert (await make_probe(standby.dsn, role="any").check()).verdict is Verdict.OK
    finally:
        await primary_probe.aclose()
        await replica_probe.aclose()
        await lenient.aclose()


async def _caught_up(probe: PostgresProbe) -> Outcome | None:
    outcome = await probe.check()
    return outcome if outcome.details.get("replication_lag_s") == 0 else None


async def test_replication_lag_beyond_the_limit_is_degraded(standby: StandbyServer) -> None:
    """Replay paused on the standby while the primary writes: once the lag passes max_replication_lag the
    replica is degraded with reason replication_lag and the figure."""
    async with admin(standby.primary) as primary, admin(standby) as replica:
        await primary.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        await until_async(lambda: replica.fetchval("SELECT pg_last_xact_replay_timestamp() IS NOT NULL"), 20,
                         "the standby to replay a first transaction")
        await replica.execute("SELECT pg_wal_replay_pause()")
        await primary.execute("INSERT INTO t VALUES (2)")
        probe = make_probe(standby.dsn, role="replica", max_replication_lag=0.5)
        try:
            outcome = await until_async(lambda: _degraded(probe), 15, "the lag to pass 0.5s")
            assert (outcome.verdict, outcome.reason) == (Verdict.DEGRADED, "replication_lag")
            assert outcome.details["replication_lag_s"] > 0.5
        finally:
            await probe.aclose()
            await replica.execute("SELECT pg_wal_replay_resume()")


async def _degraded(probe: PostgresProbe) -> Outcome | None:
    outcome = await probe.check()
    return outcome if outcome.verdict is Verdict.DEGRADED else None


async def _failure(probe: PostgresProbe) -> BaseException | None:
    """The exception a check raises, or None if it passes (bounded, as the scheduler's deadline would)."""
    try:
        await asyncio.wait_for(probe.check(), TIMEOUT + 1)
    except Exception as exc:
        return exc
    return None


async def test_a_stopped_postmaster_is_a_hang_even_though_the_kept_connection_answers(own_postgres: Any) -> None:
    """SIGSTOP to the postmaster alone (the pid in postmaster.pid): the kept connection's backend lives on and
    answers, but no new client gets in. The check must not report that server as fine: the new session started
    beside a check times out, and the next check fails with reason timeout; once the postmaster resumes it
    passes again. (With a session check on every probe here; the default period is covered in
    test_postgres_sessions.py.)"""
    if not hasattr(own_postgres, "proc"):
        pytest.skip("needs a local postmaster process to stop (containers pause as a whole)")
    probe = PostgresProbe(PostgresOptions(own_postgres.dsn), TIMEOUT, Hook().hooks(), session_check_period=0)
    try:
        assert (await probe.check()).verdict is Verdict.OK
        os.kill(own_postgres.proc.pid, signal.SIGSTOP)
        try:
            failure = await until_async(lambda: _failure(probe), 10, "a check to fail while the postmaster is stopped")
            assert exception_reason(failure) == ("timeout", False)
        finally:
            os.kill(own_postgres.proc.pid, signal.SIGCONT)
        outcome = await until_async(probe.check, 10, "the check to pass again after SIGCONT")
        assert outcome.verdict is Verdict.OK
    finally:
        await probe.aclose()
