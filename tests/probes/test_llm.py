"""The llm probe against the provider simulator (a real HTTP server in each wire format), and its config."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from failsoft.daemon.config import ConfigError, parse_config
from failsoft.devtools.llmsim import ProviderSimulator
from failsoft.policies.classify import error_text, exception_reason
from failsoft.probes.base import Outcome, ProbeHooks, Verdict
from failsoft.probes.llm import MAX_BODY, LlmOptions, LlmProbe, build_request

KEYS = {"openai": "sk-test-openai-0123456789", "anthropic": "sk-ant-test-0123456789", "gemini": "AIzaTest0123456789abc",
        "local": "local-key-0123"}
PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "gemini": "gemini", "local": "openai"}
WIRES = ["openai", "anthropic", "gemini"]


@pytest.fixture
async def sim() -> AsyncIterator[ProviderSimulator]:
    """One simulator per test, with each wire format and keys it insists on."""
    s = ProviderSimulator(PROVIDERS, keys={k: v for k, v in KEYS.items() if k != "local"})
    await s.start()
    yield s
    await s.stop()


def make_probe(sim: ProviderSimulator, name: str, timeout: float = 2.0, **options: Any) -> LlmProbe:
    """An llm probe pointed at simulated provider ``name`` with its key (unless options say otherwise)."""
    provider = "openai_compatible" if name == "local" else PROVIDERS[name]
    opts: dict[str, Any] = {"provider": provider, "base_url": sim.base_url(name), "api_key": KEYS[name], **options}
    return LlmProbe(LlmOptions(**opts), timeout, ProbeHooks())


async def outcome_of(probe: LlmProbe) -> Outcome:
    """What the scheduler makes of one check: the outcome, or the raised exception classified."""
    try:
        return await probe.check()
    except Exception as exc:
        reason, fatal = exception_reason(exc)
        return Outcome(Verdict.FATAL if fatal else Verdict.FAILURE, reason, error_text(exc))
    finally:
        await probe.aclose()


# -- requests in each provider's convention --------------------------------------------------------------------


@pytest.mark.parametrize(("name", "path", "auth"), [
    ("openai", "/v1/models", {"Authorization": f"Bearer {KEYS['openai']}"}),
    ("anthropic", "/v1/models", {"x-api-key": KEYS["anthropic"], "anthropic-version": "2023-06-01"}),
    ("gemini", "/v1beta/models", {"x-goog-api-key": KEYS["gemini"]}),
])
async def test_models_probe_uses_each_sdks_path_and_auth(
    sim: ProviderSimulator, name: str, path: str, auth: dict[str, str]
) -> None:
    """probe: models is one GET of the free listing, authenticated the way the provider's SDK does it."""
    outcome = await outcome_of(make_probe(sim, name))
    assert (outcome.verdict, outcome.reason) == (Verdict.OK, None)
    [req] = sim.received(name)
    assert (req.method, req.path, req.body) == ("GET", path, None)
    for header, value in auth.items():
        assert req.headers[header] == value


@pytest.mark.parametrize(("name", "path", "expected"), [
    ("openai", "/v1/chat/completions", {"model": "m-1", "max_tokens": 1}),
    ("anthropic", "/v1/messages", {"model": "m-1", "max_tokens": 1}),
    ("gemini", "/v1beta/models/m-1:generateContent", {"generationConfig": {"maxOutputTokens": 1}}),
])
async def test_completion_probe_sends_the_smallest_real_request(
    sim: ProviderSimulator, name: str, path: str, expected: dict[str, Any]
) -> None:
    """probe: completion POSTs a 1-token request to ``model`` in the provider's format."""
    model = "models/m-1" if name == "gemini" else "m-1"  # Gemini SDKs accept either spelling
    outcome = await outcome_of(make_probe(sim, name, probe="completion", model=model))
    assert outcome.verdict is Verdict.OK
    [req] = sim.received(name)
    assert (req.method, req.path) == ("POST", path)
    assert req.headers["Content-Type"] == "application/json"
    assert expected.items() <= req.body.items()


