"""``kind: postgres``: one kept monitoring connection, a real query, the role and the replication lag, and a
periodic new session to see that the server still admits clients."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from failsoft.daemon.limits import POSTGRES_SESSION_CHECK_PERIOD
from failsoft.policies.classify import (
    POSTGRES_REFUSALS_DEGRADED_ALONE,
    error_text,
    exception_reason,
    postgres_refusal,
)
from failsoft.probes.base import OK, Outcome, ProbeFailure, ProbeHooks, degraded
from failsoft.probes.options import Duration

# Lag is 0 when the replica has replayed all it received: on an idle primary the last replay timestamp
# grows old without the replica being behind, so age alone would cry wolf. A replica that has replayed no
# transaction since it started (pg_last_xact_replay_timestamp() is NULL) cannot say how far behind it is:
# lag_known is false then, and ``unknown_lag`` decides.
QUERY = """
SELECT 1 AS ok,
       pg_is_in_recovery() AS in_recovery,
       pg_last_xact_replay_timestamp() IS NOT NULL AS lag_known,
       CASE WHEN NOT pg_is_in_recovery() THEN NULL
            WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())
       END AS lag_s
"""

_AUTH_ERRORS = (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)


class SessionRefused(Exception):
    """The server answered a new session's startup with a refusal (``too many clients already``, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PostgresOptions:
    """``dsn``, ``role`` and, for replicas, ``max_replication_lag`` and ``unknown_lag`` (what a replica that has
    replayed no transaction yet, so whose lag is unknown, counts as)."""

    dsn: str
    role: Literal["primary", "replica", "any"] = "primary"
    max_replication_lag: Duration = 10.0
    unknown_lag: Literal["degraded", "healthy"] = "degraded"

    def problems(self) -> list[tuple[str, str]]:
        """Config errors as (key, message)."""
        if not self.dsn.startswith(("postgres://", "postgresql://")):
            return [("dsn", "expected a URL starting with postgresql:// or postgres://")]
        return []


