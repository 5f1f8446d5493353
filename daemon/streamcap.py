"""``http.max_streams``: how many event streams (``GET /service-level/events``) the daemon serves at once.

Each idle stream costs about 18 KiB of memory (measured by ``tests/bench/sse_memory.py``), so the cap is what
bounds the daemon's memory when many readers follow the level; a container's memory limit is sized from it
(docs/kubernetes.md, "Sizing"). Past the cap a new stream gets 503 ``too_many_streams``.
"""

from __future__ import annotations

from typing import Any

from failsoft.daemon.yamlread import Reader, show

DEFAULT_MAX_STREAMS = 10_000  # the same as failsoft.daemon.stream.MAX_STREAMS (a test checks it)
MOST_STREAMS = 100_000  # beyond this the descriptor limit, not the cap, would be what stops new streams


def read_max_streams(r: Reader, node: dict[str, Any]) -> int:
    """``http.max_streams`` from the ``http`` mapping: a whole number from 1 to 100,000, else the default."""
    if "max_streams" not in node:
        return DEFAULT_MAX_STREAMS
    value = node["max_streams"]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MOST_STREAMS:
        r.error("http.max_streams", f"expected a whole number from 1 to {MOST_STREAMS:,}, like 2000, got {show(value)}")
        return DEFAULT_MAX_STREAMS
    return value
