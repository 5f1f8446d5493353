"""LLM rate limits and answer classification: pure functions, every row of the table, and odd input."""

from __future__ import annotations

import errno
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from failsoft.policies import ratelimit as rl
from failsoft.policies.classify import exception_reason, llm_answer, should_retry
from failsoft.policies.model import Verdict

NOW = 1_800_000_000.0  # a fixed wall clock (epoch seconds)


def headers(**pairs: str) -> CIMultiDict[str]:
    """Case-insensitive headers as aiohttp gives them; ``_`` in names becomes ``-``."""
    return CIMultiDict({k.replace("_", "-"): v for k, v in pairs.items()})


def body(obj: Any) -> bytes:
    """A JSON body."""
    return json.dumps(obj).encode()


def answer(status: int, hdrs: CIMultiDict[str] | None = None, payload: Any = None, *, min_headroom: float = 0.05,
           raw: bytes | None = None, complete: bool = True) -> Any:
    """``llm_answer`` with the fixed clock."""
    data = raw if raw is not None else (body(payload) if payload is not None else b"")
    return llm_answer(status, hdrs or headers(), data, complete=complete, now=NOW, min_headroom=min_headroom)


OPENAI_RATE = {"error": {"message": "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3",
                         "type": "requests", "param": None, "code": "rate_limit_exceeded"}}
OPENAI_QUOTA = {"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
                          "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}
ANTHROPIC_RATE = {"type": "error", "error": {"type": "rate_limit_error",
                                             "message": "This request would exceed your account's rate limit."}}
ANTHROPIC_SPEND = {"type": "error", "error": {"type": "invalid_request_error", "message":
                   "You have reached your specified API usage limits. You will regain access on 2026-12-01."}}
ANTHROPIC_CREDIT = {"type": "error", "error": {"type": "invalid_request_error", "message":
                    "Your credit balance is too low to access the Anthropic API."}}


def gemini_429(quota_id: str, delay: str | None = None, message: str = "You exceeded your current quota, please "
               "check your plan and billing details.") -> dict[str, Any]:
    """A Gemini RESOURCE_EXHAUSTED body with a QuotaFailure (and a RetryInfo when ``delay`` is given)."""
    details: list[dict[str, Any]] = [{"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                                      "violations": [{"quotaId": quota_id}]}]
    if delay is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})
    return {"error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED", "details": details}}


# -- time formats ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("6m0s", 360.0), ("12ms", 0.012), ("1h2m3.5s", 3723.5), ("3s", 3.0), ("0s", 0.0), ("20", 20.0),
    ("1.5s", 1.5), ("300us", 0.0003), ("100ns", 1e-7), (" 2s ", 2.0), ("36.429760048s", 36.429760048),
])
def test_go_duration_reads_openai_and_gemini_durations(text: str, seconds: float) -> None:
    """OpenAI's reset durations and Gemini's retryDelay are read to seconds."""
    assert rl.go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "-1", "-1s", "abc", "6m0", "s", "1x", "1e400", "nan", "inf", "2d", "1h1h1h" * 30,
                                  "100000h", None, 5])
def test_go_duration_refuses_nonsense(text: Any) -> None:
    """Anything that is not a sane duration is None, never an error."""
    assert rl.go_duration(text) is None


@given(st.text(max_size=80))
def test_go_duration_never_raises_and_is_never_negative(text: str) -> None:
    """For any string at all, the parser returns None or a number of seconds within a day."""
    value = rl.go_duration(text)
    assert value is None or 0 <= value <= rl.MAX_WAIT


@pytest.mark.parametrize(("text", "epoch"), [
    ("2027-01-15T08:00:00Z", 1800000000.0), ("2027-01-15T08:00:03.5Z", 1800000003.5),
    ("2027-01-15T10:00:00+02:00", 1800000000.0), ("2027-01-15T08:00:00", 1800000000.0),
])
def test_rfc3339_reads_anthropic_reset_times(text: str, epoch: float) -> None:
    """Anthropic's reset headers (RFC 3339) become epoch seconds; no offset means UTC."""
    assert rl.rfc3339(text) == pytest.approx(epoch)


@given(st.text(max_size=80))
def test_rfc3339_never_raises(text: str) -> None:
    """Any string gives a number or None."""
    value = rl.rfc3339(text)
    assert value is None or isinstance(value, float)


