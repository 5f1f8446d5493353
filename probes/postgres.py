"""``kind: postgres``: one kept monitoring connection, a real query, the role and the replication lag."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from probes.base import OK, Outcome, ProbeFailure, ProbeHooks, degraded
from probes.options import Duration

# Lag is 0 when the replica has replayed all it received: on an idle primary the last replay timestamp
# grows old without the replica being behind, so age alone would cry wolf.
QUERY = """
SELECT 1 AS ok,
       pg_is_in_recovery() AS in_recovery,
       CASE WHEN NOT pg_is_in_recovery() THEN NULL
            WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())
       END AS lag_s
"""

_AUTH_ERRORS = (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)


@dataclass(frozen=True, slots=True)
class PostgresOptions:
    """``dsn``, ``role`` and, for replicas, ``max_replication_lag``."""

    dsn: str
    role: Literal["primary", "replica", "any"] = "primary"
    max_replication_lag: Duration = 10.0

    def problems(self) -> list[tuple[str, str]]:
        """Config errors as (key, message)."""
        if not self.dsn.startswith(("postgres://", "postgresql://")):
            return [("dsn", "expected a URL starting with postgresql:// or postgres://")]
        return []


class PostgresProbe:
    """Keeps one connection; a drop between checks calls ``hooks.connection_lost`` for an immediate re-probe."""

    def __init__(self, options: PostgresOptions, timeout: float, hooks: ProbeHooks) -> None:
        self._options = options
        self._timeout = timeout
        self._hooks = hooks
        self._conn: Any = None

    async def check(self) -> Outcome:
        """Run the query on the kept connection, connecting first if needed."""
        try:
            conn = self._conn
            if conn is None or conn.is_closed():
                conn = await self._connect()
            row = await conn.fetchrow(QUERY, timeout=self._timeout)
        except asyncpg.ConnectionDoesNotExistError as exc:
            self._drop()
            raise ProbeFailure("connection_closed", str(exc)) from exc
        except BaseException:  # includes the scheduler's cancellation at the deadline
            self._drop()
            raise
        return self._judge(row["in_recovery"], row["lag_s"])

    async def _connect(self) -> Any:
        self._drop()
        try:
            conn = await asyncpg.connect(
                self._options.dsn,
                timeout=self._timeout,
                command_timeout=self._timeout,
                server_settings={"application_name": "failsoft"},
            )
        except _AUTH_ERRORS as exc:
            raise ProbeFailure("auth", f"authentication failed: {exc}", fatal=True) from exc
        except asyncpg.InvalidCatalogNameError as exc:
            raise ProbeFailure("misconfigured", str(exc), fatal=True) from exc
        except asyncpg.TooManyConnectionsError as exc:
            raise ProbeFailure("too_many_connections", str(exc)) from exc
        except asyncpg.CannotConnectNowError as exc:
            raise ProbeFailure("starting_up", str(exc)) from exc
        conn.add_termination_listener(self._on_terminated)
        self._conn = conn
        return conn

    def _judge(self, in_recovery: bool, lag_s: Any) -> Outcome:
        role = self._options.role
        if role == "primary" and in_recovery:
            return degraded("read_only", "the server is in recovery (a read-only standby)")
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
        """Terminate the kept connection."""
        self._drop()
