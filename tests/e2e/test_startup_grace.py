"""Startup grace end to end: a real Redis that comes up 5 s after the daemon (as a database behind another sidecar
does) never makes the published level cache_only; the same start without a grace does."""

from __future__ import annotations

import time
from typing import Any

import pytest
from support import DaemonProcess, wait_for

pytestmark = pytest.mark.e2e


def config(url: str, grace: str) -> str:
    """cache (a real Redis) decides cache_only; fast probes; the given startup_grace."""
    return f"""
service: grace-e2e
http: {{listen: "127.0.0.1:0"}}
defaults: {{interval: 200ms, fast_interval: 100ms, timeout: 500ms, unhealthy_threshold: 2, startup_grace: {grace},
            down_interval: {{initial: 200ms, max: 500ms}}}}
dependencies:
  cache: {{kind: redis, url: "{url}"}}
policy:
  levels: [full, degraded, cache_only]
  recover_after: 1s
  rules: [{{level: cache_only, when: {{any_down: [cache]}}}}]
"""


def test_a_dependency_that_comes_up_5s_after_the_daemon_never_publishes_cache_only(
    run_daemon: Any, own_redis: Any
) -> None:
    """Redis is down when two daemons start: the one with the default-like grace (30 s) publishes full and says
    ``starting`` while Redis refuses connections for 5 s, and never cache_only, neither in its States nor in its
    events; once Redis is up, starting ends. The one with ``startup_grace: 0s`` publishes cache_only at once."""
    own_redis.kill()
    started = time.monotonic()
    graced: DaemonProcess = run_daemon(config(own_redis.url, "30s"))
    strict: DaemonProcess = run_daemon(config(own_redis.url, "0s"))
    seen: list[dict[str, Any]] = []

    def sample() -> dict[str, Any]:
        s = graced.state()
        seen.append(s)
        return s

    first = sample()
    assert first["level"] == "full" and first["starting"] is True
    assert first["dependencies"]["cache"]["state"] == "down" and first["dependencies"]["cache"]["starting"] is True
    strict.wait_state(lambda s: s["level"] == "cache_only", what="cache_only without a grace")
    # Redis stays away for 5 s after the daemon's start, refusing every probe meanwhile.
    wait_for(lambda: sample()["dependencies"]["cache"]["consecutive_failures"] >= 3 and
             time.monotonic() - started >= 5, 30, what="5 s of refused probes")
    own_redis.start()
    wait_for(lambda: (s := sample())["dependencies"]["cache"]["state"] == "healthy" and not s["starting"], 30,
             what="cache healthy and starting over")
    assert {s["level"] for s in seen} == {"full"}, sorted({s["level"] for s in seen})
    assert any(s["starting"] for s in seen) and not seen[-1]["starting"]
    levels = [e["level"] for e in graced.get("/history?limit=1000")[1] if e["type"] == "level_changed"]
    assert levels == ["full"]
    assert graced.get("/readyz")[0] == 200
