"""The llm and http probes against what providers really require and say: ``max_completion_tokens`` for OpenAI's
reasoning models, and a ``Retry-After`` on 503 and on Anthropic's 529 honoured before the next probe."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict
from support import until

from failsoft.daemon.breaker import Breaker
from failsoft.daemon.clock import SystemClock
from failsoft.daemon.config import Backoff, ProbeSettings
from failsoft.daemon.redact import Redactor
from failsoft.daemon.scheduler import DependencyScheduler
from failsoft.devtools.llmsim import ProviderSimulator
from failsoft.policies.classify import http_status, llm_answer
from failsoft.policies.model import DependencyStatus, Verdict
from failsoft.probes.base import ProbeHooks
from failsoft.probes.llm import LlmOptions, LlmProbe

KEYS = {"openai": "sk-wire-openai-0123456789", "limited": "sk-ant-wire-0123456789", "control": "sk-ant-wire-9876543210"}
NOW = 1_790_000_000.0


@pytest.fixture
async def sim() -> AsyncIterator[ProviderSimulator]:
    """OpenAI's wire, and two Anthropic accounts (one told to come back later, one not)."""
    s = ProviderSimulator({"openai": "openai", "limited": "anthropic", "control": "anthropic"}, keys=KEYS)
    await s.start()
    yield s
    await s.stop()


def probe_for(sim: ProviderSimulator, name: str, **options: Any) -> LlmProbe:
    """An llm probe at simulated provider ``name``."""
    provider = "openai" if name == "openai" else "anthropic"
    return LlmProbe(LlmOptions(provider=provider, base_url=sim.base_url(name), api_key=KEYS[name], **options), 5.0,
                    ProbeHooks())


# -- max_completion_tokens ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["o1", "o3-mini", "o4-mini-2025-04-16", "gpt-5", "gpt-5.1", "gpt-5-mini",
                                   "openai/gpt-5-nano", "O3"])
async def test_the_completion_probe_of_a_reasoning_model_sends_max_completion_tokens(
    sim: ProviderSimulator, model: str,
) -> None:
    """OpenAI's reasoning models refuse ``max_tokens`` (400 unsupported_parameter, as the simulator answers like
    OpenAI): the probe sends ``max_completion_tokens: 1`` for them and the model is healthy."""
    probe = probe_for(sim, "openai", probe="completion", model=model)
    try:
        outcome = await probe.check()
    finally:
        await probe.aclose()
    assert (outcome.verdict, outcome.reason) == (Verdict.OK, None), outcome
    [req] = sim.received("openai")
    assert req.body["max_completion_tokens"] == 1
    assert "max_tokens" not in req.body


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4.1", "llama-3.1-8b-instruct", "gpt-4o", "omni-moderation"])
async def test_other_models_keep_max_tokens(sim: ProviderSimulator, model: str) -> None:
    """Other models (and OpenAI-compatible servers, which do not all know the newer field) keep ``max_tokens``."""
    probe = probe_for(sim, "openai", probe="completion", model=model)
    try:
        outcome = await probe.check()
    finally:
        await probe.aclose()
    assert outcome.verdict is Verdict.OK
    [req] = sim.received("openai")
    assert req.body["max_tokens"] == 1
    assert "max_completion_tokens" not in req.body


async def test_the_simulator_refuses_max_tokens_for_a_reasoning_model_as_openai_does(sim: ProviderSimulator) -> None:
    """The check above has teeth: the simulator answers OpenAI's 400 to ``max_tokens`` with a reasoning model."""
    async with aiohttp.ClientSession() as session, session.post(
        sim.base_url("openai").rstrip("/") + "/chat/completions",
        json={"model": "o3", "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1},
        headers={"Authorization": f"Bearer {KEYS['openai']}"},
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "unsupported_parameter"


# -- Retry-After on 503 and 529 -----------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "headers", "wait"), [
    (503, {"Retry-After": "7"}, 7.0),
    (503, {"retry-after": formatdate(NOW + 30, usegmt=True)}, 30.0),
    (503, {}, None),
    (500, {"Retry-After": "7"}, None),  # only 503 says "come back then" for a plain HTTP service
])
def test_http_status_503_keeps_retry_after(status: int, headers: dict[str, str], wait: float | None) -> None:
    """A plain HTTP dependency's 503 with Retry-After (seconds or a date) carries it as the outcome's retry_after."""
    outcome = http_status(status, CIMultiDict(headers), NOW, range(200, 300))
    assert (outcome.verdict, outcome.reason, outcome.retry_after) == (Verdict.FAILURE, "http_5xx", wait)


@pytest.mark.parametrize(("status", "reason"), [(503, "http_5xx"), (529, "overloaded")])
def test_llm_503_and_529_keep_retry_after(status: int, reason: str) -> None:
    """An LLM provider's 503 or 529 (Anthropic: overloaded) with retry-after or retry-after-ms carries it."""
    for headers, wait in (({"retry-after": "12"}, 12.0), ({"retry-after-ms": "1500"}, 1.5), ({}, None)):
        outcome = llm_answer(status, CIMultiDict(headers), b'{"type": "error"}', complete=True, now=NOW,
                             min_headroom=0.0)
        assert (outcome.verdict, outcome.reason, outcome.retry_after) == (Verdict.FAILURE, reason, wait)


def scheduler_for(sim: ProviderSimulator, name: str, reports: list[DependencyStatus]) -> DependencyScheduler:
    """A scheduler probing ``name`` quickly (every 50 ms, down after one failure, re-probed within 100 ms)."""
    settings = ProbeSettings(interval=0.05, timeout=2.0, jitter=0, unhealthy_threshold=1, fast_interval=0.05,
                             down_interval=Backoff(0.05, 0.1, 2))
    return DependencyScheduler(Breaker(name, "llm", settings), lambda _: probe_for(sim, name), reports.append,
                               SystemClock(), Redactor())


async def test_an_overloaded_provider_is_not_probed_before_its_retry_after(sim: ProviderSimulator) -> None:
    """Two Anthropic accounts answer 529 overloaded; one adds ``retry-after: 3600``. Probed by identical schedulers,
    the control is asked again and again while the other is asked once: its next probe waits for retry_at, which
    its status publishes."""
    sim.set_mode("limited", "overloaded", retry_after=3600)
    sim.set_mode("control", "overloaded")
    limited: list[DependencyStatus] = []
    control: list[DependencyStatus] = []
    schedulers = [scheduler_for(sim, "limited", limited), scheduler_for(sim, "control", control)]
    tasks = [asyncio.create_task(s.run()) for s in schedulers]
    try:
        await until(lambda: sim.requests("control") >= 5 and limited, within=60,
                    what="the control to be probed five times")
        assert sim.requests("limited") == 1
        assert (limited[-1].state.value, limited[-1].reason) == ("down", "overloaded")
        assert limited[-1].retry_at is not None
        assert control[-1].retry_at is None
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for s in schedulers:
            await s.aclose()
