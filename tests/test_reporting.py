"""failsoft.reporting (and ServiceLevelClient.report): the app's reporter against the real daemon process and a
real Redis. What the daemon received is read back from its State and its failsoft_reports_total counter."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support import request, until_async

from failsoft.client import ServiceLevelClient
from failsoft.devtools.localservers import free_port
from failsoft.reporting import Reporter, default_reason

pytestmark = pytest.mark.e2e


def config(redis_url: str) -> str:
    """One healthy Redis, probed every 200 ms; the default passive settings (5 failures in a row trip)."""
    return f"""
http: {{listen: "127.0.0.1:0"}}
defaults: {{interval: 200ms, down_interval: {{initial: 300ms, max: 1s}}}}
dependencies:
  cache: {{kind: redis, url: "{redis_url}"}}
"""


async def counted(url: str, outcome: str) -> float:
    """failsoft_reports_total for cache and ``outcome``, read from /metrics."""
    _, text, _ = await asyncio.to_thread(request, url + "/metrics")
    pattern = rf'^failsoft_reports_total\{{dependency="cache",outcome="{outcome}"\}} ([0-9.]+)$'
    m = re.search(pattern, str(text), re.MULTILINE)
    return float(m[1]) if m else 0.0


async def wait_counts(url: str, expected: dict[str, float]) -> None:
    """Until the daemon has judged exactly ``expected`` reports per outcome."""
    async def check() -> bool:
        return {o: await counted(url, o) for o in expected} == expected

    await until_async(check, within=10, what=f"report counts {expected}")


@pytest.fixture
def daemon(run_daemon: Any, redis_server: Any) -> Any:
    """The daemon process with a healthy Redis."""
    d = run_daemon(config(redis_server.url))
    d.wait_state(lambda s: s["dependencies"]["cache"]["state"] == "healthy", what="cache healthy")
    return d


@pytest.fixture
async def reporter(daemon: Any) -> AsyncIterator[Reporter]:
    """A reporter for the daemon, closed after the test."""
    r = Reporter(daemon.url, flush_interval=0.05)
    yield r
    await r.aclose()


async def test_the_context_manager_reports_each_outcome_and_reraises(daemon: Any, reporter: Reporter) -> None:
    """A clean block is a success; a TimeoutError is a failure (reason timeout) and is re-raised unchanged;
    fail() and rate_limited() report outcomes that raised nothing; all reach the daemon, by outcome."""
    with reporter.call("cache"):
        pass
    err = TimeoutError("the query took too long")
    with pytest.raises(TimeoutError) as caught:
        async with reporter.call("cache"):
            raise err
    assert caught.value is err
    with reporter.call("cache") as call:
        call.fail("http_503")
    with reporter.call("cache") as call:
        call.rate_limited(retry_after="1")
    await reporter.flush()
    await wait_counts(daemon.url, {"success": 1, "failure": 2, "rate_limited": 1})
    assert (reporter.sent, reporter.dropped) == (4, 0)


async def test_the_decorator_times_sync_and_async_functions(daemon: Any, reporter: Reporter) -> None:
    """@track on an async and a sync function: their results and exceptions are untouched, each call reported."""
    @reporter.track("cache")
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    @reporter.track("cache")
    def parse(text: str) -> int:
        return int(text)

    assert await fetch(21) == 42
    assert parse("7") == 7
    with pytest.raises(ValueError, match="invalid literal"):
        parse("seven")
    assert fetch.__name__ == "fetch"
    await reporter.flush()
    await wait_counts(daemon.url, {"success": 2, "failure": 1})


async def test_a_cancelled_call_is_not_a_failure(daemon: Any, reporter: Reporter) -> None:
    """Cancelling the app's own call reports nothing (it says nothing about the dependency) and stays a
    cancellation."""
    started = asyncio.Event()

    async def slow() -> None:
        async with reporter.call("cache"):
            started.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(slow())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert reporter.pending == 0


async def test_a_daemon_that_is_away_costs_the_app_nothing() -> None:
    """Against a port nobody listens on, reporting never raises into the app and never changes a call's result;
    the outcomes are counted as dropped, and closing is bounded."""
    r = Reporter(f"http://127.0.0.1:{free_port()}", flush_interval=0.01, timeout=0.5)

    @r.track("cache")
    async def work() -> str:
        return "done"

    for _ in range(10):
        assert await work() == "done"
    await r.aclose(timeout=2)
    assert (r.sent, r.dropped, r.pending) == (0, 10, 0)


async def test_the_queue_is_bounded_and_counts_what_it_drops() -> None:
    """With room for 100, 250 outcomes reported before the sender runs keep 100 and drop 150 (counted); report()
    itself never blocks."""
    r = Reporter(f"http://127.0.0.1:{free_port()}", max_pending=100, flush_interval=60, timeout=0.2)
    for _ in range(250):
        r.report("cache", True)
    assert (r.pending, r.dropped) == (100, 150)
    await r.aclose(timeout=2)


async def test_one_bad_report_does_not_cost_the_batch(daemon: Any, reporter: Reporter) -> None:
    """A report naming an unknown dependency in a batch is refused by the daemon (400 naming it): the reporter
    drops that one and delivers the rest."""
    for i in range(10):
        reporter.report("cahce" if i == 3 else "cache", True)
    await reporter.flush()
    await wait_counts(daemon.url, {"success": 9})
    assert (reporter.sent, reporter.dropped) == (9, 1)


async def test_the_client_reports_failures_and_the_dependency_goes_down(daemon: Any) -> None:
    """ServiceLevelClient.report: five reported timeouts for the healthy Redis make it down with reason
    reported_timeout (the probes later bring it back); the client's close sends what is pending."""
    client = ServiceLevelClient(daemon.url)
    try:
        for _ in range(5):
            client.report("cache", False, reason="timeout", latency_ms=500)
        assert client.reporter.pending == 5
    finally:
        await client.aclose()
    assert client.reporter.sent == 5
    state = await asyncio.to_thread(daemon.wait_state, lambda s: s["dependencies"]["cache"]["state"] == "down", 5,
                                    "cache down")
    assert state["dependencies"]["cache"]["reason"] == "reported_timeout"


def test_default_reasons() -> None:
    """Exceptions map to reason codes the daemon accepts: timeout, connection_refused, connection_reset, error."""
    assert default_reason(TimeoutError()) == "timeout"
    assert default_reason(ConnectionRefusedError()) == "connection_refused"
    assert default_reason(ConnectionResetError()) == "connection_reset"
    assert default_reason(KeyError("x")) == "error"
