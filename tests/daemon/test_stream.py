"""failsoft.daemon.stream: SSE, history and override, in process over a real Hub, ServiceState and state owner.

The app is served the way the daemon serves it (``web.AppRunner`` on a loopback port, without aiohttp's test
server, which would cancel handlers on disconnect and hide what a dropped connection costs in production).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest
import support
from aiohttp import web
from support import db, until

from failsoft.daemon import fanout, stream
from failsoft.daemon.api import Runtime, build_app
from failsoft.daemon.clock import ManualClock
from failsoft.daemon.config import parse_config
from failsoft.daemon.hub import RING_SIZE, Hub
from failsoft.daemon.state import ServiceState, run_owner

TOKEN = "stream-test-admin-token-" + "7f3a9c"
support.SECRETS.add(TOKEN)

CONFIG = """
service: stream-test
http: {listen: "127.0.0.1:0", admin_token: "%s"}
dependencies:
  db: {kind: tcp, address: "127.0.0.1:1"}
policy:
  levels: [full, cache_only]
  rules: [{level: cache_only, when: {any_down: [db]}}]
  recover_after: 0s
  capabilities: {full: [chat, search], cache_only: [search]}
"""




@dataclass
class Served:
    """The routes on a real port, the state behind them, and an HTTP session to call them."""

    url: str
    hub: Hub
    state: ServiceState
    runtime: Runtime
    session: aiohttp.ClientSession
    down: bool = False

    def flip(self) -> None:
        """What the owner does with a probe result: ``db`` changes state, the level follows (two events)."""
        self.down = not self.down
        events = self.state.update(db(self.down))
        self.hub.publish(self.state.snapshot(), events)

    @property
    def seq(self) -> int:
        """The published seq."""
        assert self.hub.current is not None
        return self.hub.current.seq


@contextlib.asynccontextmanager
async def serve(streams: stream.EventStreams | None = None, token: str = TOKEN) -> AsyncIterator[Served]:
    """Start the app with the stream routes and the state owner; level ``full`` at seq 1."""
    config = parse_config(CONFIG % token, {})
    hub = Hub()
    state = ServiceState(config, ManualClock())
    runtime = Runtime(config=config, hub=hub, inbox=asyncio.Queue())
    runtime.tasks["owner"] = asyncio.create_task(run_owner(state, runtime.inbox, hub, refresh=3600))
    runner = web.AppRunner(build_app(runtime, stream.routes(streams)), access_log=None, shutdown_timeout=3)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    served = Served(f"http://127.0.0.1:{port}", hub, state, runtime, session)
    await until(lambda: hub.current is not None, what="the first publish")
    events = state.update(db(False))
    hub.publish(state.snapshot(), events)
    try:
        yield served
    finally:
        runtime.stopping.set()
        runtime.tasks["owner"].cancel()
        await session.close()
        await runner.cleanup()




async def read_frames(resp: aiohttp.ClientResponse, count: int, comments: bool = False) -> list[dict[str, Any]]:
    """The next ``count`` SSE messages (and comments, if asked) as dicts: id, event, data (parsed) or comment."""
    out: list[dict[str, Any]] = []
    frame: dict[str, Any] = {}

    async def read() -> None:
        nonlocal frame
        while len(out) < count:
            line = (await resp.content.readline()).decode()
            if not line:
                raise EOFError("the stream ended")
            line = line.rstrip("\n")
            if line.startswith(":"):
                if comments:
                    out.append({"comment": line[1:].strip()})
            elif not line:
                if frame:
                    out.append(frame)
                frame = {}
            else:
                name, _, value = line.partition(": ")
                frame[name] = orjson.loads(value) if name == "data" else value

    await asyncio.wait_for(read(), 10)
    return out


def seq_of(frame: dict[str, Any]) -> int:
    """The seq in a message's ``<boot>-<seq>`` id."""
    return int(frame["id"].rpartition("-")[2])


