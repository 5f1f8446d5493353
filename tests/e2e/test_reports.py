"""POST /report against the real daemon process and a real Redis: reported failures open the breaker at once and
the probes bring the dependency back; a reported rate limit holds it until retry_at; reports never make a
dependency healthy; bad input; a flood of 50,000 reports a second is counted and never stops probing."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from datetime import datetime
from typing import Any

import pytest
from support import SECRETS, request, wait_for

from failsoft.devtools.localservers import free_port

pytestmark = pytest.mark.e2e

REPORT_TOKEN = "report-e2e-token-55d1"
SECRETS.add(REPORT_TOKEN)
JSON = {"Content-Type": "application/json"}


def config(redis_url: str, extra_deps: str = "") -> str:
    """A real Redis dependency probed every 200 ms, re-probed quickly while open; a report token."""
    return f"""
http: {{listen: "127.0.0.1:0", report_token: "${{REPORT_TOKEN}}"}}
defaults: {{interval: 200ms, down_interval: {{initial: 300ms, max: 1s}}}}
dependencies:
  cache: {{kind: redis, url: "{redis_url}"}}
{extra_deps}
policy: {{recover_after: 0s, rules: [{{level: cache_only, when: {{any_down: [cache]}}}}]}}
"""


def report(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """POST /report; (status, JSON body)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, answer, _ = request(url + "/report", "POST", raw, {**JSON, **(headers or {})})
    return status, answer


def metric(url: str, name: str, **labels: str) -> float:
    """One sample of /metrics (0 when absent)."""
    _, text, _ = request(url + "/metrics")
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in str(text).splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? ([0-9.e+-]+)$", line)
        if m and m[1] == name and ",".join(sorted((m[2] or "").split(","))) == want:
            return float(m[3])
    return 0.0


def dep(daemon: Any, name: str = "cache") -> dict[str, Any]:
    """The dependency's entry in the current State."""
    return dict(daemon.state()["dependencies"][name])