def test_iso_utc_matches_the_state_time_format() -> None:
    """Reset times are published like every other time in the State."""
    assert rl.iso_utc(1800000003.25) == "2027-01-15T08:00:03.250Z"
    assert rl.iso_utc(1e300) is None


# -- headroom ----------------------------------------------------------------------------------------------------


def test_openai_figures_are_read_per_kind() -> None:
    """x-ratelimit-{limit,remaining,reset}-{requests,tokens} become one window per kind."""
    w = rl.ratelimit_windows(headers(
        x_ratelimit_limit_requests="500", x_ratelimit_remaining_requests="499", x_ratelimit_reset_requests="120ms",
        x_ratelimit_limit_tokens="30000", x_ratelimit_remaining_tokens="29000", x_ratelimit_reset_tokens="6m0s",
    ), NOW)
    assert w == {"requests": rl.Window(499, 500, 0.12), "tokens": rl.Window(29000, 30000, 360.0)}


def test_anthropic_figures_are_read_per_kind_with_rfc3339_resets() -> None:
    """anthropic-ratelimit-*-{limit,remaining,reset} become windows, input/output tokens included."""
    w = rl.ratelimit_windows(headers(**{
        "anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "2",
        "anthropic-ratelimit-requests-reset": "2027-01-15T08:00:12Z",
        "anthropic-ratelimit-input-tokens-limit": "40000", "anthropic-ratelimit-input-tokens-remaining": "40000",
    }), NOW)
    assert w == {"requests": rl.Window(2, 50, 12.0), "input_tokens": rl.Window(40000, 40000, None)}


@pytest.mark.parametrize("bad", ["-1", "", "abc", "1.5", "99999999999999999999", " ", "0x10", "١٢"])
def test_nonsense_figures_are_ignored(bad: str) -> None:
    """-1, empty, fractional, huge or non-ASCII figures are left out; a limit of 0 is no limit at all."""
    w = rl.ratelimit_windows(headers(x_ratelimit_limit_requests=bad, x_ratelimit_remaining_requests=bad,
                                     x_ratelimit_limit_tokens="0", x_ratelimit_remaining_tokens="0"), NOW)
    assert w.get("requests") is None
    assert w["tokens"] == rl.Window(0, None, None)
    assert rl.low_headroom(w, 0.5) is None


def test_low_headroom_names_the_tightest_kind_under_the_threshold() -> None:
    """remaining/limit under min_headroom is low; the kind with the least headroom is named."""
    w = {"requests": rl.Window(4, 100), "tokens": rl.Window(10, 1000), "other": rl.Window(None, 5)}
    assert rl.low_headroom(w, 0.05) == ("tokens", rl.Window(10, 1000))
    assert rl.low_headroom(w, 0.01) is None
    assert rl.low_headroom(w, 0.0) is None  # min_headroom 0 turns the check off
    assert rl.low_headroom({"requests": rl.Window(200, 100)}, 0.5) is None  # remaining > limit: nonsense


@given(st.dictionaries(st.sampled_from([
    "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
    "anthropic-ratelimit-requests-limit", "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset", "anthropic-ratelimit-output-tokens-remaining",
]), st.text(max_size=30)), st.floats(0, 1))
def test_any_headers_give_sane_windows_and_never_raise(raw: dict[str, str], min_headroom: float) -> None:
    """Whatever the headers say, figures are non-negative, fractions lie in 0..1 and details serialise."""
    windows = rl.ratelimit_windows(CIMultiDict(raw), NOW)
    for w in windows.values():
        assert all(v is None or v >= 0 for v in (w.remaining, w.limit, w.reset_after))
        fraction = w.fraction()
        assert fraction is None or 0 <= fraction <= 1
    rl.low_headroom(windows, min_headroom)
    json.dumps(rl.ratelimit_details(windows, NOW))


def test_details_publish_remaining_limit_and_reset_time() -> None:
    """The State's ``ratelimit`` entry: remaining, limit and reset as a UTC time, per kind."""
    details = rl.ratelimit_details({"requests": rl.Window(3, 60, 1.5), "tokens": rl.Window(None, 10, None)}, NOW)
    assert details == {"requests": {"remaining": 3, "limit": 60, "reset": "2027-01-15T08:00:01.500Z"},
                       "tokens": {"remaining": None, "limit": 10, "reset": None}}