async def open_stream(served: Served, headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
    """``GET /service-level/events`` with the headers checked."""
    resp = await served.session.get(served.url + "/service-level/events", headers=headers or {})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["Cache-Control"] == "no-cache"
    return resp


# -- SSE --------------------------------------------------------------------------------------------------


async def test_stream_starts_with_a_snapshot_then_sends_each_event_with_its_seq_as_id() -> None:
    """The first message is ``snapshot`` (the State, id ``<boot>-<seq>``, with ``retry:``); then one message per
    event, in seq order, each with its ``<boot>-<seq>`` id."""
    async with serve() as s:
        resp = await open_stream(s)
        [snap] = await read_frames(resp, 1)
        assert snap["event"] == "snapshot"
        assert snap["id"] == f"{s.state.boot}-{s.seq}" == f"{snap['data']['boot']}-{snap['data']['seq']}"
        assert snap["retry"] == str(stream.RETRY_MS)
        assert snap["data"]["level"] == "full"
        s.flip()
        s.flip()
        frames = await read_frames(resp, 4)
        assert [f["event"] for f in frames] == ["dependency_changed", "level_changed"] * 2
        assert [f["id"] for f in frames] == [f"{s.state.boot}-{n}" for n in range(snap["data"]["seq"] + 1, s.seq + 1)]
        assert [f"{f['data']['boot']}-{f['data']['seq']}" for f in frames] == [f["id"] for f in frames]
        assert [f["data"]["level"] for f in frames if f["event"] == "level_changed"] == ["cache_only", "full"]
        resp.close()


async def test_each_event_is_serialised_once_and_shared_by_every_subscriber() -> None:
    """Two subscriptions receive the very same PublishedEvent, whose SSE frame was built once at publish time."""
    async with serve() as s:
        first, second = s.hub.subscribe(), s.hub.subscribe()
        s.flip()
        a, b = first.queue.get_nowait(), second.queue.get_nowait()
        assert a is b
        expected = b"id: %s-%d\nevent: %s\ndata: %s\n\n" % (s.state.boot.encode(), a.seq, a.type.encode(), a.body)
        assert a.frame == expected
        assert a.frame is b.frame
        first.close()
        second.close()


async def test_last_event_id_replays_the_missed_events_without_a_snapshot() -> None:
    """A reader resuming with Last-Event-ID gets exactly the events after it from the ring, then live ones."""
    async with serve() as s:
        seen = s.seq
        s.flip()
        s.flip()
        resp = await open_stream(s, {"Last-Event-ID": f"{s.state.boot}-{seen}"})
        replay = await read_frames(resp, 4)
        assert [seq_of(f) for f in replay] == list(range(seen + 1, seen + 5))
        assert "snapshot" not in [f["event"] for f in replay]
        s.flip()
        live = await read_frames(resp, 2)
        assert [seq_of(f) for f in live] == [seen + 5, seen + 6]
        resp.close()


async def test_a_reader_already_up_to_date_gets_only_new_events() -> None:
    """Last-Event-ID equal to the current seq: no snapshot, no replay; the next event comes as usual."""
    async with serve() as s:
        resp = await open_stream(s, {"Last-Event-ID": f"{s.state.boot}-{s.seq}"})
        s.flip()
        frames = await read_frames(resp, 2)
        assert [f["event"] for f in frames] == ["dependency_changed", "level_changed"]
        assert seq_of(frames[0]) == s.seq - 1
        resp.close()


@pytest.mark.parametrize("last_id", ["abc", "-1", "1.5", "", "{boot}-99999", "\uff11", "{boot}-\uff11", "{boot}-",
                                     "{seq}", "0badbe-{seq}", "0badbe-1", "{boot}-{seq}-1", "{boot}--1"])
async def test_an_unusable_last_event_id_gets_a_fresh_snapshot(last_id: str) -> None:
    """Not ``<boot>-<seq>`` (a bare seq names no boot), another boot's id (the reader was connected before a
    restart), whatever its seq, or one from the future: start over with a snapshot."""
    async with serve() as s:
        resp = await open_stream(s, {"Last-Event-ID": last_id.format(boot=s.state.boot, seq=s.seq)})
        [snap] = await read_frames(resp, 1)
        assert snap["event"] == "snapshot"
        assert snap["data"]["seq"] == s.seq
        resp.close()


async def test_a_last_event_id_older_than_the_ring_gets_a_fresh_snapshot() -> None:
    """When the ring no longer holds every missed event, a replay would have a gap: a snapshot instead."""
    async with serve() as s:
        while s.seq <= RING_SIZE + 2:
            s.flip()
        resp = await open_stream(s, {"Last-Event-ID": f"{s.state.boot}-1"})
        [snap] = await read_frames(resp, 1)
        assert snap["event"] == "snapshot"
        assert snap["data"]["seq"] == s.seq
        resp.close()


async def test_an_idle_stream_gets_keep_alive_comments() -> None:
    """With nothing to say, the stream still sends a comment line every keep-alive period."""
    async with serve(stream.EventStreams(keepalive=0.1)) as s:
        resp = await open_stream(s)
        frames = await read_frames(resp, 3, comments=True)
        assert frames[0]["event"] == "snapshot"
        assert frames[1:] == [{"comment": "keep-alive"}, {"comment": "keep-alive"}]
        resp.close()


async def test_streams_end_cleanly_and_promptly_at_shutdown() -> None:
    """When the daemon starts stopping, every open stream ends (a complete chunked response) at once, long before
    a keep-alive would be due. A stream opened while stopping gets the State and ends (a 503 would make a browser's
    EventSource give up instead of reconnecting to the next process)."""
    async with serve(stream.EventStreams(keepalive=3600)) as s:
        responses = [await open_stream(s) for _ in range(3)]
        for resp in responses:
            await read_frames(resp, 1)
        assert s.hub.subscribers == 3
        s.runtime.stopping.set()
        for resp in responses:
            rest = await asyncio.wait_for(resp.content.read(), 10)  # EOF of a properly terminated response
            assert rest == b""
        assert s.hub.subscribers == 0
        late = await open_stream(s)
        [snap] = await read_frames(late, 1)
        assert snap["event"] == "snapshot"
        assert snap["retry"] == str(stream.RETRY_MS)
        assert await asyncio.wait_for(late.content.read(), 10) == b""
        assert s.hub.subscribers == 0


async def test_a_stream_opened_before_the_first_state_waits_for_it() -> None:
    """Between listening and the first published State, a new stream waits for that State instead of a 503."""
    parked = asyncio.Event()

    class WatchedHub(Hub):
        async def wait_past(self, index: int, timeout: float) -> Any:  # noqa: ASYNC109 - the overridden signature
            parked.set()
            return await super().wait_past(index, timeout)

    config = parse_config(CONFIG % TOKEN, {})
    hub = WatchedHub()
    runtime = Runtime(config=config, hub=hub, inbox=asyncio.Queue())
    runner = web.AppRunner(build_app(runtime, stream.routes()), access_log=None, shutdown_timeout=3)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/service-level/events"
    try:
        async with aiohttp.ClientSession() as session:
            opening = asyncio.ensure_future(session.get(url))
            await asyncio.wait_for(parked.wait(), 10)
            assert not opening.done()
            state = ServiceState(config, ManualClock())
            hub.publish(state.snapshot(), [])
            resp = await asyncio.wait_for(opening, 10)
            assert resp.status == 200
            [snap] = await read_frames(resp, 1)
            assert snap["event"] == "snapshot"
            assert snap["id"] == f"{state.boot}-{state.seq}"
            resp.close()
    finally:
        runtime.stopping.set()
        await runner.cleanup()


async def open_stuck_reader(url: str) -> socket.socket:
    """An event stream opened by a reader that will never read: a small receive buffer, the request sent."""
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.setblocking(False)
    host, port = url.removeprefix("http://").split(":")
    await asyncio.get_running_loop().sock_connect(stuck, (host, int(port)))
    stuck.send(b"GET /service-level/events HTTP/1.1\r\nHost: x\r\n\r\n")
    return stuck


async def test_a_reader_that_never_reads_is_dropped_and_the_others_see_every_event() -> None:
    """A stuck reader fills its socket, then its bounded queue; it is cut off. A reading one gets all events."""
    streams = stream.EventStreams(queue_size=8)
    async with serve(streams) as s:
        good = await open_stream(s)
        await read_frames(good, 1)
        stuck = await open_stuck_reader(s.url)
        await until(lambda: s.hub.subscribers == 2, what="the stuck reader to subscribe")
        first = s.seq + 1
        received: list[int] = []

        async def keep_reading() -> None:
            while True:
                received.extend(seq_of(f) for f in await read_frames(good, 1))

        reader = asyncio.create_task(keep_reading())
        flips = 0
        while s.hub.subscribers == 2 and flips < 20_000:
            s.flip()
            flips += 1
            await asyncio.sleep(0)  # let the streams run, as between two probe results
        assert s.hub.subscribers == 1, f"the stuck reader was not dropped after {flips} flips"
        await until(lambda: received and received[-1] == s.seq, what="the reading stream to catch up")
        reader.cancel()
        assert received == list(range(first, s.seq + 1))
        # Its handler ends without the reader reading a byte: the connection was cut, not left blocked.
        await until(lambda: streams.open_streams == 1, what="the stuck stream's handler to end")
        closed = await _read_until_closed(stuck)
        assert closed, "the server did not close the stuck reader's connection"
        good.close()


async def test_a_stalled_reader_holds_a_bounded_number_of_bytes_before_it_is_dropped() -> None:
    """Events go straight to each stream's socket, whose kernel send buffer is kept small: a reader that never
    reads is dropped once its socket and the bounded user-space buffer are full, having been sent a bounded
    number of bytes (not the megabytes an auto-tuned socket buffer takes), while a reading stream gets them all."""
    async with serve() as s:
        stuck = await open_stuck_reader(s.url)
        await until(lambda: s.hub.subscribers == 1, what="the stuck reader to subscribe")
        sent = 0
        while s.hub.subscribers == 1 and sent < 64 * 1024 * 1024:
            before = s.seq
            s.flip()
            sent += sum(len(e.chunk) for e in s.hub.ring if e.seq > before)
            await asyncio.sleep(0)
        assert s.hub.subscribers == 0, f"the stuck reader was still subscribed after {sent} bytes"
        # Its kernel buffers (both ends, Linux doubles each) plus the user-space limit, with room for one event.
        bound = 2 * fanout.SEND_BUFFER + fanout.WRITE_BUFFER_LIMIT + 2 * 4096 + 64 * 1024
        assert sent <= bound, f"{sent} bytes were sent to a reader that never read (bound {bound})"
        assert await _read_until_closed(stuck)


async def _read_until_closed(sock: socket.socket) -> bool:
    loop = asyncio.get_running_loop()
    try:
        while await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 5):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    finally:
        sock.close()
    return True


