"""The status page in a real browser (headless system Chromium driven by Playwright) against the real daemon.

Each test records the page's console, script errors and requests: no console error, no request to another host.
``make screenshots`` (FAILSOFT_SCREENSHOTS=1) also writes docs/status-page.png and docs/status-page-degraded.png
from the demo test.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from browser import SCREENSHOTS, Recorder, launch, screenshot
from support import LOG_DIR, SECRETS, DaemonProcess, free_port, request, wait_for

from failsoft.daemon import stream
from failsoft.daemon.api import Runtime, build_app
from failsoft.daemon.clock import SystemClock
from failsoft.daemon.config import parse_config
from failsoft.daemon.hub import Hub
from failsoft.daemon.state import ServiceState
from failsoft.daemon.statuspage import routes as page_routes
from failsoft.policies.model import BreakerState, DependencyStatus, DepState

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "page-test-admin-token-5b1e"
CHANGE_WITHIN_MS = 2000  # a published change must be on the page this fast, without a reload
# What Chromium itself prints while the daemon is away (its own report of a refused connection); the page
# cannot silence these, and they are the only console lines tolerated, only in the restart test.
OUTAGE_NOISE = ("net::ERR_CONNECTION_REFUSED", "net::ERR_CONNECTION_RESET", "net::ERR_EMPTY_RESPONSE",
                "net::ERR_INCOMPLETE_CHUNKED_ENCODING", "EventSource's response has a status 503")

POLICY = """
policy:
  levels: [full, degraded, limited, cache_only]
  recover_after: 1s
  rules:
    - level: cache_only
      when: {any_down: [db]}
      message: Showing saved data; changes are paused
    - level: degraded
      when: {any_not_healthy: [db, cache]}
  capabilities:
    full: [chat, search, write]
    degraded: [chat, search, write]
    limited: [search, write]
    cache_only: [search]
"""
# Quick to notice a fault, slow to call a probe slow or failed: the machine is shared and loaded, and a probe
# that takes a second there must not make the level flicker under the test's feet.
FAST = "defaults: {interval: 300ms, fast_interval: 100ms, timeout: 2s, slow_threshold: 2s, unhealthy_threshold: 2, " \
       "down_interval: {initial: 200ms, max: 1s}}\n"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One headless Chromium for the module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def open_page(chromium: Any) -> Iterator[Callable[..., tuple[Any, Recorder]]]:
    """A factory: a fresh page (desktop size) on a URL, recorded from its first request."""
    contexts: list[Any] = []

    def open_(url: str, width: int = 1280, height: int = 900) -> tuple[Any, Recorder]:
        context = chromium.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        rec = Recorder()
        rec.attach(page)
        page.goto(url)
        return page, rec

    yield open_
    for c in contexts:
        c.close()


def expect() -> Any:
    """Playwright's assertions (imported late: the module must import without Playwright to skip cleanly)."""
    from playwright.sync_api import expect as pw_expect

    return pw_expect


def level_published(d: DaemonProcess, level: str, timeout: float = 15) -> dict[str, Any]:
    """Wait until the daemon publishes ``level`` (read over HTTP, as any client would)."""
    return d.wait_state(lambda s: s["level"] == level, timeout=timeout, what=f"level {level}")


