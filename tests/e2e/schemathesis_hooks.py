"""schemathesis hooks for tests/e2e/test_openapi.py (loaded through ``SCHEMATHESIS_HOOKS``).

A blocking query (``GET /service-level?index=N``) parks for ``wait`` (default and at most 5 minutes) when N is the
current seq. Generated cases keep every parameter they have, but a valid ``wait`` longer than
``MAX_TEST_WAIT`` (or none at all next to an ``index``) becomes ``MAX_TEST_WAIT``, so the run stays bounded; an
invalid ``wait`` is left alone (it must get its 400).

The event stream never ends by itself and schemathesis reads its first message: a ``Last-Event-ID`` that could
name a live event (digits, or ``<boot>-<seq>``) may resume with "nothing missed" and then no message for 15 s, so
such a value becomes one that names no event (a fresh snapshot). ``test_openapi.py`` checks the resume paths
itself, with deadlines.
"""

from __future__ import annotations

import re
from typing import Any

import schemathesis

from failsoft.daemon.api import parse_http_duration

MAX_TEST_WAIT = "300ms"
LIVE_ID = re.compile(r"\s*(?:[0-9A-Za-z_.]*-)?[0-9]+\s*")
UNKNOWN_ID = "no-such-event"


@schemathesis.hook
def map_query(context: schemathesis.HookContext, query: dict[str, Any] | None) -> dict[str, Any] | None:
    """Bound the wait of generated blocking queries."""
    del context
    if not isinstance(query, dict) or "index" not in query:
        return query
    wait = query.get("wait")
    if wait is None:
        return {**query, "wait": MAX_TEST_WAIT}
    try:
        seconds = parse_http_duration(str(wait))
    except ValueError:
        return query
    return {**query, "wait": MAX_TEST_WAIT} if seconds > parse_http_duration(MAX_TEST_WAIT) else query


@schemathesis.hook
def map_headers(context: schemathesis.HookContext, headers: dict[str, Any] | None) -> dict[str, Any] | None:
    """Keep generated ``Last-Event-ID`` values from naming a live event (see the module docstring)."""
    del context
    if not isinstance(headers, dict):
        return headers
    for name in list(headers):
        if name.lower() == "last-event-id" and LIVE_ID.fullmatch(str(headers[name])):
            headers = {**headers, name: UNKNOWN_ID}
    return headers
