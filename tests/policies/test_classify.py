"""failsoft.policies.classify: exceptions and HTTP answers -> reasons, fatal or not, and how long to wait."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import subprocess
import sys
from email.utils import formatdate
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from failsoft.devtools.localservers import free_port
from failsoft.policies.classify import causes, error_text, exception_reason, http_status, retry_after_seconds
from failsoft.probes.base import OK, ProbeFailure, Verdict

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_800_000_000.0  # a fixed wall clock (epoch seconds)


def test_policies_classify_imports_on_its_own() -> None:
    """``import policies.classify`` works as the first import of a process (a pure module must not need
    ``probes`` to have been imported before it)."""
    result = subprocess.run([sys.executable, "-c", "import policies.classify"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr[-800:]


def _raise(exc: BaseException) -> None:
    raise exc


def chained(outer: BaseException, inner: BaseException, *, implicit: bool = False) -> BaseException:
    """``outer`` raised ``from inner`` (or, with ``implicit``, while handling it), as libraries do."""
    try:
        try:
            _raise(inner)
        except BaseException as e:
            if implicit:
                raise outer  # noqa: B904 - the implicit __context__ chain is what is tested
            raise outer from e
    except BaseException as caught:
        return caught
    raise AssertionError("unreachable")


class LibraryError(Exception):
    """Stands for a client library's own exception type wrapping the OS error."""


@pytest.mark.parametrize(("exc", "reason"), [
    (TimeoutError(), "timeout"),
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"), "connection_refused"),
    (ConnectionResetError(errno.ECONNRESET, "reset by peer"), "connection_reset"),
    (BrokenPipeError(errno.EPIPE, "broken pipe"), "connection_reset"),
    (ConnectionAbortedError(errno.ECONNABORTED, "aborted"), "connection_reset"),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "dns"),
    (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), "tls"),
    (ssl.SSLCertVerificationError(1, "certificate verify failed"), "tls"),
    (OSError(errno.EHOSTUNREACH, "No route to host"), "unreachable"),
    (OSError(errno.ENETUNREACH, "Network is unreachable"), "unreachable"),
    (OSError(errno.ECONNREFUSED, "refused, as a plain OSError with the errno"), "connection_refused"),
    (OSError(errno.EMFILE, "Too many open files"), "connection_error"),
    (ValueError("something else"), "error"),
])
def test_exception_types_map_to_reasons(exc: BaseException, reason: str) -> None:
    """The table of the contract: each kind of failure has its reason, and none of these is fatal."""
    assert exception_reason(exc) == (reason, False)


@pytest.mark.parametrize("implicit", [False, True])
def test_the_cause_chain_is_searched(implicit: bool) -> None:
    """A library error raised from (or while handling) ConnectionRefusedError is still connection_refused."""
    exc = chained(LibraryError("could not connect"), ConnectionRefusedError(111, "refused"), implicit=implicit)
    assert exception_reason(exc) == ("connection_refused", False)


def test_a_long_chain_is_followed_to_the_bottom() -> None:
    """Three levels of wrapping still find the OS error at the bottom."""
    exc = chained(LibraryError("outer"), chained(RuntimeError("middle"), socket.gaierror(-2, "unknown name")))
    assert exception_reason(exc) == ("dns", False)


def test_the_outermost_known_exception_wins() -> None:
    """A timeout raised while handling a reset is a timeout: the newest known failure is the reason."""
    exc = chained(TimeoutError(), ConnectionResetError(104, "reset"))
    assert exception_reason(exc)[0] == "timeout"


def test_a_probe_failure_anywhere_in_the_chain_decides_with_its_fatality() -> None:
    """A probe that knows why it failed (ProbeFailure) wins over any OS error, and carries fatal."""
    exc = chained(LibraryError("wrapped"), ProbeFailure("auth", "password authentication failed", fatal=True))
    assert exception_reason(exc) == ("auth", True)
    inner = chained(ProbeFailure("connection_closed", "closed"), ConnectionResetError(104, "reset"))
    assert exception_reason(inner) == ("connection_closed", False)


def test_a_cycle_in_the_chain_does_not_hang() -> None:
    """Exceptions whose context points back at each other are each visited once."""
    a, b = LibraryError("a"), LibraryError("b")
    a.__context__, b.__context__ = b, a
    assert [id(e) for e in causes(a)] == [id(a), id(b)]
    assert exception_reason(a) == ("error", False)


def test_aiohttp_os_error_is_followed() -> None:
    """aiohttp keeps the OS error in ``os_error``, not in the chain; it is searched too."""
    exc = LibraryError("Cannot connect")
    exc.os_error = ConnectionRefusedError(111, "refused")  # type: ignore[attr-defined]
    assert exception_reason(exc) == ("connection_refused", False)


async def test_real_aiohttp_connection_errors_are_classified() -> None:
    """The exceptions aiohttp really raises: a closed port is connection_refused, TLS to a plain HTTP server
    is tls."""
    app = web.Application()
    async def plain(_: web.Request) -> web.Response:
        return web.Response(text="plain http")

    app.router.add_get("/", plain)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    reasons = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            for url in (f"http://127.0.0.1:{free_port()}/", f"https://127.0.0.1:{port}/"):
                with pytest.raises(aiohttp.ClientError) as caught:
                    await session.get(url)
                reasons.append(exception_reason(caught.value))
    finally:
        await runner.cleanup()
    assert reasons == [("connection_refused", False), ("tls", False)]


