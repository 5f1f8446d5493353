"""What an operator reads: the first state of each dependency at info, a worse level at warning, breaker-only moves
not worded as state changes, last_error in ``failsoft status``, warnings for suspicious base URLs, and a concise
start-up (one line per dependency)."""

from __future__ import annotations

from typing import Any

import structlog
from support import DaemonProcess

from failsoft.client import Change, format_change
from failsoft.daemon.clock import ManualClock
from failsoft.daemon.config import parse_config
from failsoft.daemon.state import ServiceState
from failsoft.daemon.terminal import format_status
from failsoft.devtools.localservers import free_port
from failsoft.policies.model import BreakerState, DependencyStatus, DepState

CONFIG = """
service: ux
http: {listen: "127.0.0.1:0"}
defaults: {startup_grace: 0s}
dependencies:
  db: {kind: tcp, address: "127.0.0.1:1"}
  cache: {kind: tcp, address: "127.0.0.1:2"}
policy:
  levels: [full, degraded, cache_only]
  recover_after: 0s
  rules:
    - {level: cache_only, when: {any_down: [db]}}
    - {level: degraded, when: {any_not_healthy: [cache]}}
"""


def status(name: str, state: DepState, breaker: BreakerState = BreakerState.CLOSED, reason: str | None = None,
           probes: int = 1, *, error: str | None = None) -> DependencyStatus:
    """A probed status."""
    return DependencyStatus(name=name, kind="tcp", state=state, breaker=breaker, reason=reason, probes=probes,
                            last_error=error)


def logged(logs: list[dict[str, Any]], event: str) -> list[tuple[str, dict[str, Any]]]:
    """(log level, line) of every captured line with ``event``."""
    return [(e["log_level"], e) for e in logs if e["event"] == event]


def test_each_dependencys_first_state_is_logged_once_at_info() -> None:
    """One ``dependency_first_state`` line per dependency (with its state, reason and error), at info, also for
    one that is down; later probes of the same dependency add none."""
    state = ServiceState(parse_config(CONFIG, {}), ManualClock())
    with structlog.testing.capture_logs() as logs:
        state.update(status("db", DepState.HEALTHY))
        state.update(status("cache", DepState.DOWN, BreakerState.OPEN, "connection_refused", error="refused"))
        state.update(status("db", DepState.HEALTHY, probes=2))
    first = logged(logs, "dependency_first_state")
    assert [(lv, e["dependency"], e["state"], e["reason"], e["last_error"]) for lv, e in first] == [
        ("info", "db", "healthy", None, None), ("info", "cache", "down", "connection_refused", "refused")]


def test_a_worse_level_is_logged_at_warning_and_a_better_one_at_info() -> None:
    """The first level below the best, and every move to a worse level, are warnings; recoveries are info."""
    state = ServiceState(parse_config(CONFIG, {}), ManualClock())
    with structlog.testing.capture_logs() as logs:
        state.update(status("db", DepState.HEALTHY))
        state.update(status("cache", DepState.DEGRADED, reason="slow"))  # first level: degraded
        state.update(status("db", DepState.DOWN, BreakerState.OPEN, "timeout", probes=2))  # cache_only
        state.update(status("db", DepState.HEALTHY, probes=3))  # degraded again: better
        state.update(status("cache", DepState.HEALTHY, probes=2))  # full
    lines = [(lv, e["service_level"]) for lv, e in logged(logs, "level_changed")]
    assert lines == [("warning", "degraded"), ("warning", "cache_only"), ("info", "degraded"), ("info", "full")]


def test_a_breaker_only_move_is_not_worded_as_a_state_change() -> None:
    """down/open -> down/half_open logs ``breaker_half_open`` but no ``dependency_changed``; ``failsoft watch``
    prints ``cache still down, breaker half_open`` instead of ``down -> down``."""
    state = ServiceState(parse_config(CONFIG, {}), ManualClock())
    state.update(status("db", DepState.HEALTHY))
    state.update(status("cache", DepState.DOWN, BreakerState.OPEN, "connection_refused"))
    with structlog.testing.capture_logs() as logs:
        events = state.update(status("cache", DepState.DOWN, BreakerState.HALF_OPEN, "connection_refused", 2))
    assert [e["event"] for e in logs] == ["breaker_half_open"]
    event = events[0].to_dict("ux", "b00t")
    line = format_change(Change("dependency_changed", "degraded", "degraded", (), event))
    assert "cache still down, breaker half_open" in line and "down -> down" not in line
    moved = {**event, "previous": "healthy"}
    assert "cache healthy -> down (breaker half_open)" in format_change(
        Change("dependency_changed", "degraded", "degraded", (), moved))


