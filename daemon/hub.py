"""Fan-out of the State and its events to every reader: HTTP answers, long-polls, streams and sinks.

Each State and each event is serialised once, here, when it is published; readers get the bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from multidict import CIMultiDict

from failsoft.daemon.state import Event, Snapshot

RING_SIZE = 1024


@dataclass(frozen=True, slots=True)
class Published:
    """A State as readers see it: the snapshot, its JSON body and its ETag, and the answer's headers.

    Everything a ``GET /service-level`` sends is built here, once per published State, so that answering costs
    the same whatever the number of readers: the handler copies ready-made headers and hands over the bytes.
    """

    snapshot: Snapshot
    body: bytes
    status: int = field(init=False, compare=False)  # 503 while the level is unknown, else 200
    headers: CIMultiDict[str] = field(init=False, repr=False, compare=False)  # for 200/503, with Content-Type
    not_modified: CIMultiDict[str] = field(init=False, repr=False, compare=False)  # for 304

    def __post_init__(self) -> None:
        common = {"ETag": self.etag, "X-Failsoft-Index": str(self.snapshot.seq), "Cache-Control": "no-cache"}
        object.__setattr__(self, "status", 503 if self.snapshot.level == "unknown" else 200)
        object.__setattr__(self, "headers", CIMultiDict({"Content-Type": "application/json", **common}))
        object.__setattr__(self, "not_modified", CIMultiDict(common))

    @property
    def seq(self) -> int:
        """The State's seq."""
        return self.snapshot.seq

    @property
    def etag(self) -> str:
        """``W/"<boot>-<seq>"``: weak, because ``updated_at``/``valid_until`` change the bytes, not the meaning."""
        return f'W/"{state_id(self.snapshot.boot, self.seq)}"'


def state_id(boot: str, seq: int) -> str:
    """``<boot>-<seq>``: the SSE id and the ETag's opaque tag; unique across restarts because ``boot`` is."""
    return f"{boot}-{seq}"


def sse_frame(event_type: str, event_id: str, body: bytes) -> bytes:
    """One Server-Sent Events message: ``id`` (``<boot>-<seq>``), ``event`` (the type), the JSON on one ``data`` line.

    orjson never emits a raw newline (newlines inside strings are escaped), so one ``data:`` line is enough.
    """
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (event_id.encode(), event_type.encode(), body)


@dataclass(frozen=True, slots=True)
class PublishedEvent:
    """An event with its JSON serialised once, and its SSE message built once for every stream reader."""

    seq: int
    type: str
    data: dict[str, Any]
    body: bytes
    frame: bytes = field(init=False, repr=False, compare=False)
    chunk: bytes = field(init=False, repr=False, compare=False)  # ``frame`` as one HTTP/1.1 chunk

    def __post_init__(self) -> None:
        # Built here so that a thousand streams share one bytes object per event instead of formatting their own.
        frame = sse_frame(self.type, state_id(str(self.data.get("boot")), self.seq), self.body)
        object.__setattr__(self, "frame", frame)
        object.__setattr__(self, "chunk", b"%x\r\n%s\r\n" % (len(frame), frame))


@dataclass(frozen=True, slots=True)
class Batch:
    """The events of one publish, with their SSE messages joined once for every reader: a change that makes two
    events (an override and the level it sets) is one socket write per reader, not two."""

    events: tuple[PublishedEvent, ...]
    frames: bytes = field(init=False, repr=False, compare=False)
    chunks: bytes = field(init=False, repr=False, compare=False)  # ``frames`` as HTTP/1.1 chunks, one per event

    def __post_init__(self) -> None:
        object.__setattr__(self, "frames", b"".join(e.frame for e in self.events))
        object.__setattr__(self, "chunks", b"".join(e.chunk for e in self.events))


