"""``kind: redis``: PING and INFO on one client with no retries, plus a watch connection for drops."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from redis import exceptions as rex
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.client import NEVER_DECODE

from failsoft.policies.classify import causes
from failsoft.probes.base import OK, Outcome, ProbeFailure, ProbeHooks, degraded


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """``url`` (redis://, rediss:// or unix://) and the expected ``role``."""

    url: str
    role: Literal["primary", "replica", "any"] = "primary"

    def problems(self) -> list[tuple[str, str]]:
        """Config errors as (key, message)."""
        if not self.url.startswith(("redis://", "rediss://", "unix://")):
            return [("url", "expected a URL starting with redis://, rediss:// or unix://")]
        return []


def _client(url: str, timeout: float | None, connect_timeout: float) -> Redis:
    # redis-py retries by default (several attempts with back-off, seconds each): a probe must fail fast
    # and let the breaker decide, so no retries and the probe deadline on every socket operation.
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=connect_timeout,
        retry=Retry(NoBackoff(), 0),
        single_connection_client=True,
        health_check_interval=0,
        # No client_name: CLIENT SETNAME at connect would fail for an ACL user allowed little more than PING.
    )


# The INFO fields the probe reads, and a parser that reads only them (redis-py's parses every field, ~150 of them).
INFO_FIELDS = re.compile(rb"^(loading|role|used_memory|maxmemory|maxmemory_policy):([^\r\n]*)", re.MULTILINE)


def _raw(response: bytes, **_: Any) -> bytes:
    return response


def _info_fields(raw: bytes) -> dict[str, str]:
    """``loading``, ``role``, ``used_memory``, ``maxmemory`` and ``maxmemory_policy`` from a raw INFO answer."""
    return {k.decode(): v.decode(errors="replace") for k, v in INFO_FIELDS.findall(raw)}


class RedisProbe:
    """PING + INFO; a subscribed idle connection notices a crashed server at once."""

    def __init__(self, options: RedisOptions, timeout: float, hooks: ProbeHooks) -> None:
        self._options = options
        self._timeout = timeout
        self._hooks = hooks
        self._client: Redis | None = None
        self._watch: asyncio.Task[None] | None = None
        self._closing = False
        self._info_denied = False
        self._watch_denied = False

    async def check(self) -> Outcome:
        """PING, then read role, loading and memory from INFO.

        A kept connection the server closed since the last check (a crash, a restart, ``CLIENT KILL``, an idle
        timeout) says nothing about the server now: that check is made again, once, on a new connection, whose
        answer (or refusal) is the probe's. A refused connect right after a dropped connection proves a crash
        (``policies.evidence``), so this is what lets a crashed Redis be ``down`` at once.
        """
        kept = self._client is not None
        try:
            return await self._check()
        except ProbeFailure as exc:
            if not kept or exc.reason != "connection_closed":
                raise
        return await self._check()

    async def _check(self) -> Outcome:
        if self._client is None:
            self._client = _client(self._options.url, self._timeout, self._timeout)
            self._client.set_response_callback("INFO", _raw)  # parsed by _info_fields, only what is read
        try:
            info = await self._info(self._client)
        except rex.BusyLoadingError:
            return degraded("loading", "the server is loading its dataset")
        except rex.AuthenticationError as exc:
            raise ProbeFailure("auth", f"authentication failed: {exc}", fatal=True) from exc
        except rex.OutOfMemoryError as exc:
            return degraded("oom", str(exc))
        except rex.ReadOnlyError as exc:
            return degraded("read_only", str(exc))
        except rex.ConnectionError as exc:
            await self._reset()
            if not any(isinstance(e, OSError) for e in causes(exc)):
                # The server closed the socket (it crashed or kicked us): no OSError says why.
                raise ProbeFailure("connection_closed", str(exc)) from exc
            raise
        except BaseException:
            await self._reset()
            raise
        self._start_watch()
        return self._judge(info)

    async def _info(self, client: Redis) -> dict[str, Any]:
        """INFO, when this user may run it, else PING: one round trip either way.

        An answered INFO proves the server answers as much as a PING does (and Redis answers INFO while loading
        its dataset, which ``_judge`` reads), so a user allowed INFO gets no separate PING. Only the few fields
        ``_judge`` reads are parsed out of INFO's several kilobytes (``_info_fields``), not all of them.
        """
        if not self._info_denied:
            try:
                raw = await client.execute_command("INFO", **{NEVER_DECODE: True})  # type: ignore[no-untyped-call]
                return _info_fields(raw)
            except rex.NoPermissionError:
                self._info_denied = True  # an ACL user limited to PING: do not ask again
        await client.ping()
        return {}

    def _judge(self, info: dict[str, Any]) -> Outcome:
        if int(info.get("loading", 0)):
            return degraded("loading", "the server is loading its dataset")
        if self._options.role == "primary" and info.get("role") == "slave":
            return degraded("read_only", "the server is a replica; a primary was expected")
        used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
        if limit and used >= limit and info.get("maxmemory_policy") == "noeviction":
            return degraded("oom", f"used_memory {used} reached maxmemory {limit} with noeviction")
        return OK

    def _start_watch(self) -> None:
        if not self._watch_denied and (self._watch is None or self._watch.done()):
            self._watch = asyncio.get_running_loop().create_task(self._watch_for_drop())

    async def _watch_for_drop(self) -> None:
        """Hold a subscribed connection; when the server goes away the read fails and we say so."""
        client = _client(self._options.url, None, self._timeout)
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(f"failsoft:probe-watch:{secrets.token_hex(6)}")
                while True:
                    await pubsub.get_message(timeout=None)
        except rex.ResponseError:
            # This user may not SUBSCRIBE (ACL): crashes are then found by the next probe instead of at once.
            self._watch_denied = True
        except (rex.ConnectionError, rex.TimeoutError, OSError):
            if not self._closing:
                self._hooks.connection_lost()
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _reset(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), self._timeout)

    async def aclose(self) -> None:
        """Close the probe client and stop the watch."""
        self._closing = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(BaseException):
                await self._watch
        await self._reset()