async def test_openai_organization_project_and_custom_headers_are_sent(sim: ProviderSimulator) -> None:
    """OpenAI-Organization / OpenAI-Project and per-dependency headers go out with the probe."""
    probe = make_probe(sim, "openai", organization="org-1", project="proj-2", headers={"X-Gateway": "blue"})
    assert (await outcome_of(probe)).verdict is Verdict.OK
    [req] = sim.received("openai")
    assert (req.headers["OpenAI-Organization"], req.headers["OpenAI-Project"], req.headers["X-Gateway"]) == (
        "org-1", "proj-2", "blue")


async def test_openai_compatible_needs_no_key_and_custom_auth_replaces_ours(sim: ProviderSimulator) -> None:
    """A local vLLM/Ollama gets no Authorization; an Azure-style gateway gets its own api-key header only."""
    assert (await outcome_of(make_probe(sim, "local", api_key=None))).verdict is Verdict.OK
    assert "Authorization" not in sim.received("local")[-1].headers
    probe = make_probe(sim, "local", api_key=None, headers={"api-key": "gw-key-1"},
                       base_url=sim.base_url("local") + "?api-version=2024-10-21")
    assert (await outcome_of(probe)).verdict is Verdict.OK
    req = sim.received("local")[-1]
    assert (req.headers["api-key"], req.path) == ("gw-key-1", "/v1/models")
    assert "Authorization" not in req.headers


def test_build_request_keeps_the_base_url_query_and_never_puts_keys_in_urls() -> None:
    """Query strings of base_url survive; Gemini's key goes in a header, never in ?key=."""
    r = build_request(LlmOptions(provider="gemini", api_key="AIzaSecret123456789", base_url="http://h:1/?x=1"))
    assert str(r.url) == "http://h:1/v1beta/models?x=1&pageSize=1"
    assert "AIza" not in str(r.url)
    assert str(build_request(LlmOptions(provider="openai", api_key="k" * 8)).url) == "https://api.openai.com/v1/models"
    assert str(build_request(LlmOptions(provider="anthropic", api_key="k" * 8)).url) == (
        "https://api.anthropic.com/v1/models?limit=1")


# -- classification of real answers -----------------------------------------------------------------------------


FAILURE_ROWS: list[tuple[str, dict[str, Any], tuple[Verdict, str]]] = [
    ("auth", {}, (Verdict.FATAL, "auth")),
    ("forbidden", {}, (Verdict.FATAL, "auth")),
    ("not_found", {}, (Verdict.FATAL, "misconfigured")),
    ("quota", {}, (Verdict.FATAL, "quota_exhausted")),
    ("error", {}, (Verdict.FAILURE, "http_5xx")),
    ("unavailable", {}, (Verdict.FAILURE, "http_5xx")),
    ("overloaded", {}, (Verdict.FAILURE, "overloaded")),
    ("error", {"headers": {"x-should-retry": "false"}}, (Verdict.FATAL, "http_5xx")),
    ("status", {"status": 400}, (Verdict.FATAL, "misconfigured")),
    ("status", {"status": 400, "headers": {"x-should-retry": "true"}}, (Verdict.FAILURE, "http_400")),
    ("reset", {}, (Verdict.FAILURE, "connection_reset")),
    ("bad_json", {}, (Verdict.FAILURE, "bad_response")),
    ("truncated", {}, (Verdict.FAILURE, "truncated_response")),
    ("redirect_loop", {}, (Verdict.FAILURE, "redirect_loop")),
]


@pytest.mark.parametrize("name", WIRES)
@pytest.mark.parametrize(("mode", "params", "expected"), FAILURE_ROWS)
async def test_each_failure_mode_gets_its_reason(
    sim: ProviderSimulator, name: str, mode: str, params: dict[str, Any], expected: tuple[Verdict, str]
) -> None:
    """Every row of the classification, in each provider's wire format."""
    sim.set_mode(name, mode, **params)
    outcome = await outcome_of(make_probe(sim, name))
    assert (outcome.verdict, outcome.reason) == expected
    assert outcome.error


