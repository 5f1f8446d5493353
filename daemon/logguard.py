"""Log output that a client cannot inflate: bounded field length and rate-limited repeats.

Logging runs on the event loop. A line whose size or rate a client controls (a malformed request quoted in an
error, an accept() failure per connection attempt) would let that client spend the loop's time and fill the
disk, so every field is cut to a bounded length before it is redacted, and repeated lines of one kind are
counted instead of written.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from failsoft.daemon.limits import LOG_BURST, LOG_CLIENT_EXCERPT, LOG_MAX_VALUE, LOG_PERIOD, LOG_REDACT_MARGIN

Redact = Callable[[str], str]


def bounded(redact: Redact, limit: int = LOG_MAX_VALUE, margin: int = LOG_REDACT_MARGIN) -> Redact:
    """``redact`` applied to at most ``limit + 2 * margin`` characters; longer text keeps its head and its tail
    (where a traceback says what was raised) around a marker, ``limit`` characters in all.

    Cutting before redacting bounds the work per field; each part is redacted with ``margin`` characters more than
    it keeps, so a secret shorter than the margin that crosses a cut is seen whole and masked, never half shown.
    """
    head_len = limit * 3 // 4
    tail_len = limit - head_len

    def redact_bounded(text: str) -> str:
        size = len(text)
        if size <= limit:
            return redact(text)
        head = redact(text[: head_len + margin])[:head_len]
        tail = redact(text[-(tail_len + margin):])[-tail_len:]
        return f"{head} ...[{size - limit} characters cut]... {tail}"

    return redact_bounded


def excerpt(data: str | bytes, limit: int = LOG_CLIENT_EXCERPT) -> str:
    """At most ``limit`` characters of client input, escaped so that control bytes and NULs stay visible."""
    head = data[:limit]
    text = repr(head)[1:-1] if isinstance(head, str) else repr(head)[2:-1]
    more = len(data) - len(head)
    return f"{text}... ({more} more)" if more > 0 else text


@dataclass
class RateLimit:
    """At most ``burst`` events per ``period`` seconds; the rest are counted and reported by the next allowed one."""

    burst: int = LOG_BURST
    period: float = LOG_PERIOD
    clock: Callable[[], float] = time.monotonic
    _window_start: float = field(default=-1e18, init=False)
    _in_window: int = field(default=0, init=False)
    _suppressed: int = field(default=0, init=False)

    def allow(self) -> int | None:
        """None when this event must be dropped; else how many were dropped since the last allowed one."""
        now = self.clock()
        if now - self._window_start >= self.period:
            self._window_start, self._in_window = now, 0
        if self._in_window >= self.burst:
            self._suppressed += 1
            return None
        self._in_window += 1
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed


_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class RepeatFilter(logging.Filter):
    """A logger filter: at most ``burst`` records per ``period`` for each message template of the logger.

    Installed on the libraries' loggers whose lines a client can trigger (``asyncio``: an accept() failure per
    connection attempt; ``aiohttp.server``: an error per request). A line that follows suppressed ones says how
    many there were, so nothing is lost silently.
    """

    def __init__(self, burst: int = LOG_BURST, period: float = LOG_PERIOD,
                 clock: Callable[[], float] = time.monotonic, max_kinds: int = 256) -> None:
        super().__init__()
        self._limits: dict[str, RateLimit] = {}
        self._burst, self._period, self._clock, self._max_kinds = burst, period, clock, max_kinds

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is written (it is rewritten to carry the count of suppressed ones)."""
        key = str(record.msg)[:200]
        limit = self._limits.get(key)
        if limit is None:
            if len(self._limits) >= self._max_kinds:  # bounded too: a message that varies is one kind
                key, limit = "", self._limits.setdefault("", RateLimit(self._burst, self._period, self._clock))
            else:
                limit = self._limits[key] = RateLimit(self._burst, self._period, self._clock)
        suppressed = limit.allow()
        if suppressed is None:
            return False
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS:  # accept() out of descriptors: the errno
            # says it all, the traceback nothing, and a client can cause one per connection attempt
            record.msg = f"{record.getMessage()} ({exc})"
            record.args, record.exc_info, record.exc_text = None, None, None
        if suppressed:
            record.msg = f"{record.getMessage()} ({suppressed} similar lines suppressed)"
            record.args = None
        return True


# Library loggers whose lines a remote client can cause.
NOISY_LOGGERS = ("asyncio", "aiohttp.server", "aiohttp.web", "aiohttp.access")


def install_repeat_filters(clock: Callable[[], float] = time.monotonic) -> None:
    """Put one :class:`RepeatFilter` on each logger of :data:`NOISY_LOGGERS` (replacing an earlier one)."""
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, RepeatFilter)]:
            logger.removeFilter(old)
        logger.addFilter(RepeatFilter(clock=clock))