def parse_time(text: str) -> datetime:
    """A contract timestamp."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def daemon(run_daemon: Any, redis_server: Any) -> Any:
    """The daemon with a healthy Redis, at level full."""
    d = run_daemon(config(redis_server.url), env={"REPORT_TOKEN": REPORT_TOKEN})
    d.wait_state(lambda s: s["level"] == "full", what="level full")
    return d


def test_reported_failures_open_the_breaker_at_once_and_probes_bring_it_back(daemon: Any) -> None:
    """Five reported timeouts for a healthy Redis: down/open with reason reported_timeout and level cache_only
    right away (asserted within 3 s; printed); then the probes, which still succeed, take it through half_open
    back to healthy/closed and the level back to full. The reports are counted by dependency and outcome."""
    start = time.monotonic()
    status, body = report(daemon.url, [{"dependency": "cache", "ok": False, "reason": "timeout", "latency_ms": 500}]
                          * 5)
    assert (status, body) == (202, {"accepted": 5, "dropped": 0})
    state = daemon.wait_state(lambda s: s["dependencies"]["cache"]["state"] == "down", timeout=5,
                              what="cache down on reports")
    took = time.monotonic() - start
    print(f"reports -> down in {took * 1000:.0f} ms")
    assert took < 3
    cache = state["dependencies"]["cache"]
    assert (cache["breaker"], cache["reason"], state["level"]) == ("open", "reported_timeout", "cache_only")
    assert "5 failed calls in a row" in cache["last_error"]

    daemon.wait_state(lambda s: s["dependencies"]["cache"]["state"] == "healthy" and s["level"] == "full",
                      timeout=15, what="cache healthy again through probing")
    _, events, _ = request(daemon.url + "/history?limit=50")
    moves = [(e["state"], e["breaker"]) for e in events if e["type"] == "dependency_changed"]
    assert moves[-3:] == [("down", "open"), ("down", "half_open"), ("healthy", "closed")], moves
    assert metric(daemon.url, "failsoft_reports_total", dependency="cache", outcome="failure") == 5


def test_a_reported_rate_limit_holds_until_retry_at(daemon: Any) -> None:
    """A reported rate limit with retry_after 3s: degraded/rate_limited with retry_at 3 s ahead at once; the
    dependency is not probed again before retry_at, and the probe then makes it healthy."""
    status, _ = report(daemon.url, {"dependency": "cache", "ok": False, "reason": "rate_limited",
                                    "retry_after": "3s"})
    assert status == 202
    state = daemon.wait_state(lambda s: s["dependencies"]["cache"]["state"] == "degraded", timeout=5,
                              what="cache rate limited")
    cache = state["dependencies"]["cache"]
    assert cache["reason"] == "rate_limited"
    retry_at = parse_time(cache["retry_at"])
    assert 2.0 <= (retry_at - parse_time(cache["since"])).total_seconds() <= 3.5
    probes = metric(daemon.url, "failsoft_probes_total", dependency="cache", outcome="success")
    state = daemon.wait_state(lambda s: s["dependencies"]["cache"]["state"] == "healthy", timeout=15,
                              what="cache healthy after retry_at")
    assert parse_time(state["dependencies"]["cache"]["since"]) >= retry_at
    # At most the probe that was in flight when the report came, and the one at retry_at, ran in between.
    assert metric(daemon.url, "failsoft_probes_total", dependency="cache", outcome="success") - probes <= 3


def test_reports_never_make_a_dependency_healthy(run_daemon: Any, redis_server: Any) -> None:
    """A TCP dependency nobody listens on stays down/open however many successes the app reports."""
    port = free_port()
    d = run_daemon(config(redis_server.url, f'  broker: {{kind: tcp, address: "127.0.0.1:{port}"}}'),
                   env={"REPORT_TOKEN": REPORT_TOKEN})
    d.wait_state(lambda s: s["dependencies"]["broker"]["state"] == "down", what="broker down")
    for _ in range(3):
        assert report(d.url, [{"dependency": "broker", "ok": True, "latency_ms": 1}] * 1000)[0] == 202
    wait_for(lambda: metric(d.url, "failsoft_reports_total", dependency="broker", outcome="success") == 3000, 10,
             what="3000 reports judged")
    broker = dep(d, "broker")
    assert (broker["state"], broker["breaker"]) == ("down", "open")


def test_bad_reports_are_refused_by_the_process(daemon: Any) -> None:
    """Unknown dependency and wrong types: 400 naming them; 10,000 reports in one body: 413; a wrong token from
    loopback: 403; the right token: 202. Nothing refused is counted."""
    status, body = report(daemon.url, {"dependency": "nope", "ok": False})
    assert status == 400
    assert "unknown dependency 'nope'" in body["error"]["message"]
    status, body = report(daemon.url, [{"dependency": "cache", "ok": True}, {"dependency": "cache", "ok": 1}])
    assert status == 400
    assert "report [1]: ok is required: true or false" in body["error"]["message"]
    status, body = report(daemon.url, {"dependency": "cache", "ok": False, "latency_ms": "slow"})
    assert (status, "latency_ms" in body["error"]["message"]) == (400, True)
    status, body = report(daemon.url, [{"dependency": "cache", "ok": False, "reason": "timeout"}] * 10_000)
    assert (status, body["error"]["code"]) == (413, "too_large")
    status, body = report(daemon.url, {"dependency": "cache", "ok": True}, {"Authorization": "Bearer wrong"})
    assert (status, body["error"]["code"]) == (403, "forbidden")
    assert REPORT_TOKEN not in json.dumps(body)
    status, _ = report(daemon.url, {"dependency": "cache", "ok": True},
                       {"Authorization": f"Bearer {REPORT_TOKEN}"})
    assert status == 202
    wait_for(lambda: metric(daemon.url, "failsoft_reports_total", dependency="cache", outcome="success") == 1, 10,
             what="the one accepted report counted")
    assert metric(daemon.url, "failsoft_reports_total", dependency="cache", outcome="failure") == 0
    assert dep(daemon)["state"] == "healthy"


def test_a_flood_is_counted_and_never_stops_probing(daemon: Any) -> None:
    """About 50,000 successful-call reports a second for 2 s (4 connections, bodies of 1,000): every report is
    either accepted or dropped and counted; probing goes on meanwhile (probe count grows, /healthz answers) and
    the dependency stays healthy."""
    host, port = daemon.url.removeprefix("http://").split(":")
    body = json.dumps([{"dependency": "cache", "ok": True, "latency_ms": 3}] * 1000).encode()
    probes_before = metric(daemon.url, "failsoft_probes_total", dependency="cache", outcome="success")
    totals = {"accepted": 0, "dropped": 0, "sent": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + 2.0
    per_thread_rate = 50_000 / 1000 / 4  # bodies per second per connection

    def send() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        n = 0
        while time.monotonic() < deadline:
            conn.request("POST", "/report", body, JSON)
            resp = conn.getresponse()
            answer = json.loads(resp.read())
            assert resp.status == 202, answer
            with lock:
                totals["accepted"] += answer["accepted"]
                totals["dropped"] += answer["dropped"]
                totals["sent"] += 1000
            n += 1
            pause = (deadline - 2.0 + n / per_thread_rate) - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        conn.close()

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    healthz = []
    while any(t.is_alive() for t in threads):
        healthz.append(request(daemon.url + "/healthz", timeout=5)[0])
        time.sleep(0.2)
    for t in threads:
        t.join()
    probes_after = metric(daemon.url, "failsoft_probes_total", dependency="cache", outcome="success")
    print(f"flood: sent {totals['sent']}, accepted {totals['accepted']}, dropped {totals['dropped']}, "
          f"probes during it {probes_after - probes_before:.0f}")
    assert totals["sent"] >= 20_000  # the loop really flooded (a slow shared machine may not reach 100,000)
    assert totals["accepted"] + totals["dropped"] == totals["sent"]
    assert set(healthz) == {200}
    wait_for(lambda: metric(daemon.url, "failsoft_reports_total", dependency="cache", outcome="success")
             == totals["accepted"], 15, what="every accepted report judged")
    assert metric(daemon.url, "failsoft_reports_dropped_total") == totals["dropped"]
    # Probes every 200 ms: about 10 in the 2 s of flood; at least 3 of them prove the flood did not stop them.
    assert probes_after >= probes_before + 3, (probes_before, probes_after)
    assert dep(daemon)["state"] == "healthy"