# -- rate limit or quota -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("payload", "quota"), [
    (OPENAI_RATE, False),
    (OPENAI_QUOTA, True),
    ({"error": {"message": "x", "type": "billing_hard_limit_reached", "code": None}}, True),
    (ANTHROPIC_RATE, False),
    (ANTHROPIC_SPEND, True),
    (ANTHROPIC_CREDIT, True),
    ({"type": "error", "error": {"type": "billing_error", "message": "x"}}, True),
    (gemini_429("GenerateRequestsPerDayPerProjectPerModel-FreeTier", "20s"), True),
    (gemini_429("GenerateContentInputTokensPerModelPerDay-FreeTier"), True),
    (gemini_429("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "3s"), False),
    ({"error": {"code": 429, "message": "Quota exceeded for 'Requests per day per user'", "status":
                "RESOURCE_EXHAUSTED"}}, True),
    ({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [{
        "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED",
        "metadata": {"quota_limit": "Gemini25ProRequestsPerDay"}}]}}, True),
    ({"error": "too many requests"}, False),
    ({"detail": "Your credit balance is exhausted"}, True),
    (None, False), ([], False), ("text", False), ({"error": {"details": "not a list"}}, False),
])
def test_quota_is_told_from_a_rate_limit_by_the_body(payload: Any, quota: bool) -> None:
    """OpenAI codes, Anthropic spend and credit messages and Gemini per-day quota ids mean quota."""
    assert rl.is_quota_exhausted(payload) is quota


def test_gemini_invalid_key_is_spotted() -> None:
    """Gemini answers a bad key with 400 API_KEY_INVALID."""
    bad_key = {"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                         "status": "INVALID_ARGUMENT", "details": [{
                             "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}
    assert rl.is_invalid_key(bad_key)
    assert not rl.is_invalid_key({"error": {"code": 400, "message": "Invalid JSON payload"}})


def test_retry_delays_from_the_body() -> None:
    """Gemini's RetryInfo, and "try again in 20s" in a message as the last resort."""
    assert rl.retry_delay(gemini_429("PerMinute", "3s")) == 3.0
    assert rl.retry_delay(gemini_429("PerMinute")) is None
    assert rl.retry_delay({"error": {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                                  "retryDelay": "soon"}]}}) is None
    assert rl.retry_delay_in_text("Rate limit reached. Please try again in 20s. Visit ...") == 20.0
    assert rl.retry_delay_in_text("Please retry in 1m30s") == 90.0
    assert rl.retry_delay_in_text("no time here") is None


def test_reset_wait_prefers_the_exhausted_window() -> None:
    """The window at 0 decides; without one, the latest reset (never too early)."""
    windows = {"requests": rl.Window(0, 60, 2.0), "tokens": rl.Window(5000, 10000, 30.0)}
    assert rl.reset_wait(windows) == 2.0
    assert rl.reset_wait({"requests": rl.Window(None, None, 2.0), "tokens": rl.Window(None, None, 5.0)}) == 5.0
    assert rl.reset_wait({"requests": rl.Window(3, 5, None)}) is None


def test_generic_reset_reads_seconds_or_an_epoch() -> None:
    """Gateways' ratelimit-reset: seconds from now, or an epoch time."""
    assert rl.generic_reset(headers(ratelimit_reset="7"), NOW) == 7.0
    assert rl.generic_reset(headers(x_ratelimit_reset=str(NOW + 4)), NOW) == 4.0
    assert rl.generic_reset(headers(x_ratelimit_reset="-3"), NOW) is None
    assert rl.generic_reset(headers(), NOW) is None


# -- the classification table (policies.classify.llm_answer) ---------------------------------------------------