@pytest.mark.parametrize(("name", "form"), [
    ("openai", "seconds"), ("openai", "ms"), ("openai", "date"), ("openai", "reset"),
    ("anthropic", "seconds"), ("anthropic", "date"), ("anthropic", "reset"),
    ("gemini", "gemini"), ("gemini", "seconds"),
])
async def test_rate_limit_retry_time_from_every_form(sim: ProviderSimulator, name: str, form: str) -> None:
    """A 429 rate limit is degraded/rate_limited and says when to try again, whatever form the provider used."""
    sim.set_mode(name, "rate_limit", retry_after=3, form=form)
    outcome = await outcome_of(make_probe(sim, name))
    assert (outcome.verdict, outcome.reason) == (Verdict.DEGRADED, "rate_limited")
    assert outcome.retry_after is not None
    low = 1.9 if form == "date" else 2.9  # an HTTP date has whole seconds
    assert low <= outcome.retry_after <= 4.1


async def test_a_429_without_a_time_is_still_rate_limited(sim: ProviderSimulator) -> None:
    """No retry time at all: rate limited, and the breaker's own interval decides the next probe."""
    sim.set_mode("openai", "rate_limit", form="none")
    outcome = await outcome_of(make_probe(sim, "openai"))
    assert (outcome.verdict, outcome.reason, outcome.retry_after) == (Verdict.DEGRADED, "rate_limited", None)


@pytest.mark.parametrize("name", ["openai", "anthropic"])
async def test_headroom_figures_are_published_and_low_headroom_degrades(sim: ProviderSimulator, name: str) -> None:
    """Remaining, limit and reset of requests and tokens go into the details; under min_headroom: degraded."""
    sim.set_mode(name, "healthy", limit=100, remaining=60, tokens_limit=1000, tokens_remaining=999, reset=2)
    outcome = await outcome_of(make_probe(sim, name))
    assert outcome.verdict is Verdict.OK
    figures = outcome.details["ratelimit"]
    assert (figures["requests"]["remaining"], figures["requests"]["limit"]) == (60, 100)
    assert (figures["tokens"]["remaining"], figures["tokens"]["limit"]) == (999, 1000)
    assert figures["requests"]["reset"].endswith("Z")
    sim.set_mode(name, "healthy", limit=100, remaining=2)
    low = await outcome_of(make_probe(sim, name))
    assert (low.verdict, low.reason, low.error) == (Verdict.DEGRADED, "low_headroom", "requests: 2 of 100 left (2.0%)")


async def test_nonsense_headroom_headers_are_ignored(sim: ProviderSimulator) -> None:
    """-1 and garbage figures are ignored: the probe is healthy and publishes nothing made up."""
    sim.set_mode("openai", "healthy", ratelimit=False, headers={
        "x-ratelimit-limit-requests": "-1", "x-ratelimit-remaining-requests": "-1",
        "x-ratelimit-reset-requests": "whenever", "x-ratelimit-limit-tokens": "lots"})
    outcome = await outcome_of(make_probe(sim, "openai"))
    assert (outcome.verdict, dict(outcome.details)) == (Verdict.OK, {})


@pytest.mark.parametrize("wrong", ["sk-wrong-key-9876543210", "plainwrongkey9876543210"])
async def test_a_refused_key_never_appears_in_the_error(sim: ProviderSimulator, wrong: str) -> None:
    """The simulator echoes a wrong key back, as OpenAI does; the probe masks it, key-shaped or not."""
    outcome = await outcome_of(make_probe(sim, "openai", api_key=wrong))
    assert (outcome.verdict, outcome.reason) == (Verdict.FATAL, "auth")
    assert outcome.error is not None and wrong not in outcome.error and "***" in outcome.error


async def test_gemini_bad_key_400_is_auth(sim: ProviderSimulator) -> None:
    """Gemini refuses a bad key with 400 API_KEY_INVALID: still down/auth at once."""
    outcome = await outcome_of(make_probe(sim, "gemini", api_key="AIzaWrongKey000000000"))
    assert (outcome.verdict, outcome.reason) == (Verdict.FATAL, "auth")


# -- bad input: every one a clear reason, never a crash or a hung probe -----------------------------------------


