"""failsoft.probes.redis against real redis-server processes: PING+INFO, no retries, roles, and the watch connection."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
from redis.asyncio import Redis
from support import SECRETS, Hook, until, until_async

from failsoft.devtools.localservers import RedisServer, free_port
from failsoft.policies.classify import exception_reason
from failsoft.probes.base import OK, ProbeFailure, ProbeHooks, Verdict
from failsoft.probes.redis import RedisOptions, RedisProbe

T = TypeVar("T")




def make_probe(url: str, hook: Hook | None = None, timeout: float = 1.0, **options: Any) -> RedisProbe:
    """A probe with a deadline of ``timeout`` seconds."""
    return RedisProbe(RedisOptions(url, **options), timeout, ProbeHooks(connection_lost=hook or Hook()))



async def test_ping_and_info_on_a_primary_is_ok(redis_server: Any) -> None:
    """A healthy primary answers OK (role primary is the default), check after check."""
    probe = make_probe(redis_server.url)
    try:
        assert await probe.check() == OK
        assert await probe.check() == OK
    finally:
        await probe.aclose()


async def test_an_acl_user_allowed_only_ping_is_healthy(redis_server: Any) -> None:
    """A least-privilege user that may run PING and nothing else (no CLIENT SETNAME, INFO or SUBSCRIBE) is a
    healthy dependency: INFO and the watch connection are refinements, PING is the health check."""
    admin = Redis.from_url(redis_server.url)
    password = "ping-only-" + os.urandom(4).hex()
    SECRETS.add(password)
    await admin.execute_command("ACL", "SETUSER", "ping_only", "on", f">{password}", "+ping", "resetchannels")
    probe = make_probe(f"redis://ping_only:{password}@127.0.0.1:{redis_server.port}/0")
    try:
        for _ in range(3):  # the denied INFO and SUBSCRIBE are remembered, not retried into errors
            assert (await probe.check()).verdict is Verdict.OK
        await until(lambda: probe._watch is not None and probe._watch.done(), 5, "the refused SUBSCRIBE")
        assert probe._watch is not None and probe._watch.exception() is None  # ended quietly, nothing unretrieved
        assert (await probe.check()).verdict is Verdict.OK
        assert probe._watch.done()  # and it is not started again
    finally:
        await probe.aclose()
        await admin.execute_command("ACL", "DELUSER", "ping_only")
        await admin.aclose()


async def test_a_wrong_password_is_fatal_auth(redis_server: Any) -> None:
    """A refused password is fatal (it will not heal by waiting) and the password is not in the text."""
    probe = make_probe(redis_server.url.replace(redis_server.password, "not-the-password"))
    try:
        with pytest.raises(ProbeFailure) as caught:
            await probe.check()
        assert exception_reason(caught.value) == ("auth", True)
        assert "not-the-password" not in str(caught.value)
    finally:
        await probe.aclose()


async def test_a_closed_port_fails_at_once_as_connection_refused() -> None:
    """Nothing listening: the probe fails with connection_refused (not a timeout)."""
    probe = make_probe(f"redis://127.0.0.1:{free_port()}/0", timeout=2.0)
    try:
        with pytest.raises(Exception) as caught:
            await asyncio.wait_for(probe.check(), 30)
        assert exception_reason(caught.value) == ("connection_refused", False)
    finally:
        await probe.aclose()


class SilentServer:
    """A TCP server that accepts connections, reads, and never answers (a hung Redis); it counts connections."""

    def __init__(self) -> None:
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                pass

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *_: object) -> None:
        for w in self._writers:
            w.close()
        assert self.server is not None
        self.server.close()


async def test_a_hung_server_costs_one_connection_per_check_not_retries() -> None:
    """A server that never answers: each check gives up after its one socket deadline and does not reconnect to
    try again (redis-py's default retries would open a new connection per attempt)."""
    silent = SilentServer()
    async with silent as port:
        probe = make_probe(f"redis://127.0.0.1:{port}/0", timeout=0.3)
        try:
            for expected in (1, 2):
                with pytest.raises(Exception) as caught:
                    await asyncio.wait_for(probe.check(), 30)
                assert exception_reason(caught.value)[0] == "timeout"
                assert silent.connections == expected
        finally:
            await probe.aclose()


async def test_a_hung_server_answers_within_one_deadline_not_after_retries(own_redis: Any) -> None:
    """SIGSTOP: the probe itself gives up with reason timeout (its socket deadline; that it makes no retries is
    checked against a silent server above)."""
    probe = make_probe(own_redis.url, timeout=0.5)
    try:
        assert await probe.check() == OK
        own_redis.pause()
        try:
            with pytest.raises(Exception) as caught:
                await asyncio.wait_for(probe.check(), 30)
            assert exception_reason(caught.value)[0] == "timeout"
        finally:
            own_redis.resume()
        assert await until_async(lambda: _is_ok(probe), 5, "OK after SIGCONT")
    finally:
        await probe.aclose()


async def test_killing_the_server_fires_the_watch_hook(own_redis: Any) -> None:
    """The watch connection notices the crash between checks and calls connection_lost at once."""
    hook = Hook()
    probe = make_probe(own_redis.url, hook)
    try:
        assert await probe.check() == OK
        await _watch_subscribed(own_redis)
        killed = time.monotonic()
        own_redis.kill()
        await asyncio.wait_for(hook.fired.wait(), 5)
        print(f"connection_lost {1000 * (time.monotonic() - killed):.0f} ms after kill -9")
        with pytest.raises(Exception) as caught:
            await probe.check()
        # The kept connection found closed is checked again on a new one, which is refused: the crash's proof.
        assert exception_reason(caught.value)[0] == "connection_refused"
        own_redis.start()
        assert await until_async(lambda: _is_ok(probe), 5, "OK after the restart")
    finally:
        await probe.aclose()


async def test_a_kept_connection_the_server_closed_is_checked_again_on_a_new_one(redis_server: Any) -> None:
    """CLIENT KILL of the probe's connection (the server is fine): the next check is OK, made on a new connection,
    instead of a connection_closed failure that would say nothing about the server."""
    probe = make_probe(redis_server.url)
    admin = Redis.from_url(redis_server.url)
    try:
        assert await probe.check() == OK
        killed = 0
        for client in await admin.client_list():
            if client["name"] == "" and client["cmd"] in ("info", "ping"):
                killed += await admin.client_kill_filter(_id=client["id"])
        assert killed >= 1
        assert await probe.check() == OK
    finally:
        await probe.aclose()
        await admin.aclose()


async def test_closing_the_probe_does_not_fire_the_hook(own_redis: Any) -> None:
    """aclose() stops the watch without reporting a lost connection."""
    hook = Hook()
    probe = make_probe(own_redis.url, hook)
    await probe.check()
    await _watch_subscribed(own_redis)
    await probe.aclose()
    # Once the server has seen both connections go, any (wrong) callback of ours has long had its turn.
    client = Redis.from_url(own_redis.url)
    try:
        await until_async(lambda: _only_this_client(client), 10, "the probe's connections to close")
    finally:
        await client.aclose()
    assert hook.count == 0


async def _only_this_client(client: Redis) -> bool:
    """The server (this test's own) has no connection left but ``client``'s: the probe's two are closed."""
    me = await client.client_id()
    return all(int(c["id"]) == me for c in await client.client_list())


@pytest.fixture
def replica(own_redis: Any) -> Iterator[RedisServer]:
    """A second redis-server made a replica of ``own_redis`` (REPLICAOF, with the primary's password)."""
    if not isinstance(own_redis, RedisServer):
        pytest.skip("the replica is started from the local redis-server binary")
    server = RedisServer(password=own_redis.password)
    server.start()
    try:
        yield server
    finally:
        server.close()


async def test_roles_against_a_real_replica(own_redis: Any, replica: RedisServer) -> None:
    """A replica is degraded/read_only where a primary is wanted, and OK for role replica or any."""
    primary = Redis.from_url(own_redis.url)
    await primary.config_set("repl-diskless-sync-delay", "0")  # sync now, not after the 5 s default delay
    await primary.aclose()
    client = Redis.from_url(replica.url)
    try:
        await client.config_set("masterauth", own_redis.password)
        await client.execute_command("REPLICAOF", "127.0.0.1", str(own_redis.port))
        await until_async(lambda: _link_up(client), 10, "the replica to sync")
    finally:
        await client.aclose()
    by_role = {role: make_probe(replica.url, role=role) for role in ("primary", "replica", "any")}
    by_role["the primary"] = make_probe(own_redis.url)
    try:
        outcome = await by_role["primary"].check()
        assert (outcome.verdict, outcome.reason) == (Verdict.DEGRADED, "read_only")
        assert await by_role["replica"].check() == OK
        assert await by_role["any"].check() == OK
        assert await by_role["the primary"].check() == OK  # and the primary itself is fine for role primary
    finally:
        for probe in by_role.values():
            await probe.aclose()


async def test_a_full_server_with_noeviction_is_degraded_oom(own_redis: Any) -> None:
    """used_memory at maxmemory with noeviction: writes fail, so the cache is degraded with reason oom."""
    client = Redis.from_url(own_redis.url)
    probe = make_probe(own_redis.url)
    try:
        await client.config_set("maxmemory-policy", "noeviction")
        await client.config_set("maxmemory", "1")  # anything in use is over the limit
        outcome = await probe.check()
        assert (outcome.verdict, outcome.reason) == (Verdict.DEGRADED, "oom")
    finally:
        await client.config_set("maxmemory", "0")
        await client.aclose()
        await probe.aclose()


async def _is_ok(probe: RedisProbe) -> bool:
    try:
        return await probe.check() == OK
    except Exception:
        return False


async def _link_up(client: Redis) -> bool:
    info = await client.info("replication")
    return info.get("master_link_status") == "up"


async def _watch_subscribed(server: Any) -> None:
    """Wait until the probe's watch connection is subscribed (it starts in the background after a check)."""
    client = Redis.from_url(server.url)
    try:
        await until_async(lambda: _has_watch(client), 5, "the watch subscription")
    finally:
        await client.aclose()


async def _has_watch(client: Redis) -> bool:
    channels = await client.pubsub_channels("failsoft:probe-watch:*")
    return bool(channels)


async def test_the_info_fields_read_match_redis_py_s_full_parse(redis_server: Any) -> None:
    """The probe parses only the INFO fields it judges by; on a real server's INFO they are exactly what redis-py's
    full parser gives for them, as strings (``_judge`` converts)."""
    from redis._parsers.helpers import parse_info

    from failsoft.probes.redis import _info_fields

    client = Redis.from_url(redis_server.url)
    client.set_response_callback("INFO", lambda response, **_: response)
    try:
        raw = await client.execute_command("INFO", NEVER_DECODE=True)
    finally:
        await client.aclose()
    full = parse_info(raw)
    mine = _info_fields(raw)
    assert set(mine) == {"loading", "role", "used_memory", "maxmemory", "maxmemory_policy"}
    assert {k: str(full[k]) for k in mine} == mine