async def test_many_streams_opened_and_closed_leave_nothing_behind() -> None:
    """Hundreds of readers that connect and go away: each subscription is released (by the next keep-alive)."""
    async with serve(stream.EventStreams(keepalive=0.2)) as s:
        for _ in range(3):
            responses = await asyncio.gather(*(open_stream(s) for _ in range(100)))
            await asyncio.gather(*(read_frames(r, 1) for r in responses))
            for resp in responses:
                resp.close()
        await until(lambda: s.hub.subscribers == 0, what="every closed stream to be released")
        resp = await open_stream(s)  # and the endpoint still works
        assert (await read_frames(resp, 1))[0]["event"] == "snapshot"
        resp.close()


async def test_streams_beyond_the_limit_get_503() -> None:
    """A cap on open streams protects the daemon's memory and file descriptors."""
    async with serve(stream.EventStreams(max_streams=2)) as s:
        held = [await open_stream(s), await open_stream(s)]
        extra = await s.session.get(s.url + "/service-level/events")
        assert extra.status == 503
        assert (await extra.json())["error"]["code"] == "too_many_streams"
        for resp in held:
            resp.close()


# -- history ----------------------------------------------------------------------------------------------


async def test_history_returns_the_last_events_oldest_first() -> None:
    """``/history`` defaults to 100 events; ``limit`` takes fewer; more than the ring holds is capped."""
    async with serve() as s:
        for _ in range(60):
            s.flip()
        async with s.session.get(s.url + "/history") as resp:
            assert resp.status == 200
            body = await resp.json()
        assert [e["seq"] for e in body] == list(range(s.seq - 99, s.seq + 1))
        async with s.session.get(s.url + "/history?limit=3") as resp:
            assert [e["seq"] for e in await resp.json()] == [s.seq - 2, s.seq - 1, s.seq]
            assert resp.headers["X-Failsoft-Index"] == str(s.seq)
        async with s.session.get(s.url + "/history?limit=0") as resp:
            assert await resp.json() == []
        async with s.session.get(s.url + "/history?limit=5000") as resp:
            assert len(await resp.json()) == s.seq  # everything held (fewer than the ring's 1024)


