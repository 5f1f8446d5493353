"""The identity of a published State across restarts: ``<boot>-<seq>``.

``seq`` starts again at 0 when the daemon restarts, so a bare seq held by a reader (an SSE ``Last-Event-ID``, a
long-poll ``index``, an ETag) can name a State of the previous process that has the same number as the current
one. Every identity the daemon hands out therefore carries the process's ``boot``: the SSE ``id:`` and the ETag's
tag are ``<boot>-<seq>`` (the SSE spec makes the id an opaque string), and one from another boot never matches,
so its reader gets the current State at once. These parsers are total: any text gives a value or None.
"""

from __future__ import annotations

import re

_ID = re.compile(r"([0-9A-Za-z_.]{1,64})-([0-9]{1,18})")
_SEQ = re.compile(r"[0-9]{1,18}")


def parse_state_id(text: str | None) -> tuple[str, int] | None:
    """``(boot, seq)`` from ``<boot>-<seq>``; None for anything else (a bare number too: its boot is unknown)."""
    if text is None:
        return None
    match = _ID.fullmatch(text.strip())
    return (match[1], int(match[2])) if match else None


def parse_index(raw: str) -> tuple[str | None, int] | None:
    """A long-poll ``index``: ``<boot>-<seq>`` (restart-safe) or a bare seq (boot None); None when neither."""
    if _SEQ.fullmatch(raw):
        return None, int(raw)
    return parse_state_id(raw)


def index_is_current(index: tuple[str | None, int], boot: str, seq: int) -> bool:
    """Whether a long-poll ``index`` names the State now published (the query then waits for the next one).

    A bare seq cannot say which process it came from; it is taken as this one's. With a boot, one from another
    process never names the current State, whatever its seq.
    """
    given_boot, given_seq = index
    return given_seq == seq and (given_boot is None or given_boot == boot)


def etag_matches(header: str | None, etag: str) -> bool:
    """RFC 9110 ``If-None-Match`` with the weak comparison: ``*``, or any listed tag, ``W/`` or not, equal to
    ``etag`` (``Published.etag``, ``W/"<boot>-<seq>"``): a tag kept from another process (or an older ``"<seq>"``
    one) never matches."""
    if header is None:
        return False
    ours = etag.removeprefix("W/")
    return any(tag == "*" or tag.removeprefix("W/") == ours for tag in (t.strip() for t in header.split(",")))