async def test_a_huge_body_is_not_read_to_the_end(sim: ProviderSimulator) -> None:
    """A listing of a terabyte: only the first few KiB are read and the probe answers (reading it to the end could
    not finish within the test's deadline)."""
    sim.set_mode("openai", "huge", size=1 << 40)
    outcome = await asyncio.wait_for(outcome_of(make_probe(sim, "openai")), 60)
    assert outcome.verdict is Verdict.OK  # it starts like the JSON listing it claims to be
    assert MAX_BODY <= 16 * 1024


async def test_a_slow_provider_answers_late_but_well(sim: ProviderSimulator) -> None:
    """slow delays the answer (the breaker judges the latency); the probe itself reports OK."""
    sim.set_mode("gemini", "slow", delay=0.2)
    outcome = await outcome_of(make_probe(sim, "gemini"))
    assert outcome.verdict is Verdict.OK


def test_a_mode_with_a_duration_ends_by_itself() -> None:
    """duration puts a provider back to healthy afterwards (a demo user's temporary outage)."""
    sim = ProviderSimulator({"openai": "openai"})
    sim.set_mode("openai", "error", duration=3600)
    assert sim.mode("openai").name == "error"
    sim.set_mode("openai", "503", duration=0)
    assert sim.mode("openai").name == "healthy"


async def test_a_hang_is_a_timeout_within_the_deadline(sim: ProviderSimulator) -> None:
    """A provider that accepts and never answers costs one deadline, then reports timeout."""
    sim.set_mode("anthropic", "hang")
    outcome = await asyncio.wait_for(outcome_of(make_probe(sim, "anthropic", timeout=0.3)), 60)
    assert (outcome.verdict, outcome.reason) == (Verdict.FAILURE, "timeout")
    assert outcome.error is not None and "300ms" in outcome.error