def test_error_text_names_the_type_and_is_bounded() -> None:
    """The human text starts with the exception type, says ``timed out`` for a bare timeout, and is cut at 500
    characters."""
    assert error_text(ConnectionRefusedError(111, "Connect call failed")) == (
        "ConnectionRefusedError: [Errno 111] Connect call failed")
    assert error_text(TimeoutError()) == "TimeoutError: timed out"
    assert len(error_text(ValueError("x" * 2000))) == 500


# -- retry-after ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("headers", "seconds"), [
    ({"Retry-After": "7"}, 7.0),
    ({"retry-after": "0"}, 0.0),
    ({"Retry-After": "1.5"}, 1.5),
    ({"Retry-After-Ms": "250"}, 0.25),
    ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),  # the more precise header wins
    ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),  # an unreadable ms header falls back
    ({"Retry-After": formatdate(NOW + 30, usegmt=True)}, 30.0),  # HTTP date
    ({"Retry-After": formatdate(NOW + 90, usegmt=False)}, 90.0),  # date with a numeric zone
    ({"Retry-After": formatdate(NOW - 60, usegmt=True)}, 0.0),  # a date in the past: go now
    ({}, None),
    ({"Retry-After": "tomorrow-ish"}, None),
    ({"Retry-After": "-5"}, None),
])
def test_retry_after_forms(headers: dict[str, str], seconds: float | None) -> None:
    """retry-after-ms, retry-after in seconds and as an HTTP date, relative to the given wall clock."""
    got = retry_after_seconds(CIMultiDict(headers), NOW)
    if seconds is None:
        assert got is None
    else:
        assert got == pytest.approx(seconds, abs=1e-6)


def test_retry_after_is_bounded_to_a_day() -> None:
    """An absurd retry time never parks a dependency for more than a day."""
    far = retry_after_seconds(CIMultiDict({"Retry-After": formatdate(NOW + 10 * 86_400, usegmt=True)}), NOW)
    assert far is not None
    assert far <= 86_400
    assert (retry_after_seconds(CIMultiDict({"Retry-After": "999999999"}), NOW) or 0) <= 86_400


# -- http_status ---------------------------------------------------------------------------------------

TWO_XX = set(range(200, 300))


@pytest.mark.parametrize(("status", "verdict", "reason"), [
    (200, Verdict.OK, None),
    (204, Verdict.OK, None),
    (401, Verdict.FATAL, "auth"),
    (403, Verdict.FATAL, "auth"),
    (404, Verdict.FATAL, "misconfigured"),
    (429, Verdict.DEGRADED, "rate_limited"),
    (500, Verdict.FAILURE, "http_5xx"),
    (502, Verdict.FAILURE, "http_5xx"),
    (503, Verdict.FAILURE, "http_5xx"),
    (529, Verdict.FAILURE, "http_5xx"),
    (400, Verdict.FAILURE, "http_400"),
    (302, Verdict.FAILURE, "http_302"),
])
def test_http_status_table(status: int, verdict: Verdict, reason: str | None) -> None:
    """The contract's table for a plain HTTP dependency expecting 2xx."""
    outcome = http_status(status, CIMultiDict(), NOW, TWO_XX)
    assert (outcome.verdict, outcome.reason) == (verdict, reason)
    if verdict is not Verdict.OK:
        assert str(status) in (outcome.error or "")


def test_expected_statuses_win_over_the_table() -> None:
    """``expect_status: [401]`` makes 401 healthy, and 200 then unexpected."""
    assert http_status(401, CIMultiDict(), NOW, {401}) == OK
    outcome = http_status(200, CIMultiDict(), NOW, {401})
    assert (outcome.verdict, outcome.reason) == (Verdict.FAILURE, "http_200")


def test_429_carries_the_retry_after() -> None:
    """A rate-limited answer says how long not to probe, from its headers."""
    assert http_status(429, CIMultiDict({"Retry-After": "12"}), NOW, TWO_XX).retry_after == 12.0
    dated = http_status(429, CIMultiDict({"Retry-After": formatdate(NOW + 45, usegmt=True)}), NOW, TWO_XX)
    assert dated.retry_after == pytest.approx(45.0)
    assert http_status(429, CIMultiDict(), NOW, TWO_XX).retry_after is None


async def test_error_text_of_a_real_connect_failure_has_no_library_noise() -> None:
    """aiohttp's connector error for plain HTTP to a closed port reads ``cannot connect to 127.0.0.1:<port>:
    Connection refused``: no ``ssl:default``, no repeated address tuple, no class name of the library."""
    import aiohttp

    from failsoft.devtools.localservers import free_port

    port = free_port()
    async with aiohttp.ClientSession() as session:
        try:
            await session.get(f"http://127.0.0.1:{port}/health")
        except aiohttp.ClientConnectorError as exc:
            text = error_text(exc)
        else:
            raise AssertionError("a closed port answered")
    assert text == f"cannot connect to 127.0.0.1:{port}: Connection refused"
    assert "ssl" not in error_text(ValueError("Cannot connect to host h:1 ssl:default [x]"))


async def test_error_text_of_a_tls_failure_says_what_failed() -> None:
    """A certificate from an unknown CA: the text carries OpenSSL's reason (``certificate verify failed``), not
    ``os.strerror`` of the SSL error code 1 (``Operation not permitted``, which is what it said before)."""
    import trustme

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(ctx)
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session:
            try:
                await session.get(f"https://127.0.0.1:{port}/health")
            except aiohttp.ClientConnectorCertificateError as exc:
                text, reason = error_text(exc), exception_reason(exc)
            else:
                raise AssertionError("an untrusted certificate was accepted")
    finally:
        server.close()
        await server.wait_closed()
    assert reason == ("tls", False)
    assert text.startswith(f"cannot connect to 127.0.0.1:{port}: ")
    assert "certificate verify failed" in text
    assert "Operation not permitted" not in text