@pytest.mark.parametrize("limit", ["-1", "abc", "", "1e3", "\uff13"])  # the last: a full-width digit three
async def test_history_rejects_a_limit_that_is_not_a_whole_number(limit: str) -> None:
    """A bad ``limit`` is a 400 with the contract's error body."""
    async with serve() as s, s.session.get(s.url + "/history", params={"limit": limit}) as resp:
        assert resp.status == 400
        body = await resp.json()
        assert body["error"]["code"] == "bad_limit"
        assert "limit" in body["error"]["message"]


# -- override ---------------------------------------------------------------------------------------------


def bearer(token: str = TOKEN) -> dict[str, str]:
    """The Authorization header."""
    return {"Authorization": f"Bearer {token}"}


async def test_override_forces_the_level_until_deleted_and_both_are_events() -> None:
    """POST sets the level (State ``override`` and ``reason``); DELETE clears it; each is an event on the stream."""
    async with serve() as s:
        resp = await open_stream(s)
        await read_frames(resp, 1)
        body = {"level": "cache_only", "ttl": "30m", "reason": "db maintenance"}
        async with s.session.post(s.url + "/override", json=body, headers=bearer()) as r:
            assert r.status == 200
            state = await r.json()
        assert state["level"] == "cache_only"
        assert state["override"]["level"] == "cache_only"
        assert state["override"]["reason"] == "db maintenance"
        assert state["override"]["until"].endswith("Z")
        assert state["reason"] == "override: db maintenance"
        async with s.session.delete(s.url + "/override", headers=bearer()) as r:
            assert r.status == 200
            assert (await r.json())["override"] is None
        frames = await read_frames(resp, 4)
        assert [f["event"] for f in frames] == ["override_set", "level_changed", "override_cleared", "level_changed"]
        assert [f["data"]["level"] for f in frames] == ["cache_only", "cache_only", "cache_only", "full"]
        resp.close()


