"""Log lines a client can cause are bounded in length and in rate, and redaction is total and linear."""

from __future__ import annotations

import errno
import logging

from failsoft.daemon.logguard import RateLimit, RepeatFilter, bounded, excerpt
from failsoft.daemon.redact import Redactor


class ManualClock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_limit_allows_a_burst_then_counts_the_rest() -> None:
    """Five per period pass; the rest are counted, and the first one of the next period carries the count."""
    clock = ManualClock()
    limit = RateLimit(burst=5, period=10.0, clock=clock)
    assert [limit.allow() for _ in range(8)] == [0, 0, 0, 0, 0, None, None, None]
    clock.now = 10.0
    assert limit.allow() == 3
    assert limit.allow() == 0


def record(msg: str, exc: BaseException | None = None) -> logging.LogRecord:
    """A stdlib log record as the asyncio logger makes it."""
    return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, None,
                             (type(exc), exc, None) if exc else None)


def test_repeat_filter_limits_each_message_and_reports_the_suppressed() -> None:
    """Repeats of one message are cut to the burst per period; the next one says how many were dropped; another
    message has its own budget."""
    clock = ManualClock()
    f = RepeatFilter(burst=2, period=10.0, clock=clock)
    assert [f.filter(record("accept failed")) for _ in range(5)] == [True, True, False, False, False]
    assert f.filter(record("something else"))
    clock.now = 11.0
    r = record("accept failed")
    assert f.filter(r)
    assert r.getMessage() == "accept failed (3 similar lines suppressed)"


def test_repeat_filter_drops_the_traceback_of_descriptor_exhaustion_only() -> None:
    """An EMFILE from accept() is one line with the error and no traceback; other exceptions keep theirs."""
    f = RepeatFilter()
    emfile = record("socket.accept() out of system resource", OSError(errno.EMFILE, "Too many open files"))
    assert f.filter(emfile)
    assert emfile.exc_info is None
    assert emfile.getMessage() == "socket.accept() out of system resource ([Errno 24] Too many open files)"
    other = record("Task exception was never retrieved", ConnectionError("boom"))
    assert f.filter(other)
    assert other.exc_info is not None


def test_repeat_filter_kinds_are_bounded() -> None:
    """Messages that vary (each with a peer address) share one budget beyond max_kinds: memory is bounded."""
    f = RepeatFilter(burst=1, max_kinds=3)
    passed = sum(f.filter(record(f"error from peer {i}")) for i in range(100))
    assert passed == 4  # three kinds of their own, then one for the shared rest


def test_bounded_keeps_head_and_tail_and_masks_a_secret_across_the_cut() -> None:
    """A long field keeps its head and tail around a marker, within the limit plus the marker; a secret that
    crosses the cut is masked whole, not cut in half."""
    secret = "s3cr3t-" + "x" * 40
    redact = bounded(Redactor([secret]), limit=400, margin=100)
    text = "a" * 290 + secret + "b" * 2000 + "Error: the end"
    out = redact(text)
    assert out.startswith("a" * 290 + "***")
    assert out.endswith("Error: the end")
    assert "characters cut" in out
    assert "s3cr3t" not in out and "xxxxx" not in out
    assert len(out) < 400 + 60


def test_short_fields_are_redacted_unchanged() -> None:
    """Below the limit, bounded redaction is plain redaction."""
    redact = bounded(Redactor(["hunter2-pw"]))
    assert redact("password hunter2-pw here") == "password *** here"


def test_redaction_keeps_protocol_prose_and_masks_credentials() -> None:
    """"Invalid header token: ..." (aiohttp's message) stays readable; credentials in URL, key=value, JSON,
    YAML and bearer forms are masked."""
    r = Redactor()
    assert r("400, message: Invalid header token: b'x'") == "400, message: Invalid header token: b'x'"
    assert r("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert r("host=db password=hunter2 port=5") == "host=db password=*** port=5"
    assert r('{"token": "abcd"}') == '{"token": ***'
    assert r("  api_key: sk-1234") == "  api_key: ***"
    assert r("Authorization: Bearer abcdefgh") == "Authorization: Bearer ***"


def test_redaction_of_attack_shaped_text_is_complete_and_bounded() -> None:
    """Runs of letters, colons and schemes (the shapes that made the old URL pattern quadratic) go through the
    bounded redactor in one piece, shortened to the limit, with a credential after them still masked."""
    r = bounded(Redactor())
    for unit in ("a", "a:", "a://", "a://b:", "password ", "Bearer ", "b:"):
        text = "GET /" + unit * (60_000 // len(unit)) + "\0"
        out = r(text)
        assert len(out) < 4200
    assert r("x" * 10 + " redis://:pw-123@h") == "x" * 10 + " redis://:***@h"


def test_excerpt_escapes_control_bytes_and_counts_the_rest() -> None:
    """Client input in a log line is escaped (NUL and newlines visible) and cut with the count of the rest."""
    assert excerpt(b"GET /\x00\n" + b"a" * 200, limit=10) == "GET /\\x00\\naaa... (197 more)"
    assert excerpt("short") == "short"