class Subscription:
    """A reader of events with a bounded queue; a reader that falls too far behind is cut off.

    ``on_overflow`` runs (synchronously, once) when the queue is full: a stream blocked writing to a reader that
    never reads cannot notice by itself, so it passes a callback that closes the connection.
    """

    def __init__(self, hub: Hub, size: int, on_overflow: Callable[[], None] | None = None) -> None:
        self._hub = hub
        self.queue: asyncio.Queue[PublishedEvent] = asyncio.Queue(maxsize=size)
        self.overflowed = asyncio.Event()
        self.closed = False
        self._on_overflow = on_overflow
        self._waiter: asyncio.Future[None] | None = None
        self._direct: Callable[[Batch], bool] | None = None

    def offer(self, batch: Batch) -> None:
        """Queue the events of ``batch`` (or hand them straight to the reader, see ``deliver_directly``), or mark
        the subscription overflowed (its reader then drops the connection)."""
        if self._direct is not None:
            if not self._direct(batch):
                self.overflow()
            return
        for event in batch.events:
            try:
                self.queue.put_nowait(event)
            except asyncio.QueueFull:
                self.overflow()
                break
        self._wake()

    def deliver_directly(self, deliver: Callable[[Batch], bool]) -> None:
        """From now on, hand each event to ``deliver`` at once, in the publisher's call, instead of queueing it
        for the reader's task to wake up for: a thousand streams then cost a thousand socket writes per event,
        not a thousand task switches too. ``deliver`` returns False when the reader has fallen too far behind."""
        self._direct = deliver

    def overflow(self) -> None:
        """The reader fell too far behind: stop delivering, and let its stream drop the connection."""
        self._direct = None
        self.overflowed.set()
        self._hub.unsubscribe(self)
        if self._on_overflow is not None:
            callback, self._on_overflow = self._on_overflow, None
            callback()
        self._wake()

    def close(self) -> None:
        """Stop receiving events (and wake a reader blocked in ``wait``)."""
        self.closed = True
        self._hub.unsubscribe(self)
        self._wake()

    async def wait(self, max_wait: float) -> None:
        """Return once an event is queued, the subscription overflowed or was closed, or ``max_wait`` passed.

        One future and one timer per wait, no task: thousands of idle streams must cost little.
        """
        if not self.queue.empty() or self.overflowed.is_set() or self.closed:
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(max_wait, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None:
            _resolve(self._waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


Listener = Callable[[Published, list[PublishedEvent]], None]


class Hub:
    """Holds the newest published State, a ring of recent events, and the readers waiting on them."""

    def __init__(self) -> None:
        self.current: Published | None = None
        self.ring: deque[PublishedEvent] = deque(maxlen=RING_SIZE)
        self._changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.draining = False  # set at shutdown: blocking queries answer at once with the State they have
        self._subscriptions: set[Subscription] = set()
        self._listeners: list[Listener] = []

    def publish(self, snapshot: Snapshot, events: list[Event]) -> None:
        """Serialise and store a new State and its events, then wake every reader."""
        body = orjson.dumps(snapshot.to_dict())
        prev_seq = self.current.seq if self.current else -1
        self.current = Published(snapshot, body)
        out = []
        for e in events:
            data = e.to_dict(snapshot.service, snapshot.boot)
            pe = PublishedEvent(e.seq, e.type, data, orjson.dumps(data))
            self.ring.append(pe)
            out.append(pe)
        if out and self._subscriptions:
            batch = Batch(tuple(out))
            for sub in list(self._subscriptions):
                sub.offer(batch)
        for listener in self._listeners:
            listener(self.current, out)
        if snapshot.seq != prev_seq and not self._changed.done():
            self._changed.set_result(None)
            self._changed = asyncio.get_running_loop().create_future()

    def drain(self) -> None:
        """Shutdown: wake every blocking query so that it answers now instead of being cut off."""
        self.draining = True
        if not self._changed.done():
            self._changed.set_result(None)

    async def wait_past(self, index: int, timeout: float) -> Published | None:  # noqa: ASYNC109 - the query's own wait=
        """The State as soon as its seq exceeds ``index``, or the unchanged one after ``timeout``."""
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancellation of a handler whose client
        # went away, which would keep this query parked for its whole wait.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while (self.current is None or self.current.seq <= index) and not self.draining:
                    await asyncio.shield(self._changed)
        return self.current

    def events_after(self, seq: int) -> list[PublishedEvent] | None:
        """Events with a seq above ``seq`` from the ring, or None when some of them are no longer held."""
        if seq >= (self.current.seq if self.current else 0):
            return []
        newer = [e for e in self.ring if e.seq > seq]
        if not newer or newer[0].seq != seq + 1:
            return None
        return newer

    def subscribe(self, size: int = 256, on_overflow: Callable[[], None] | None = None) -> Subscription:
        """A new event subscription; call ``close`` when done. ``on_overflow``: see ``Subscription``."""
        sub = Subscription(self, size, on_overflow)
        self._subscriptions.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget ``sub``."""
        self._subscriptions.discard(sub)

    @property
    def subscribers(self) -> int:
        """How many event subscriptions are open."""
        return len(self._subscriptions)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` synchronously with every publication (sinks queue the work themselves)."""
        self._listeners.append(listener)
