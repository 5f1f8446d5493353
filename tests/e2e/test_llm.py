"""LLM providers end to end: the daemon process against the provider simulator (a real HTTP server).

Every row of the classification, failover within 2 s, all providers down -> limited, no ping-pong when a
preferred provider comes back, a rate limit keeping every request away until its retry time, and API keys
nowhere in what the daemon says.
"""

from __future__ import annotations

import itertools
import json
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from support import SECRETS, DaemonProcess, request, wait_for

from failsoft.devtools.llmsim import ThreadedSimulator

pytestmark = pytest.mark.e2e


def new_key(prefix: str) -> str:
    """A random API key, registered so that the session fails if any daemon ever prints it."""
    key = f"{prefix}-{secrets.token_hex(12)}"
    SECRETS.add(key)
    return key


def config(sim: ThreadedSimulator, deps: dict[str, dict[str, Any]], keys: dict[str, str], extra: str = "") -> str:
    """A daemon config: each dependency points at the simulated provider of the same name; keys come from env."""
    lines = ['http: {listen: "127.0.0.1:0"}', "dependencies:"]
    for name, overrides in deps.items():
        dep = {**sim.dependency_config(name), "api_key": f"${{KEY_{name}}}", **overrides}
        lines.append(f"  {name}: {json.dumps(dep)}")
    return "\n".join(lines) + "\n" + extra + "\n" + "".join(f"# key env: KEY_{n}\n" for n in keys)


def env_for(keys: dict[str, str]) -> dict[str, str]:
    """The environment that hands the keys to the daemon."""
    return {f"KEY_{name}": key for name, key in keys.items()}


@pytest.fixture
def start_sim() -> Iterator[Callable[..., ThreadedSimulator]]:
    """Start provider simulators in background threads; all are stopped after the test."""
    started: list[ThreadedSimulator] = []

    def start(providers: dict[str, str], keys: dict[str, str] | None = None) -> ThreadedSimulator:
        sim = ThreadedSimulator(providers, keys).start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


def at_epoch(text: str) -> float:
    """Epoch seconds of an ISO timestamp from the daemon."""
    return datetime.fromisoformat(text).timestamp()


def history(d: DaemonProcess, type_: str) -> list[dict[str, Any]]:
    """The events of one type from /history, oldest first."""
    return [e for e in d.get("/history?limit=1000")[1] if e["type"] == type_]


def assert_no_key_anywhere(d: DaemonProcess, keys: list[str]) -> None:
    """No key in /service-level, /history, /metrics or the daemon's output."""
    said = [json.dumps(d.state()), json.dumps(d.get("/history?limit=1000")[1]), str(d.get("/metrics")[1]),
            d.output()]
    for key in keys:
        assert not any(key in text for text in said), f"an API key ({key[:6]}...) leaked"


# -- every row of the classification --------------------------------------------------------------------------

RATE_LIMITED = ("degraded", "rate_limited")
# name -> (wire, simulator mode and params, config overrides, expected (state, reason))
ROWS: dict[str, tuple[str, dict[str, Any], dict[str, Any], tuple[str, str | None]]] = {
    "ok_openai": ("openai", {}, {}, ("healthy", None)),
    "ok_anthropic_completion": ("anthropic", {}, {"probe": "completion", "model": "claude-x"}, ("healthy", None)),
    "ok_gemini_completion": ("gemini", {}, {"probe": "completion", "model": "gemini-x"}, ("healthy", None)),
    "auth_openai": ("openai", {"mode": "401"}, {}, ("down", "auth")),
    "forbidden_anthropic": ("anthropic", {"mode": "403"}, {}, ("down", "auth")),
    "wrong_key_gemini": ("gemini", {}, {"api_key": "${KEY_wrong}"}, ("down", "auth")),
    "notfound_openai": ("openai", {"mode": "404"}, {}, ("down", "misconfigured")),
    "quota_openai": ("openai", {"mode": "quota"}, {}, ("down", "quota_exhausted")),
    "quota_anthropic": ("anthropic", {"mode": "quota"}, {}, ("down", "quota_exhausted")),
    "quota_gemini": ("gemini", {"mode": "quota"}, {}, ("down", "quota_exhausted")),
    "rl_seconds": ("anthropic", {"mode": "429", "retry_after": 40, "form": "seconds"}, {}, RATE_LIMITED),
    "rl_ms": ("openai", {"mode": "429", "retry_after": 40, "form": "ms"}, {}, RATE_LIMITED),
    "rl_date": ("anthropic", {"mode": "429", "retry_after": 40, "form": "date"}, {}, RATE_LIMITED),
    "rl_gemini": ("gemini", {"mode": "429", "retry_after": 40, "form": "gemini"}, {}, RATE_LIMITED),
    "rl_reset": ("openai", {"mode": "429", "retry_after": 40, "form": "reset"}, {}, RATE_LIMITED),
    "headroom": ("anthropic", {"mode": "healthy", "limit": 100, "remaining": 1}, {}, ("degraded", "low_headroom")),
    "e500": ("openai", {"mode": "500"}, {}, ("down", "http_5xx")),
    "e503": ("gemini", {"mode": "503"}, {}, ("down", "http_5xx")),
    "e529": ("anthropic", {"mode": "529"}, {}, ("down", "overloaded")),
    "hang": ("openai", {"mode": "hang"}, {}, ("down", "timeout")),
    "reset": ("anthropic", {"mode": "reset"}, {}, ("down", "connection_reset")),
    "bad_json": ("openai", {"mode": "bad_json"}, {}, ("down", "bad_response")),
    "truncated": ("gemini", {"mode": "truncated"}, {}, ("down", "truncated_response")),
    "huge": ("openai", {"mode": "huge"}, {}, ("healthy", None)),
    "loop": ("anthropic", {"mode": "redirect_loop"}, {}, ("down", "redirect_loop")),
    "tls": ("openai", {}, {"tls": True}, ("down", "tls")),
    "refused": ("openai", {}, {"refused": True}, ("down", "connection_refused")),
}