def test_the_page_shows_the_level_and_follows_a_real_fault_and_an_override(
        run_daemon: Callable[..., DaemonProcess], own_postgres: Any, redis_server: Any, open_page: Any) -> None:
    """The page shows the level, its message, capabilities and every dependency; killing the test's PostgreSQL
    turns it to cache_only (db down, breaker open) and an override to limited (with its reason, shown as text even
    when it looks like markup, and its countdown) within 2 s of the daemon publishing each change, without a
    reload; the admin token never reaches the page; no console error, no request to another host."""
    SECRETS.add(ADMIN_TOKEN)
    d = run_daemon(f"""
service: page-e2e
http: {{listen: "127.0.0.1:0", admin_token: {ADMIN_TOKEN}}}
{FAST}dependencies:
  db: {{kind: postgres, dsn: "{own_postgres.dsn}"}}
  cache: {{kind: redis, url: "{redis_server.url}"}}
{POLICY}""")
    level_published(d, "full")
    page, rec = open_page(d.url + "/")
    ex = expect()
    ex(page.locator("#level")).to_have_text("full")
    ex(page.locator("#conn")).to_have_attribute("data-state", "live")
    ex(page.locator("#service")).to_have_text("page-e2e")
    ex(page.locator("#capabilities li")).to_have_text(["chat", "search", "write"])
    for name in ("db", "cache"):
        card = page.locator(f".dep[data-dependency={name}]")
        ex(card.locator(".pill")).to_have_text("healthy")
        ex(card.locator("[data-field=breaker]")).to_have_text("closed")
        ex(card.locator("[data-field=latency]")).to_have_text(re.compile(r"^\d+(\.\d)?$"))
    ex(page.locator("#level-card")).to_have_attribute("data-severity", "ok")
    ex(page.locator(".timeline .event", has_text="level unknown → full")).to_have_count(1)
    page.evaluate("() => { document.body.dataset.loadedOnce = 'yes'; }")  # gone if the page reloads

    own_postgres.kill()
    level_published(d, "cache_only")
    ex(page.locator("#level")).to_have_text("cache_only", timeout=CHANGE_WITHIN_MS)
    ex(page.locator("#level-card")).to_have_attribute("data-severity", "critical")
    ex(page.locator("#message")).to_have_text("Showing saved data; changes are paused")
    db = page.locator(".dep[data-dependency=db]")
    ex(db.locator(".pill")).to_have_text("down", timeout=CHANGE_WITHIN_MS)
    ex(db.locator("[data-field=breaker]")).to_have_text("open")
    ex(db.locator(".dep-reason")).not_to_be_empty()
    ex(page.locator(".timeline .event", has_text="→ cache_only")).to_have_count(1)

    hostile = '<img src=x id=pwned onerror="document.title=1">db maintenance'
    body = json.dumps({"level": "limited", "ttl": "10m", "reason": hostile}).encode()
    status, _, _ = request(d.url + "/override", "POST", body, {"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert status == 200
    level_published(d, "limited")
    ex(page.locator("#level")).to_have_text("limited", timeout=CHANGE_WITHIN_MS)
    ex(page.locator("#override")).to_be_visible()
    ex(page.locator("#override-text")).to_have_text(f"limited: {hostile}")
    ex(page.locator("#override-until")).to_have_text(re.compile(r"^ends in (9m|10m)"))
    assert page.locator("#pwned").count() == 0  # the reason stayed text: no element was made from it

    assert page.evaluate("() => document.body.dataset.loadedOnce") == "yes"
    assert ADMIN_TOKEN not in page.content()
    assert rec.problems() == []
    assert rec.foreign(d.url) == []
    assert any(u.endswith("/service-level/events") for u in rec.requests)


def test_the_page_recovers_by_itself_when_the_daemon_restarts_on_the_same_port(
        run_daemon: Callable[..., DaemonProcess], redis_server: Any, open_page: Any) -> None:
    """kill -9 of the daemon: the page says "disconnected" (and dims what it shows); a new daemon on the same port:
    the page is live again by itself, shows the new boot and marks the restart in its timeline. The only console
    lines are Chromium's own reports of the refused connections meanwhile."""
    port = free_port()
    config = f"""
service: page-restart
http: {{listen: "127.0.0.1:{port}"}}
{FAST}dependencies:
  cache: {{kind: redis, url: "{redis_server.url}"}}
"""
    first = run_daemon(config)
    old_boot = level_published(first, "full")["boot"]
    page, rec = open_page(first.url + "/")
    ex = expect()
    ex(page.locator("#boot")).to_have_text(old_boot)
    ex(page.locator("#conn")).to_have_attribute("data-state", "live")

    assert first.proc is not None
    first.proc.kill()
    first.proc.wait(10)
    ex(page.locator("#conn")).to_have_attribute("data-state", "disconnected", timeout=10_000)
    ex(page.locator("#conn-text")).to_contain_text("disconnected")
    ex(page.locator("#banner")).to_contain_text("Cannot reach the daemon: showing the last state it published")
    ex(page.locator("body")).to_have_class(re.compile(r"\bstale\b"))

    second = run_daemon(config)
    assert second.url == first.url
    new_boot = level_published(second, "full")["boot"]
    assert new_boot != old_boot
    ex(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=15_000)
    ex(page.locator("#boot")).to_have_text(new_boot, timeout=CHANGE_WITHIN_MS)
    ex(page.locator("#banner")).to_contain_text(f"boot {old_boot} → {new_boot}")  # replaces "Cannot reach"
    ex(page.locator(".timeline .event[data-type=restart]")).to_contain_text(f"new boot {new_boot}")
    ex(page.locator("#level")).to_have_text("full")
    ex(page.locator("body")).not_to_have_class(re.compile(r"\bstale\b"))
    assert rec.problems(tolerated=OUTAGE_NOISE) == []
    assert rec.foreign(first.url) == []


class DemoProcess:
    """``failsoft demo --port 0`` as a user runs it, its terminal output in a log file."""

    def __init__(self) -> None:
        self.log = LOG_DIR / f"demo-{time.monotonic_ns()}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "failsoft", "demo", "--port", "0"],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.PIPE)

    def output(self) -> str:
        """What the demo printed so far."""
        return self.log.read_text(errors="replace")

    def page_url(self) -> str:
        """The status page's URL, as the terminal shows it."""
        def found() -> str | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"the demo exited with {self.proc.returncode}:\n{self.output()}")
            m = re.search(r"Status page: (http://127\.0\.0\.1:\d+/)", self.output())
            return m.group(1) if m else None
        return wait_for(found, 60, what="the demo to print its status page URL")

    def stop(self) -> None:
        """Ctrl-C, as a user stops it; it removes its servers on the way out."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def spark_points(page: Any) -> list[int]:
    """How many points each dependency's sparkline has."""
    return list(page.evaluate(
        "() => [...document.querySelectorAll('.dep .spark')].map(s => { const l = s.querySelector('.spark-line');"
        " return l ? (l.getAttribute('d').match(/[ML]/g) || []).length : 0; })"))


def test_the_demo_opens_on_the_page_and_its_buttons_break_and_heal(open_page: Any) -> None:
    """``failsoft demo`` prints the page's URL before its help; the page there has the demo's fault buttons:
    "Crash PostgreSQL" turns the level to cache_only and the button into "Restart PostgreSQL", which brings it
    back to full; "Rate-limit OpenAI" makes openai degraded (rate_limited) with a live countdown to its retry.
    No console error, no request to another host."""
    SECRETS.update({"demo-key-openai", "demo-key-anthropic"})  # the demo's API keys: never in what it prints
    demo = DemoProcess()
    try:
        url = demo.page_url()
        out = demo.output()
        assert out.index("Status page:") < out.index("failsoft demo is running")
        page, rec = open_page(url)
        ex = expect()
        ex(page.locator("#level")).to_have_text("full", timeout=30_000)
        buttons = page.locator(".demo-button")
        ex(buttons).to_have_count(5)
        ex(page.locator(".demo-button .demo-action")).to_have_text(
            ["Crash PostgreSQL", "Hang Redis", "Break OpenAI", "Break Anthropic", "Rate-limit OpenAI"])
        ex(page.locator(".dep")).to_have_count(4)
        if SCREENSHOTS:  # a sparkline worth looking at: a dozen samples
            wait_for(lambda: min(spark_points(page)) >= 12, 60, interval=0.5, what="sparklines to fill")
            ex(page.locator("#level")).to_have_text("full")
            screenshot(page, "status-page.png")

        page.locator(".demo-button[data-fault=db]").click()
        ex(page.locator("#level")).to_have_text("cache_only", timeout=15_000)
        ex(page.locator(".dep[data-dependency=db] .pill")).to_have_text("down")
        db_button = page.locator(".demo-button[data-fault=db]")
        ex(db_button).to_have_attribute("data-active", "true")
        ex(db_button.locator(".demo-action")).to_have_text("Restart PostgreSQL")
        ex(page.locator("#demo-result")).to_contain_text("PostgreSQL crashed")

        db_button.click()
        ex(page.locator(".dep[data-dependency=db] .pill")).to_have_text("healthy", timeout=30_000)
        ex(page.locator("#level")).to_have_text("full", timeout=15_000)
        ex(db_button).to_have_attribute("data-active", "false")

        page.locator(".demo-button[data-fault=ratelimit]").click()
        openai = page.locator(".dep[data-dependency=openai]")
        ex(openai.locator(".pill")).to_have_text("degraded", timeout=15_000)
        ex(openai.locator(".dep-reason")).to_have_text("rate_limited")
        ex(openai.locator("[data-field=retry_at]")).to_have_text(re.compile(r"^next call in \d+s$"))
        ex(page.locator("#level")).to_have_text("degraded")
        screenshot(page, "status-page-degraded.png")

        assert rec.problems() == []
        assert rec.foreign(url.rstrip("/")) == []
    finally:
        demo.stop()
    assert demo.proc.returncode == 0, demo.output()
    assert "demo stopped; servers removed" in demo.output()


def test_the_page_reads_well_on_a_phone(run_daemon: Callable[..., DaemonProcess], redis_server: Any,
                                        open_page: Any) -> None:
    """On a 390 px wide screen nothing scrolls sideways and the dependency cards stack in one column."""
    d = run_daemon(f"""
http: {{listen: "127.0.0.1:0"}}
{FAST}dependencies:
  cache: {{kind: redis, url: "{redis_server.url}"}}
  other: {{kind: redis, url: "{redis_server.url}"}}
""")
    level_published(d, "full")
    page, rec = open_page(d.url + "/", width=390, height=844)
    ex = expect()
    ex(page.locator("#level")).to_have_text("full")
    ex(page.locator(".dep")).to_have_count(2)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    boxes = [page.locator(f".dep[data-dependency={n}]").bounding_box() for n in ("cache", "other")]
    assert boxes[0] is not None and boxes[1] is not None
    assert boxes[0]["x"] == boxes[1]["x"] and boxes[1]["y"] > boxes[0]["y"]
    assert rec.problems() == []


def test_screenshots_are_committed() -> None:
    """The screenshots of the README and docs/status-page.md exist and are PNG files (made by ``make screenshots``
    from the demo test)."""
    docs = Path(__file__).resolve().parents[2] / "docs"
    for name in ("status-page.png", "status-page-degraded.png"):
        assert (docs / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


class HandMadeState:
    """The daemon's HTTP app (page, stream, history) over a State fed by hand, served from its own thread and loop:
    for what no real fault here produces quickly, such as a fleet's ``prober`` field."""

    def __init__(self, config_text: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.config = parse_config(config_text, {})
        self.url = self._run(self._start())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _start(self) -> str:
        from aiohttp import web

        self.hub = Hub()
        self.state = ServiceState(self.config, SystemClock())
        self.runtime = Runtime(config=self.config, hub=self.hub, inbox=asyncio.Queue())
        # As the daemon does: a departed reader ends its handler at once, so that cleanup does not wait for it.
        self.runner = web.AppRunner(build_app(self.runtime, [*stream.routes(), *page_routes()]),
                                    handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    def feed(self, *statuses: DependencyStatus) -> None:
        """What the owner task does with probe results: update the State and publish it."""
        async def apply() -> None:
            events = [e for st in statuses for e in self.state.update(st)]
            self.hub.publish(self.state.snapshot(), events)
        self._run(apply())

    def close(self) -> None:
        """Stop serving (ending open event streams, as the daemon's shutdown does) and end the thread."""
        async def stop() -> None:
            self.runtime.stopping.set()
            self.hub.drain()
            await self.runner.cleanup()
        self._run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_the_page_shows_fleet_fields_custom_levels_and_hostile_error_text_as_text(open_page: Any) -> None:
    """A State as a fleet pod publishes it (each dependency with its ``prober``; one never answered yet, so within
    its startup grace) under a policy with three custom levels: the page shows each prober, the grace (on the card
    and for the State), the middle level in its middle colour,
    a live countdown to ``retry_at``; a ``last_error`` and ``reason`` full of markup stay literal text (no element
    is made from them) and no request leaves for the host they name."""
    served = HandMadeState("""
service: fleet-page
http: {listen: "127.0.0.1:0"}
dependencies:
  db: {kind: tcp, address: "127.0.0.1:1"}
  llm: {kind: tcp, address: "127.0.0.1:2"}
  search: {kind: tcp, address: "127.0.0.1:3"}
policy:
  levels: [green, amber, red]
  rules:
    - level: red
      when: {any_down: [db]}
    - level: amber
      when: {any_not_healthy: [db, llm]}
""")
    hostile = '<img src="https://evil.example/x.png" id=pwned onerror="document.title=1"><script>alert(1)</script>'
    now = datetime.now(UTC)
    try:
        served.feed(
            DependencyStatus(name="db", kind="tcp", state=DepState.HEALTHY, since=now, latency_ms=2.5, probes=1,
                             details={"prober": "checkout-7d9f-abcde"}),
            DependencyStatus(name="llm", kind="tcp", state=DepState.DEGRADED, since=now, latency_ms=812.0,
                             reason="rate_limited", last_error=hostile, retry_at=now + timedelta(minutes=5),
                             probes=1, details={"prober": "checkout-7d9f-xyz12", "starting": True}),
            # never answered yet: within its startup grace, so the State says `starting`
            DependencyStatus(name="search", kind="tcp", state=DepState.DOWN, breaker=BreakerState.OPEN, since=now,
                             reason="connection_refused", probes=1, consecutive_failures=1),
        )
        page, rec = open_page(served.url + "/")
        ex = expect()
        ex(page.locator("#level")).to_have_text("amber")
        ex(page.locator("#level-card")).to_have_attribute("data-severity", "bad")
        ex(page.locator("#ladder .rung")).to_have_text(["green", "amber", "red"])
        ex(page.locator(".dep[data-dependency=db] [data-field=prober]")).to_have_text("checkout-7d9f-abcde")
        llm = page.locator(".dep[data-dependency=llm]")
        ex(llm.locator("[data-field=prober]")).to_have_text("checkout-7d9f-xyz12")
        ex(llm.locator("[data-field=starting]")).to_have_text("in startup grace")
        ex(page.locator(".dep[data-dependency=search] [data-field=starting]")).to_have_text("in startup grace")
        ex(page.locator("#starting")).to_be_visible()
        ex(llm.locator("[data-field=latency]")).to_have_text("812")
        ex(llm.locator("[data-field=last_error]")).to_have_text(hostile)
        ex(llm.locator("[data-field=retry_at]")).to_have_text(re.compile(r"^next call in (4m 5\ds|5m 0s)$"))
        assert page.locator("#pwned").count() == 0 and page.locator(".dep script").count() == 0
        assert page.title().startswith("amber · fleet-page")

        served.feed(DependencyStatus(name="db", kind="tcp", state=DepState.DOWN, breaker=BreakerState.OPEN,
                                     since=now, reason=hostile, probes=2, consecutive_failures=3))
        ex(page.locator("#level")).to_have_text("red", timeout=CHANGE_WITHIN_MS)
        ex(page.locator("#level-card")).to_have_attribute("data-severity", "critical")
        ex(page.locator(".dep[data-dependency=db] .dep-reason")).to_have_text(hostile)
        ex(page.locator(".timeline .event", has_text="db healthy → down")).to_have_count(1)
        assert page.locator("#pwned").count() == 0
        assert rec.problems() == []
        assert rec.foreign(served.url) == []
    finally:
        served.close()


class FrontEnd:
    """An app's own web front end on another origin: one HTML page served from a thread, nothing else."""

    HTML = b"<!doctype html><title>app</title><p>the app's front end</p>"

    def __init__(self) -> None:
        from aiohttp import web

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def page(request: web.Request) -> web.Response:
            return web.Response(body=self.HTML, content_type="text/html")

        async def start() -> int:
            app = web.Application()
            app.add_routes([web.get("/", page)])
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", 0).start()
            return int(self.runner.addresses[0][1])

        self.port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)

    def close(self) -> None:
        """Stop serving and end the thread."""
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


# Runs in the front end's page: what its own script can read from the daemon on another origin.
CROSS_ORIGIN_READS = """async (base) => {
  const out = {};
  out.stream = await new Promise((resolve) => {
    const es = new EventSource(base + '/service-level/events');
    const done = (v) => { es.close(); resolve(v); };
    es.addEventListener('snapshot', (e) => done(JSON.parse(e.data).level));
    es.onerror = () => done('blocked');
    setTimeout(() => done('timeout'), 8000);
  });
  try {
    const r = await fetch(base + '/service-level');
    out.level = (await r.json()).level;
    out.index = r.headers.get('X-Failsoft-Index');
  } catch { out.level = 'blocked'; }
  try {
    await fetch(base + '/override', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                     body: JSON.stringify({level: 'cache_only'})});
    out.override = 'read';
  } catch { out.override = 'blocked'; }
  return out;
}"""


def test_a_listed_origin_reads_the_stream_in_a_browser_and_no_other_origin_does(
        run_daemon: Callable[..., DaemonProcess], redis_server: Any, open_page: Any) -> None:
    """With ``http.cors_origins`` listing the app's front end, a script on that origin (a real page in Chromium)
    reads the event stream's snapshot and ``/service-level`` with its ``X-Failsoft-Index``, but cannot read an
    answer of ``POST /override``; the same script on an unlisted origin (``localhost`` instead of ``127.0.0.1``:
    another origin to a browser) can read nothing."""
    front = FrontEnd()
    try:
        listed = f"http://127.0.0.1:{front.port}"
        d = run_daemon(f"""
http: {{listen: "127.0.0.1:0", cors_origins: ["{listed}"]}}
{FAST}dependencies:
  cache: {{kind: redis, url: "{redis_server.url}"}}
""")
        level_published(d, "full")
        page, _ = open_page(listed + "/")
        reads = page.evaluate(CROSS_ORIGIN_READS, d.url)
        assert reads["stream"] == "full" and reads["level"] == "full"
        assert reads["index"] is not None and int(reads["index"]) >= 1
        assert reads["override"] == "blocked"
        other, _ = open_page(f"http://localhost:{front.port}/")
        assert other.evaluate(CROSS_ORIGIN_READS, d.url) == {"stream": "blocked", "level": "blocked",
                                                              "override": "blocked"}
        assert d.state()["override"] is None  # the preflight was refused: the POST never reached the daemon
    finally:
        front.close()