@pytest.mark.parametrize(("status", "payload", "hdrs", "verdict", "reason"), [
    (401, {"error": {"message": "Incorrect API key", "code": "invalid_api_key"}}, {}, Verdict.FATAL, "auth"),
    (403, {"type": "error", "error": {"type": "permission_error", "message": "no"}}, {}, Verdict.FATAL, "auth"),
    (400, {"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT"}}, {},
     Verdict.FATAL, "auth"),
    (404, {"error": {"message": "Invalid URL (GET /v1/modelz)"}}, {}, Verdict.FATAL, "misconfigured"),
    (429, OPENAI_QUOTA, {}, Verdict.FATAL, "quota_exhausted"),
    (429, ANTHROPIC_SPEND, {}, Verdict.FATAL, "quota_exhausted"),
    (400, ANTHROPIC_SPEND, {}, Verdict.FATAL, "quota_exhausted"),
    (402, None, {}, Verdict.FATAL, "quota_exhausted"),
    (429, gemini_429("GenerateRequestsPerDayPerProjectPerModel-FreeTier", "20s"), {}, Verdict.FATAL,
     "quota_exhausted"),
    (429, OPENAI_RATE, {"retry-after": "3"}, Verdict.DEGRADED, "rate_limited"),
    (500, None, {}, Verdict.FAILURE, "http_5xx"),
    (502, None, {}, Verdict.FAILURE, "http_5xx"),
    (503, None, {}, Verdict.FAILURE, "http_5xx"),
    (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, {}, Verdict.FAILURE,
     "overloaded"),
    (408, None, {}, Verdict.FAILURE, "http_408"),
    (409, None, {}, Verdict.FAILURE, "http_409"),
    (400, {"error": {"message": "unsupported parameter"}}, {}, Verdict.FATAL, "misconfigured"),
    (422, None, {}, Verdict.FATAL, "misconfigured"),
    (301, None, {}, Verdict.FATAL, "misconfigured"),
    (500, None, {"x-should-retry": "false"}, Verdict.FATAL, "http_5xx"),
    (529, None, {"x-should-retry": "false"}, Verdict.FATAL, "overloaded"),
    (400, None, {"x-should-retry": "true"}, Verdict.FAILURE, "http_400"),
    (404, None, {"x-should-retry": "true"}, Verdict.FATAL, "misconfigured"),
    (401, None, {"x-should-retry": "true"}, Verdict.FATAL, "auth"),
    (503, None, {"x-should-retry": "true"}, Verdict.FAILURE, "http_5xx"),
    (101, None, {}, Verdict.FAILURE, "http_101"),
])
def test_llm_answer_table(status: int, payload: Any, hdrs: dict[str, str], verdict: Verdict, reason: str) -> None:
    """Each row of the contract's classification, x-should-retry as the SDKs read it."""
    outcome = answer(status, CIMultiDict(hdrs), payload)
    assert (outcome.verdict, outcome.reason) == (verdict, reason)
    assert outcome.error and outcome.error.startswith(f"HTTP {status}")


@pytest.mark.parametrize(("hdrs", "payload", "wait"), [
    ({"retry-after-ms": "1500", "retry-after": "9"}, OPENAI_RATE, 1.5),
    ({"retry-after": "3"}, OPENAI_RATE, 3.0),
    ({"retry-after": "Fri, 15 Jan 2027 08:00:05 GMT"}, ANTHROPIC_RATE, 5.0),
    ({}, gemini_429("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "4s"), 4.0),
    ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s",
      "x-ratelimit-remaining-tokens": "100", "x-ratelimit-reset-tokens": "1m0s"}, OPENAI_RATE, 2.0),
    ({"anthropic-ratelimit-tokens-remaining": "0", "anthropic-ratelimit-tokens-reset": "2027-01-15T08:00:07Z"},
     ANTHROPIC_RATE, 7.0),
    ({"ratelimit-reset": "6"}, {"error": "slow down"}, 6.0),
    ({}, {"error": {"message": "Please try again in 850ms.", "code": "rate_limit_exceeded"}}, 0.85),
    ({}, OPENAI_RATE, None),
    ({"retry-after": "soon"}, None, None),
])
def test_rate_limit_retry_time_comes_from_each_form(hdrs: dict[str, str], payload: Any, wait: float | None) -> None:
    """retry-after-ms, retry-after (seconds or date), RetryInfo, reset headers, in that order of trust."""
    outcome = answer(429, CIMultiDict(hdrs), payload)
    assert (outcome.verdict, outcome.reason) == (Verdict.DEGRADED, "rate_limited")
    assert outcome.retry_after == (pytest.approx(wait) if wait is not None else None)


def test_success_with_headroom_publishes_figures_and_degrades_when_low() -> None:
    """A 200 carries the figures; under min_headroom it is degraded with reason low_headroom."""
    hdrs = headers(x_ratelimit_limit_requests="100", x_ratelimit_remaining_requests="3",
                   x_ratelimit_reset_requests="6m0s")
    low = answer(200, hdrs, {"data": []})
    assert (low.verdict, low.reason) == (Verdict.DEGRADED, "low_headroom")
    assert low.error == "requests: 3 of 100 left (3.0%)"
    assert low.details["ratelimit"]["requests"] == {"remaining": 3, "limit": 100, "reset": "2027-01-15T08:06:00.000Z"}
    fine = answer(200, hdrs, {"data": []}, min_headroom=0.02)
    assert (fine.verdict, fine.reason, fine.details) == (Verdict.OK, None, low.details)
    assert answer(200, headers(x_ratelimit_remaining_requests="-1"), {"data": []}).details == {}