def closed_port() -> int:
    """A port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_every_classification_row_end_to_end(run_daemon: Callable[..., DaemonProcess], start_sim: Any) -> None:
    """Each failure the contract names, in each wire format, shows up in /service-level with its reason."""
    keys = {name: new_key("sk-e2e") for name in ROWS}
    keys["wrong"] = new_key("AIza-wrong")
    sim = start_sim({name: row[0] for name, row in ROWS.items()}, {n: k for n, k in keys.items() if n != "wrong"})
    deps: dict[str, dict[str, Any]] = {}
    for name, (_, mode, overrides, _) in ROWS.items():
        if mode:
            sim.set_mode(name, **mode)
        dep = {k: v for k, v in overrides.items() if k not in ("tls", "refused")}
        if overrides.get("tls"):
            dep["base_url"] = sim.base_url(name).replace("http://", "https://")
        if overrides.get("refused"):
            dep["base_url"] = f"http://127.0.0.1:{closed_port()}/v1"
        deps[name] = dep
    d = run_daemon(config(sim, deps, keys), env=env_for(keys))

    def mismatches() -> dict[str, Any]:
        got = d.state()["dependencies"]
        return {n: (got[n]["state"], got[n]["reason"]) for n, row in ROWS.items()
                if (got[n]["state"], got[n]["reason"]) != row[3]}

    wait_for(lambda: not mismatches(), 30, what="every dependency in its expected state")
    state = d.state()
    deps_state = state["dependencies"]
    for name in ("auth_openai", "forbidden_anthropic", "wrong_key_gemini", "quota_openai", "notfound_openai"):
        # Fatal answers: down at once (one failure), then left alone until down_interval.max.
        assert (deps_state[name]["breaker"], deps_state[name]["consecutive_failures"]) == ("open", 1), name
        assert sim.requests(name) == 1, name
    for name in [n for n in ROWS if n.startswith("rl_")]:
        assert deps_state[name]["retry_at"] is not None, name
        assert sim.requests(name) == 1, f"{name} was contacted again before its retry time"
    assert deps_state["headroom"]["ratelimit"]["requests"]["remaining"] == 1
    assert deps_state["headroom"]["ratelimit"]["requests"]["limit"] == 100
    completion = sim.received("ok_anthropic_completion")[-1]
    assert (completion.path, completion.body["max_tokens"]) == ("/v1/messages", 1)
    assert sim.received("ok_gemini_completion")[-1].body["generationConfig"] == {"maxOutputTokens": 1}
    assert_no_key_anywhere(d, list(keys.values()))


# -- failover ------------------------------------------------------------------------------------------------------


def test_failover_as_the_preferred_provider_goes_down_then_limited_when_all_fail(
    run_daemon: Callable[..., DaemonProcess], start_sim: Any
) -> None:
    """The preferred provider fails hard -> active_llm moves in the very evaluation that marks it down (no probe
    result between the two events); every provider down -> `limited`."""
    keys = {"openai": new_key("sk-e2e"), "anthropic": new_key("sk-ant-e2e")}
    sim = start_sim({"openai": "openai", "anthropic": "anthropic"}, keys)
    d = run_daemon(config(sim, {"openai": {}, "anthropic": {}}, keys,
                          "llm_failover: [openai, anthropic]\ndefaults: {interval: 500ms}"), env=env_for(keys))
    d.wait_state(lambda s: s["active_llm"] == "openai" and s["level"] == "full", what="openai active, level full")

    sim.set_mode("openai", "error")
    state = d.wait_state(lambda s: s["active_llm"] == "anthropic", timeout=20, what="failover to anthropic")
    everything = d.get("/history?limit=1000")[1]
    down = next(e for e in everything if e["type"] == "dependency_changed" and e["dependency"] == "openai"
                and e["state"] == "down")
    moved = next(e for e in everything if e["type"] == "llm_failover" and e["active_llm"] == "anthropic")
    between = [e["type"] for e in everything if down["seq"] < e["seq"] < moved["seq"]]
    assert set(between) <= {"level_changed"}, between  # the same evaluation: no other dependency change between
    # 5xx is a failure through the breaker: down after unhealthy_threshold (3) failures, not at the first.
    assert (state["dependencies"]["openai"]["state"], state["dependencies"]["openai"]["reason"]) == ("down", "http_5xx")
    assert state["dependencies"]["openai"]["consecutive_failures"] == 3

    sim.set_mode("anthropic", "reset")
    state = d.wait_state(lambda s: s["level"] == "limited", timeout=10, what="level limited")
    assert state["active_llm"] is None
    assert state["capabilities"] == ["search", "write"]

    events = history(d, "llm_failover")
    assert [(e["previous"], e["active_llm"]) for e in events] == [
        (None, "openai"), ("openai", "anthropic"), ("anthropic", None)]
    assert "openai down" in events[1]["reason"]
    assert "anthropic down" in events[2]["reason"]
    assert_no_key_anywhere(d, list(keys.values()))


POLICY = """
policy:
  levels: [full, degraded, limited, cache_only]
  rules:
    - level: limited
      when: {all_down: [openai, anthropic]}
    - level: degraded
      when: {any_not_healthy: [openai, anthropic]}
  recover_after: 1500ms