async def test_override_without_ttl_or_reason_uses_the_defaults() -> None:
    """``ttl`` defaults to 30 minutes and ``reason`` to "manual override"."""
    async with serve() as s, s.session.post(s.url + "/override", json={"level": "cache_only"}, headers=bearer()) as r:
        assert r.status == 200
        state = await r.json()
        assert state["override"]["reason"] == "manual override"
        assert s.state.override is not None
        assert s.state.override.until_mono - s.state.clock.monotonic() == pytest.approx(1800)


async def test_admin_endpoints_are_disabled_without_a_token() -> None:
    """An empty http.admin_token turns POST and DELETE into 403, whatever the request carries."""
    async with serve(token="") as s:
        for method in ("POST", "DELETE"):
            async with s.session.request(method, s.url + "/override", json={"level": "full"},
                                         headers=bearer("anything")) as r:
                assert r.status == 403
                body = await r.json()
                assert body["error"]["code"] == "admin_disabled"
                assert "http.admin_token" in body["error"]["message"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"},
                                     {"Authorization": "Bearer   "}])
async def test_a_missing_bearer_token_is_401_with_www_authenticate(headers: dict[str, str]) -> None:
    """No usable credentials: 401 and a ``WWW-Authenticate: Bearer`` challenge."""
    async with serve() as s:
        for method in ("POST", "DELETE"):
            async with s.session.request(method, s.url + "/override", json={"level": "full"}, headers=headers) as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
                assert (await r.json())["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("token", ["wrong", TOKEN + "x", TOKEN[:-1], TOKEN.upper(), "jéton"])
async def test_a_wrong_token_is_403_and_changes_nothing(token: str) -> None:
    """Any other token is refused; the level and the seq stay as they were."""
    async with serve() as s:
        seq = s.seq
        async with s.session.post(s.url + "/override", json={"level": "cache_only"},
                                  headers={"Authorization": f"Bearer {token}".encode().decode("latin-1")}) as r:
            assert r.status == 403
            assert (await r.json())["error"]["code"] == "forbidden"
        assert s.seq == seq
        assert s.state.override is None


@pytest.mark.parametrize(("body", "words"), [
    (b"not json", "JSON object"),
    (b"[1, 2]", "JSON object"),
    (b'"cache_only"', "JSON object"),
    (b"", "JSON object"),
    (b'{"level": "nope"}', "level must be one of full, cache_only"),
    (b'{"level": "unknown"}', "level must be one of"),
    (b'{"level": 3}', "level must be one of"),
    (b'{"ttl": "5m"}', "level is required: one of full, cache_only"),
    (b'{"level": "full", "ttl": "soon"}', "ttl must be a duration"),
    (b'{"level": "full", "ttl": "0s"}', "ttl must be more than 0"),
    (b'{"level": "full", "ttl": -5}', "ttl must be a duration"),
    (b'{"level": "full", "ttl": "169h"}', "at most 168h"),
    (b'{"level": "full", "ttl": true}', "ttl must be a duration"),
    (b'{"level": "full", "ttl": " 5m"}', "ttl must be a duration"),
    (b'{"level": "full", "ttl": "1e3"}', "ttl must be a duration"),
    (b'{"level": "full", "reason": ""}', "reason must be a non-empty string"),
    (b'{"level": "full", "reason": 7}', "reason must be a non-empty string"),
    (b'{"level": "full", "reason": "' + b"x" * 301 + b'"}', "at most 300 characters"),
    (b'{"level": "full", "until": "tomorrow"}', "unknown key(s) until"),
])
async def test_a_bad_override_body_is_400_with_the_reason(body: bytes, words: str) -> None:
    """Malformed JSON, wrong types, unknown levels and keys, bad ttls and reasons: 400 saying what is wrong."""
    async with serve() as s:
        async with s.session.post(s.url + "/override", data=body, headers=bearer()) as r:
            assert r.status == 400
            error = (await r.json())["error"]
        assert error["code"] == "bad_override"
        assert words in error["message"]
        assert s.state.override is None


async def test_an_oversized_override_body_is_413_as_a_json_error() -> None:
    """Bodies over 4 KiB (declared or chunked) and over the app's 64 KiB limit are refused with a JSON error."""
    async with serve() as s:
        big = b'{"level": "full", "reason": "' + b"x" * 5000 + b'"}'

        async def chunks() -> AsyncIterator[bytes]:
            yield big

        huge = b"x" * (70 * 1024)
        for data in (big, chunks(), huge):
            async with s.session.post(s.url + "/override", data=data, headers=bearer()) as r:
                assert r.status == 413
                assert (await r.json())["error"]["code"] == "body_too_large"
        assert s.state.override is None