@pytest.mark.parametrize(("raw", "complete", "verdict"), [
    (b'{"data": []}', True, Verdict.OK),
    (b"<html>Sign in</html>", True, Verdict.FAILURE),
    (b'{"data": [', True, Verdict.FAILURE),  # truncated JSON
    (b"[]", True, Verdict.FAILURE),
    (b"", True, Verdict.FAILURE),
    (b'  {"data": [{"id": "a"},' + b"x" * 9000, False, Verdict.OK),  # a listing longer than what is read
    (b"<html>" + b"x" * 9000, False, Verdict.FAILURE),
])
def test_a_200_must_be_json(raw: bytes, complete: bool, verdict: Verdict) -> None:
    """A 200 that is not a JSON object (a captive portal, a cut-off body) is a failure named bad_response."""
    outcome = answer(200, headers(content_type="text/html; charset=utf-8"), raw=raw, complete=complete)
    assert outcome.verdict is verdict
    if verdict is Verdict.FAILURE:
        assert (outcome.reason, outcome.error) == ("bad_response", "the answer is not a JSON object (text/html)")


def test_provider_messages_lose_secrets_and_key_shaped_words() -> None:
    """Our own secrets and anything shaped like an API key are masked; the message is kept short."""
    said = "Incorrect API key provided: sk-proj-abcdef123456. Also my-secret-value. " + "x" * 300
    payload = {"error": {"message": said}}
    outcome = llm_answer(401, headers(), body(payload), complete=True, now=NOW, min_headroom=0.05,
                         mask=lambda t: t.replace("my-secret-value", "***"))
    assert outcome.error is not None
    assert "sk-proj" not in outcome.error and "my-secret-value" not in outcome.error
    assert outcome.error.startswith("HTTP 401: Incorrect API key provided: ***. Also ***.")
    assert len(outcome.error) < 260


def test_should_retry_reads_true_false_or_nothing() -> None:
    """x-should-retry: true/false in any case; anything else is no opinion."""
    assert should_retry(headers(x_should_retry="TRUE")) is True
    assert should_retry(headers(x_should_retry="false")) is False
    assert should_retry(headers(x_should_retry="maybe")) is None
    assert should_retry(headers()) is None


@given(st.integers(100, 599), st.dictionaries(st.sampled_from([
    "retry-after", "retry-after-ms", "x-should-retry", "x-ratelimit-reset-requests", "x-ratelimit-remaining-requests",
    "x-ratelimit-limit-requests", "anthropic-ratelimit-tokens-reset", "ratelimit-reset", "content-type",
]), st.text(max_size=40)), st.one_of(st.binary(max_size=200), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
        ["error", "message", "code", "type", "status", "details", "@type", "retryDelay", "violations", "quotaId",
         "detail", "reason", "metadata"]), inner, max_size=4), max_leaves=15).map(body)), st.booleans())
def test_llm_answer_never_raises(status: int, raw_headers: dict[str, str], raw: bytes, complete: bool) -> None:
    """Any status, headers and body give an outcome with a reason unless it is OK, and a sane retry time."""
    outcome = llm_answer(status, CIMultiDict(raw_headers), raw, complete=complete, now=NOW, min_headroom=0.05)
    assert outcome.verdict is Verdict.OK or outcome.reason
    assert outcome.retry_after is None or 0 <= outcome.retry_after <= 86_400
    json.dumps(dict(outcome.details))


@pytest.mark.parametrize(("code", "reason"), [
    (errno.ECONNRESET, "connection_reset"), (errno.ECONNREFUSED, "connection_refused"),
    (errno.EPIPE, "connection_reset"), (errno.ETIMEDOUT, "timeout"), (errno.EHOSTUNREACH, "unreachable"),
    (errno.EACCES, "connection_error"),
])
def test_client_os_errors_are_named_by_their_errno(code: int, reason: str) -> None:
    """aiohttp's ClientOSError(104) is an OSError subclass, not ConnectionResetError: the errno names it."""

    class ClientOSError(OSError):
        """Stands for aiohttp.ClientOSError: an OSError subclass carrying only the errno."""

    assert exception_reason(ClientOSError(code, "boom")) == (reason, False)