async def test_a_cancelled_check_leaves_the_probe_usable(sim: ProviderSimulator) -> None:
    """The scheduler cancels a check at its deadline; the next check works."""
    sim.set_mode("openai", "hang")
    probe = make_probe(sim, "openai", timeout=5.0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(probe.check(), 0.2)
    sim.set_mode("openai", "healthy")
    assert (await outcome_of(probe)).verdict is Verdict.OK


async def test_tls_failure_is_named(sim: ProviderSimulator) -> None:
    """https:// to a plain HTTP port fails the TLS handshake: reason tls."""
    probe = make_probe(sim, "openai", base_url=sim.base_url("openai").replace("http://", "https://"))
    outcome = await outcome_of(probe)
    assert (outcome.verdict, outcome.reason) == (Verdict.FAILURE, "tls")


async def test_connection_refused_is_named() -> None:
    """Nothing listening: reason connection_refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        probe = LlmProbe(LlmOptions(provider="openai", api_key="k" * 8, base_url=f"http://127.0.0.1:{port}/v1"),
                         2.0, ProbeHooks())
        outcome = await outcome_of(probe)
    assert (outcome.verdict, outcome.reason) == (Verdict.FAILURE, "connection_refused")


async def test_a_redirect_to_another_host_is_not_followed(sim: ProviderSimulator) -> None:
    """The key is never sent to another host: a cross-host redirect is down/misconfigured."""
    port = sim.url.rsplit(":", 1)[1]
    sim.set_mode("anthropic", "status", status=307, headers={"Location": f"http://localhost:{port}/anthropic/v1/models"})
    outcome = await outcome_of(make_probe(sim, "anthropic"))
    assert (outcome.verdict, outcome.reason) == (Verdict.FATAL, "misconfigured")
    assert sim.requests("anthropic") == 1


async def test_a_same_host_redirect_is_followed(sim: ProviderSimulator) -> None:
    """A same-origin redirect (a gateway moving a path) is followed with the same headers."""
    sim.set_mode("local", "status", status=308, headers={"Location": sim.base_url("openai") + "/models"})
    outcome = await outcome_of(make_probe(sim, "local", api_key=KEYS["openai"]))
    assert outcome.verdict is Verdict.OK
    assert sim.received("openai")[-1].headers["Authorization"] == f"Bearer {KEYS['openai']}"


async def test_probes_can_share_one_session(sim: ProviderSimulator) -> None:
    """Given a session, probes use it and leave closing it to its owner."""
    async with aiohttp.ClientSession() as session:
        first = LlmProbe(LlmOptions(provider="openai", base_url=sim.base_url("openai"), api_key=KEYS["openai"]),
                         2.0, ProbeHooks(http_session=session))
        second = LlmProbe(LlmOptions(provider="gemini", base_url=sim.base_url("gemini"), api_key=KEYS["gemini"]),
                          2.0, ProbeHooks(http_session=session))
        assert (await first.check()).verdict is Verdict.OK
        await first.aclose()
        assert not session.closed
        assert (await second.check()).verdict is Verdict.OK
        await second.aclose()


async def test_the_control_endpoint_switches_modes(sim: ProviderSimulator) -> None:
    """POST /_sim/<name> with a JSON body is what a demo user types with curl."""
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sim.url}/_sim/openai", json={"mode": "429", "retry_after": 7}) as resp:
            assert resp.status == 200
            assert (await resp.json())["mode"] == "rate_limit"
        for bad in ({"mode": "sideways"}, {"mode": "slow", "delay": "soon"}, {"mode": "error", "colour": 1}, {}):
            async with http.post(f"{sim.url}/_sim/openai", json=bad) as resp:
                assert resp.status == 400, bad
    outcome = await outcome_of(make_probe(sim, "openai"))
    assert (outcome.reason, outcome.retry_after) == ("rate_limited", 7.0)


# -- configuration ---------------------------------------------------------------------------------------------


def config_errors(dep: str) -> list[str]:
    """The errors of a config holding one llm dependency ``x`` written as a YAML flow mapping."""
    with pytest.raises(ConfigError) as err:
        parse_config(f"dependencies:\n  x: {{kind: llm, {dep}}}\n", env={})
    return err.value.errors


@pytest.mark.parametrize(("dep", "error"), [
    ("provider: mistral, api_key: abcdef",
     "dependencies.x.provider: expected one of openai, anthropic, gemini, openai_compatible, got 'mistral'"),
    ("provider: openai, api_key: abcdef, base_url: api.openai.com/v1",
     "dependencies.x.base_url: expected an http:// or https:// URL with a host, like https://api.openai.com/v1"),
    ("provider: openai_compatible",
     "dependencies.x.base_url: is required for provider openai_compatible "
     "(the server's URL including /v1, like http://127.0.0.1:8000/v1)"),
    ("provider: openai, api_key: abcdef, probe: completion",
     "dependencies.x.model: is required when probe is completion (the model the 1-token request goes to)"),
    ("provider: anthropic, api_key: abcdef, organization: org-1",
     "dependencies.x.organization: only applies to providers openai and openai_compatible"),
    ("provider: openai, api_key: abcdef, probe: chat",
     "dependencies.x.probe: expected one of models, completion, got 'chat'"),
])
def test_config_errors_name_the_path(dep: str, error: str) -> None:
    """Each bad llm setting is one error naming its YAML path."""
    assert config_errors(dep) == [error]


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_a_missing_key_is_a_config_error_naming_the_path(provider: str) -> None:
    """No api_key (or an empty one from ${VAR:-}) for a provider that needs one is a config error."""
    for dep in (f"provider: {provider}", f"provider: {provider}, api_key: '${{NO_SUCH_KEY:-}}'"):
        [error] = config_errors(dep)
        # The redactor masks the word after "api_key:" (see the report); the path and the reason survive.
        assert error.startswith("dependencies.x.api_key: ")
        assert f"required for provider {provider}" in error


def test_keys_and_sensitive_headers_are_secrets() -> None:
    """api_key and auth-looking header values are collected as secrets; a key in a header is enough."""
    config = parse_config("""
dependencies:
  a: {kind: llm, provider: openai, api_key: sk-config-secret-1}
  b: {kind: llm, provider: openai_compatible, base_url: "https://gw.example/v1", headers: {api-key: gw-secret-2}}
  c: {kind: llm, provider: anthropic, headers: {x-api-key: ant-secret-3}}
""", env={})
    assert {"sk-config-secret-1", "gw-secret-2", "ant-secret-3"} <= set(config.secrets)
