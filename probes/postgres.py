"""``kind: postgres``: one kept monitoring connection, a real query, the role and the replication lag."""

from __future__ import annotations

import asyncio
import ssl
import struct
import urllib.parse
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

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
# The SSLRequest message: length 8, code 80877103. The server answers one byte, S or N, before any startup packet.
SSL_REQUEST = struct.pack("!ii", 8, 80877103)


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
    """Keeps one connection; a drop between checks calls ``hooks.connection_lost`` for an immediate re-probe."""

    def __init__(self, options: PostgresOptions, timeout: float, hooks: ProbeHooks) -> None:
        self._options = options
        self._timeout = timeout
        self._hooks = hooks
        self._conn: Any = None
        self._address = listen_address(options.dsn)

    async def check(self) -> Outcome:
        """Run the query on the kept connection (connecting first if needed) and, at the same time, make sure
        the server still accepts new clients."""
        try:
            conn = self._conn
            if conn is None or conn.is_closed():
                conn = await self._connect()
            row, _ = await asyncio.gather(conn.fetchrow(QUERY, timeout=self._timeout), self._accepts_clients())
        except asyncpg.ConnectionDoesNotExistError as exc:
            self._drop()
            raise ProbeFailure("connection_closed", str(exc)) from exc
        except BaseException:  # includes the scheduler's cancellation at the deadline
            self._drop()
            raise
        return self._judge(row["in_recovery"], row["lag_s"], lag_known=row["lag_known"])

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

    async def _accepts_clients(self) -> None:
        """One SSLRequest round trip on a new connection, as pg_isready-style checks do.

        The kept connection's backend outlives a stopped or wedged postmaster and keeps answering, while no new
        client gets in: the postmaster must accept and fork to answer this. After the answer the client leaves
        before sending a startup packet (after a TLS handshake when the answer is S), which the server does not
        log.
        """
        if self._address is None:
            return
        host, port = self._address
        if host.startswith("/"):
            reader, writer = await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        else:
            reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(SSL_REQUEST)
            answer = await reader.readexactly(1)
            if answer == b"S":
                await writer.start_tls(_NO_VERIFY)  # only to leave politely: nothing is sent over it
            elif answer != b"N":
                raise ProbeFailure("bad_response", f"the server answered {answer!r} to an SSLRequest")
        finally:
            writer.close()

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
        """Terminate the kept connection."""
        self._drop()


def listen_address(dsn: str) -> tuple[str, int] | None:
    """(host or socket directory, port) of the first host in a ``postgresql://`` DSN, or None if it has none."""
    try:
        url = urllib.parse.urlsplit(dsn)
    except ValueError:
        return None
    first = url.netloc.rpartition("@")[2].split(",")[0]  # libpq allows host1:port1,host2:port2
    if first.startswith("["):
        host, _, rest = first[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = first.partition(":")
    query = urllib.parse.parse_qs(url.query)
    host = (query.get("host") or [urllib.parse.unquote(host)])[0].split(",")[0]
    port_text = (query.get("port") or [port_text or "5432"])[0].split(",")[0]
    if not host or not port_text.isdigit():
        return None
    return host, int(port_text)


def _no_verify_context() -> ssl.SSLContext:
    # The TLS session carries no data and no credentials: it exists only so that the server sees a clean goodbye.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


_NO_VERIFY = _no_verify_context()
