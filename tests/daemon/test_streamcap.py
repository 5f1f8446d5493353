"""http.max_streams: the config key reaches the running daemon's event stream endpoint.

The cap itself (503 ``too_many_streams`` past it) is tested on EventStreams in test_stream.py; here a whole
daemon started from a config with ``max_streams: 1`` serves one stream and refuses the second. The key's
validation is in testdata/invalid/max_streams_*.yaml.
"""

from __future__ import annotations

import aiohttp

from failsoft.daemon import stream
from failsoft.daemon.app import Daemon
from failsoft.daemon.config import parse_config
from failsoft.daemon.streamcap import DEFAULT_MAX_STREAMS

CONFIG = """
service: streamcap-test
http: {listen: "127.0.0.1:0", max_streams: 1}
dependencies:
  db: {kind: tcp, address: "127.0.0.1:1", interval: 1s, timeout: 200ms}
"""


def test_the_default_is_the_stream_modules_cap() -> None:
    """Without the key the daemon keeps the cap it always had (failsoft.daemon.stream.MAX_STREAMS)."""
    assert DEFAULT_MAX_STREAMS == stream.MAX_STREAMS
    assert parse_config("http: {}\n", {}).http.max_streams == stream.MAX_STREAMS


async def test_the_daemon_serves_at_most_max_streams_event_streams() -> None:
    """With http.max_streams: 1 the first stream gets its snapshot and the second gets 503 too_many_streams."""
    daemon = await Daemon.start(parse_config(CONFIG, {}))
    url = f"http://127.0.0.1:{daemon.port}/service-level/events"
    try:
        await daemon.runtime.hub.wait_past(0, 10)
        timeout = aiohttp.ClientTimeout(total=20)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as first:
            assert first.status == 200
            seen = b""
            while b"event: snapshot" not in seen:  # after retry: and, maybe, a comment line
                seen += await first.content.readuntil(b"\n\n")
            async with session.get(url) as second:
                assert second.status == 503
                assert (await second.json())["error"]["code"] == "too_many_streams"
    finally:
        await daemon.stop()