"""


def test_going_back_to_the_preferred_provider_waits_recover_after(
    run_daemon: Callable[..., DaemonProcess], start_sim: Any
) -> None:
    """A recovered preferred provider becomes active only once it has held for recover_after: no ping-pong."""
    keys = {"openai": new_key("sk-e2e"), "anthropic": new_key("sk-ant-e2e")}
    sim = start_sim({"openai": "openai", "anthropic": "anthropic"}, keys)
    sim.set_mode("openai", "500")
    fast = {"down_interval": {"initial": "200ms", "max": "400ms"}}
    d = run_daemon(config(sim, {"openai": fast, "anthropic": {}}, keys, "llm_failover: [openai, anthropic]" + POLICY),
                   env=env_for(keys))
    d.wait_state(lambda s: s["active_llm"] == "anthropic" and s["dependencies"]["openai"]["state"] == "down",
                 what="anthropic active while openai is down")

    sim.set_mode("openai", "healthy")
    d.wait_state(lambda s: s["dependencies"]["openai"]["state"] == "healthy", timeout=10, what="openai healthy")
    d.wait_state(lambda s: s["active_llm"] == "openai", timeout=20, what="back to openai")
    # By the daemon's own timestamps (not the test's, which see each change late): openai was healthy for at
    # least recover_after (1.5 s) before it became active again.
    healthy = next(e for e in history(d, "dependency_changed") if e["dependency"] == "openai"
                   and e["state"] == "healthy")
    back = history(d, "llm_failover")[-1]
    assert back["active_llm"] == "openai"
    assert at_epoch(back["at"]) - at_epoch(healthy["at"]) >= 1.5 - 0.001  # ms-rounded timestamps

    events = history(d, "llm_failover")
    assert [(e["previous"], e["active_llm"]) for e in events] == [(None, "anthropic"), ("anthropic", "openai")]
    assert events[1]["reason"].startswith("openai healthy")


# -- rate limits keep requests away ------------------------------------------------------------------------------


def test_retry_after_keeps_every_request_away_then_probing_resumes(
    run_daemon: Callable[..., DaemonProcess], start_sim: Any
) -> None:
    """429 with retry-after: 3 -> no request reaches the provider for 3 s (counted there), then probing resumes.

    Meanwhile a healthy second provider is preferred over the rate-limited first one.
    """
    keys = {"openai": new_key("sk-e2e"), "anthropic": new_key("sk-ant-e2e")}
    sim = start_sim({"openai": "openai", "anthropic": "anthropic"}, keys)
    d = run_daemon(config(sim, {"openai": {}, "anthropic": {}}, keys, "llm_failover: [openai, anthropic]"),
                   env=env_for(keys))
    d.wait_state(lambda s: s["active_llm"] == "openai", what="openai active")

    # The way a demo user breaks a provider: the simulator's control endpoint.
    status, _, _ = request(f"{sim.url}/_sim/openai", "POST", json.dumps(
        {"mode": "rate_limit", "retry_after": 3, "form": "seconds"}).encode(), {"Content-Type": "application/json"})
    assert status == 200
    switched = time.monotonic()
    state = d.wait_state(lambda s: s["dependencies"]["openai"]["reason"] == "rate_limited", what="openai rate limited")
    assert state["dependencies"]["openai"]["state"] == "degraded"
    assert state["dependencies"]["openai"]["retry_at"] is not None
    d.wait_state(lambda s: s["active_llm"] == "anthropic", what="the healthy provider preferred")

    def three_limited_requests() -> list[float] | None:
        times = [r.at for r in sim.received("openai") if r.at > switched]
        return times if len(times) >= 3 else None

    times = wait_for(three_limited_requests, 15, what="three requests after the 429")
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap >= 3.0 for gap in gaps), f"requests came back early: gaps {gaps}"
    assert all(gap < 5.0 for gap in gaps), f"probing did not resume promptly: gaps {gaps}"

    sim.set_mode("openai", "healthy")
    d.wait_state(lambda s: s["dependencies"]["openai"]["state"] == "healthy", timeout=10, what="openai healthy again")
    assert_no_key_anywhere(d, list(keys.values()))