class PostgresProbe:
    """Keeps one connection; a drop between checks calls ``hooks.connection_lost`` for an immediate re-probe.

    The kept connection cannot see that the server refuses new sessions (``max_connections`` reached, a
    postmaster that is stopped while its old backends answer): so every ``session_check_period`` seconds a check
    also starts opening a whole new session (startup, authentication, goodbye) beside it, and the next check
    reports what came of it. It runs beside the checks, not inside one, so its cost (a backend fork, a password
    exchange: a few round trips) never counts in the probe's latency. A refusal is ``degraded`` (reason
    ``too_many_connections`` and the like: the server is up and its sessions work, but no new client gets in); a
    session that cannot be opened at all (refused, timed out) fails the check. After either, every check starts
    one until one succeeds, so the failures are consecutive and the recovery is seen at once. The cost: one new
    session per period (and, with ``log_connections=on``, the server's log lines for it), not one per probe.
    """

    def __init__(self, options: PostgresOptions, timeout: float, hooks: ProbeHooks,
                 session_check_period: float = POSTGRES_SESSION_CHECK_PERIOD) -> None:
        self._options = options
        self._timeout = timeout
        self._hooks = hooks
        self._conn: Any = None
        self._session_check_period = session_check_period
        self._next_session_check = 0.0  # time.monotonic(); 0: at the first check
        self._session_check: asyncio.Task[Outcome | None] | None = None
        self._refusal: Outcome | None = None  # the last session check's refusal, until one is admitted

    async def check(self) -> Outcome:
        """Run the query on the kept connection (connecting first if needed); report the last new-session check
        and start the next one when it is due."""
        try:
            conn = self._conn
            if conn is None or conn.is_closed():
                conn = await self._connect()
            failure = self._session_check_result()
            self._start_session_check()
            row = await conn.fetchrow(QUERY, timeout=self._timeout)
        except SessionRefused as exc:  # no session at all: only a full server is still "up" (see classify)
            if exc.reason in POSTGRES_REFUSALS_DEGRADED_ALONE:
                return degraded(exc.reason, str(exc))
            raise ProbeFailure(exc.reason, str(exc)) from exc
        except asyncpg.ConnectionDoesNotExistError as exc:
            self._drop()
            raise ProbeFailure("connection_closed", str(exc)) from exc
        except BaseException:  # includes the scheduler's cancellation at the deadline
            self._drop()
            raise
        if failure is not None:
            reason, fatal = exception_reason(failure)  # a changed password is as fatal here as when connecting
            raise ProbeFailure(reason, f"a new session could not be opened: {error_text(failure)}",
                               fatal=fatal) from failure
        outcome = self._judge(row["in_recovery"], row["lag_s"], lag_known=row["lag_known"])
        return self._refusal if self._refusal is not None and outcome.verdict is OK.verdict else outcome

    def _session_check_result(self) -> BaseException | None:
        """Take the finished session check's result: keep its refusal, return its failure (None if it passed)."""
        task = self._session_check
        if task is None or not task.done():
            return None
        self._session_check = None
        if task.cancelled():
            return None
        if (exc := task.exception()) is not None:
            return exc
        self._refusal = task.result()
        return None

    def _start_session_check(self) -> None:
        if self._session_check is None and time.monotonic() >= self._next_session_check:
            self._session_check = asyncio.get_running_loop().create_task(self._admits_new_sessions(),
                                                                         name="postgres-session-check")

    async def _open(self, application_name: str) -> Any:
        """A new session; ProbeFailure (auth, a missing database: fatal) or SessionRefused if not admitted."""
        try:
            return await asyncpg.connect(
                self._options.dsn,
                timeout=self._timeout,
                command_timeout=self._timeout,
                server_settings={"application_name": application_name},
            )
        except _AUTH_ERRORS as exc:
            raise ProbeFailure("auth", f"authentication failed: {exc}", fatal=True) from exc
        except asyncpg.InvalidCatalogNameError as exc:
            raise ProbeFailure("misconfigured", str(exc), fatal=True) from exc
        except asyncpg.PostgresError as exc:
            reason = postgres_refusal(str(getattr(exc, "sqlstate", "") or ""))
            if reason is None:
                raise
            raise SessionRefused(reason, f"the server admits no new session: {exc}") from exc

    async def _connect(self) -> Any:
        self._drop()
        conn = await self._open("failsoft")
        conn.add_termination_listener(self._on_terminated)
        self._conn = conn
        self._refusal = None  # it just admitted one
        self._next_session_check = time.monotonic() + self._session_check_period
        return conn

    async def _admits_new_sessions(self) -> Outcome | None:
        """None when a new session is admitted; ``degraded`` when refused. Raises when none can be opened (a
        timeout included). After a refusal or a failure the next check starts another at once."""
        self._next_session_check = float("inf")  # no other one while this one runs
        admitted = False
        try:
            async with asyncio.timeout(self._timeout):
                try:
                    conn = await self._open("failsoft-session-check")
                except SessionRefused as exc:
                    return degraded(exc.reason, str(exc))
            admitted = True
            try:
                await conn.close(timeout=self._timeout)  # a goodbye: the server logs no "unexpected EOF"
            except (OSError, TimeoutError, asyncpg.PostgresError):
                conn.terminate()
            return None
        finally:
            self._next_session_check = time.monotonic() + self._session_check_period if admitted else 0.0

    def _judge(self, in_recovery: bool, lag_s: Any, *, lag_known: bool = True) -> Outcome:
        role = self._options.role
        if role == "primary" and in_recovery:
            return degraded("read_only", "the server is in recovery (a read-only standby)")
        if in_recovery and role != "primary" and not lag_known:
            if self._options.unknown_lag == "healthy":
                return OK
            return degraded("replication_lag_unknown",
                            "the replica has replayed no transaction since it started: its lag is unknown")
        if in_recovery and role != "primary" and lag_s is not None:
            lag = float(lag_s)
            if lag > self._options.max_replication_lag:
                return degraded("replication_lag", f"replica is {lag:.1f}s behind", replication_lag_s=round(lag, 3))
            return Outcome(OK.verdict, details={"replication_lag_s": round(lag, 3)})
        return OK

    def _on_terminated(self, conn: Any) -> None:
        if conn is self._conn:  # a drop we did not cause
            self._conn = None
            self._hooks.connection_lost()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.remove_termination_listener(self._on_terminated)
            conn.terminate()  # never await a graceful close: it can hang on a stopped server

    async def aclose(self) -> None:
        """Terminate the kept connection and stop a session check under way."""
        self._drop()
        task, self._session_check = self._session_check, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
