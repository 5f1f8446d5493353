"""Fan-out of the State and its events to every reader: HTTP answers, long-polls, streams and sinks.

Each State and each event is serialised once, here, when it is published; readers get the bytes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from daemon.state import Event, Snapshot

RING_SIZE = 1024


@dataclass(frozen=True, slots=True)
class Published:
    """A State as readers see it: the snapshot, its JSON body and its ETag."""

    snapshot: Snapshot
    body: bytes

    @property
    def seq(self) -> int:
        """The State's seq."""
        return self.snapshot.seq

    @property
    def etag(self) -> str:
        """``"<seq>"``: the seq names the semantic version of the State."""
        return f'"{self.snapshot.seq}"'


@dataclass(frozen=True, slots=True)
class PublishedEvent:
    """An event with its JSON serialised once."""

    seq: int
    type: str
    data: dict[str, Any]
    body: bytes


class Subscription:
    """A reader of events with a bounded queue; a reader that falls too far behind is cut off."""

    def __init__(self, hub: Hub, size: int) -> None:
        self._hub = hub
        self.queue: asyncio.Queue[PublishedEvent] = asyncio.Queue(maxsize=size)
        self.overflowed = asyncio.Event()

    def offer(self, event: PublishedEvent) -> None:
        """Queue ``event``, or mark the subscription overflowed (its reader then drops the connection)."""
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed.set()
            self._hub.unsubscribe(self)

    def close(self) -> None:
        """Stop receiving events."""
        self._hub.unsubscribe(self)


Listener = Callable[[Published, list[PublishedEvent]], None]


class Hub:
    """Holds the newest published State, a ring of recent events, and the readers waiting on them."""

    def __init__(self) -> None:
        self.current: Published | None = None
        self.ring: deque[PublishedEvent] = deque(maxlen=RING_SIZE)
        self._changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
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
        for sub in list(self._subscriptions):
            for pe in out:
                sub.offer(pe)
        for listener in self._listeners:
            listener(self.current, out)
        if snapshot.seq != prev_seq and not self._changed.done():
            self._changed.set_result(None)
            self._changed = asyncio.get_running_loop().create_future()

    async def wait_past(self, index: int, timeout: float) -> Published | None:
        """The State as soon as its seq exceeds ``index``, or the unchanged one after ``timeout``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.current is None or self.current.seq <= index:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(asyncio.shield(self._changed), remaining)
            except TimeoutError:
                break
        return self.current

    def events_after(self, seq: int) -> list[PublishedEvent] | None:
        """Events with a seq above ``seq`` from the ring, or None when some of them are no longer held."""
        if seq >= (self.current.seq if self.current else 0):
            return []
        newer = [e for e in self.ring if e.seq > seq]
        if not newer or newer[0].seq != seq + 1:
            return None
        return newer

    def subscribe(self, size: int = 256) -> Subscription:
        """A new event subscription; call ``close`` when done."""
        sub = Subscription(self, size)
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