def test_failsoft_status_shows_last_error_on_one_bounded_line() -> None:
    """The dependency table has a LAST ERROR column; a long or multi-line error is one line of at most 100
    characters."""
    state = ServiceState(parse_config(CONFIG, {}), ManualClock())
    state.update(status("db", DepState.HEALTHY))
    long_error = "cannot connect to 10.0.0.7:5432: Connection refused\n" + "x" * 300
    state.update(status("cache", DepState.DOWN, BreakerState.OPEN, "connection_refused", error=long_error))
    text = format_status(state.snapshot().to_dict())
    header = next(line for line in text.splitlines() if "DEPENDENCY" in line)
    assert header.rstrip().endswith("LAST ERROR")
    row = next(line for line in text.splitlines() if line.split()[:1] == ["cache"])
    assert "cannot connect to 10.0.0.7:5432: Connection refused x" in row
    assert row.rstrip().endswith("...") and len(row.split("connection_refused", 1)[1].strip()) == 100


def test_suspicious_base_urls_are_warned_and_good_ones_are_not() -> None:
    """openai_compatible without /v1, anthropic with /v1 (doubled by the probe), an endpoint given as base URL and
    an API key over plain http to another host are warnings with the path; the usual spellings are not."""
    config = parse_config("""
dependencies:
  vllm: {kind: llm, provider: openai_compatible, base_url: "http://127.0.0.1:8000"}
  claude: {kind: llm, provider: anthropic, base_url: "https://api.anthropic.com/v1", api_key: k}
  ep: {kind: llm, provider: openai, base_url: "https://api.openai.com/v1/chat/completions", api_key: k}
  clear: {kind: llm, provider: openai_compatible, base_url: "http://gw.internal/v1", api_key: k}
  good1: {kind: llm, provider: openai_compatible, base_url: "http://127.0.0.1:8000/v1/"}
  good2: {kind: llm, provider: anthropic, base_url: "https://proxy.example/anthropic", api_key: k}
  good3: {kind: llm, provider: openai, api_key: k}
""", {})
    by_dep = {w.split(".")[1] for w in config.warnings}
    assert by_dep == {"vllm", "claude", "ep", "clear"}, config.warnings
    assert any("dependencies.vllm.base_url: http://127.0.0.1:8000 has no /v1" in w for w in config.warnings)
    assert any("requests https://api.anthropic.com/v1/v1/models" in w for w in config.warnings)
    assert any("looks like an endpoint" in w for w in config.warnings)
    assert any("the API key travels unencrypted" in w for w in config.warnings)


def test_start_up_logs_one_line_per_dependency_and_nothing_else_at_info(run_daemon: Any) -> None:
    """A daemon with one dependency up and one refusing connections logs, at info or above, ``listening``, one
    ``dependency_first_state`` per dependency and the first ``level_changed``; the first failed probe is not
    logged a second time as ``probe_failed``."""
    import socket

    up = socket.create_server(("127.0.0.1", 0))
    try:
        d: DaemonProcess = run_daemon(f"""
http: {{listen: "127.0.0.1:0"}}
defaults: {{startup_grace: 0s, down_interval: {{initial: 5s, max: 5s}}}}
dependencies:
  db: {{kind: tcp, address: "127.0.0.1:{up.getsockname()[1]}"}}
  cache: {{kind: tcp, address: "127.0.0.1:{free_port()}"}}
""")
        d.wait_state(lambda s: s["level"] != "unknown")
        events = [line["event"] for line in d.lines() if line.get("level") != "debug"]
        assert sorted(events) == sorted(["listening", "dependency_first_state", "dependency_first_state",
                                         "level_changed"]), events
        first = {line["dependency"]: line for line in d.lines() if line.get("event") == "dependency_first_state"}
        assert (first["db"]["state"], first["cache"]["state"]) == ("healthy", "down")
        assert first["cache"]["last_error"].startswith("ConnectionRefusedError")
    finally:
        up.close()
