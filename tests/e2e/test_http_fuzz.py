"""Raw HTTP fuzzing of the daemon process, beyond what the OpenAPI schema describes.

Hypothesis writes requests byte by byte -- methods, targets, versions, header names and values, bodies, with
NULs, invalid UTF-8, odd lengths and chunking -- and sends each on a raw socket. The daemon must never answer
5xx, never log a traceback or an error, keep its memory bounded, and keep publishing the level it had (its
PostgreSQL and Redis are healthy throughout). Then the bulk shapes: 10 MB bodies, deeply nested JSON, and
thousands of connections opened and dropped.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
import urllib.parse
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import SECRETS, DaemonProcess, rss_kib

pytestmark = pytest.mark.e2e

TOKEN = "fuzz-admin-token-0123456789"
T = TypeVar("T")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, postgres: Any, redis_server: Any) -> Any:
    """One daemon for the module (admin endpoints on), probing the shared healthy PostgreSQL and Redis."""
    SECRETS.add(TOKEN)
    d = DaemonProcess(f"""
http: {{listen: "127.0.0.1:0", admin_token: "{TOKEN}"}}
dependencies:
  db: {{kind: postgres, dsn: "{postgres.dsn}"}}
  cache: {{kind: redis, url: "{redis_server.url}"}}
""", Path(tmp_path_factory.mktemp("fuzz")))
    d.start()
    d.wait_state(lambda s: s["level"] == "full", 30, "level full")
    yield d
    d.stop()


def port_of(d: DaemonProcess) -> int:
    """The daemon's HTTP port."""
    return int(d.url.rsplit(":", 1)[1])


def exchange(port: int, data: bytes, timeout: float = 3.0, whole: bool = False) -> bytes:
    """Send ``data`` and read the answer: its status line (or, with ``whole``, up to the end of an error body),
    or what came before the server closed or ``timeout`` passed. Our side stays open: a half-close would end
    the exchange before a slow handler answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        with contextlib.suppress(OSError):
            s.sendall(data)
        out = b""
        with contextlib.suppress(OSError):
            while len(out) < 1_000_000 and (b'"}}' not in out if whole else b"\r\n" not in out) and (
                    chunk := s.recv(65536)):
                out += chunk
        return out


def status_of(answer: bytes) -> int | None:
    """The status code of an HTTP answer, or None when there was none (the connection was just closed)."""
    if not answer:
        return None
    line = answer.split(b"\r\n", 1)[0].split(b" ")
    assert line[0].startswith(b"HTTP/"), answer[:200]
    return int(line[1])


def daemon_rss_kib(d: DaemonProcess) -> int:
    """The daemon's resident memory."""
    assert d.proc is not None
    return rss_kib(d.proc.pid)


ODD = st.sampled_from([b"", b"\x00", b"\xff\xfe", b"\xc2\xb2", b"%00", b"%FF", b"%C2%B2", b"9" * 5000, b"-1", b"1e9",
                       b"nan", b"../", b"//", b"?", b"#", b" ", b"\t", b"\r", b"\n", b"a" * 9000, b"\x80" * 50])
BYTES = st.binary(max_size=40)
PIECE = st.one_of(ODD, BYTES, st.sampled_from([b"1", b"30s", b"5m", b"0", b"W/\"1\"", b"*", b"text/plain; version=abc",
                                               b"application/openmetrics-text", b"Bearer " + TOKEN.encode()]))
# Weighted towards the endpoints that parse their query (and /metrics, which parses Accept).
PATHS = st.sampled_from([b"/service-level", b"/service-level", b"/service-level", b"/history", b"/history",
                         b"/metrics", b"/metrics", b"/service-level/events", b"/healthz", b"/readyz", b"/override",
                         b"/report", b"/ofrep/v1/evaluate/flags", b"/ofrep/v1/evaluate/flags/service-level",
                         b"/ofrep/v1/evaluate/flags/%FF", b"/", b"/nope", b"*"])
PARAMS = st.sampled_from([b"index", b"wait", b"limit", b"index", b"wait", b"limit", b"x", b""])
HEADER_NAMES = st.one_of(st.sampled_from([b"Accept", b"If-None-Match", b"Last-Event-ID", b"Authorization",
                                          b"Content-Type", b"Accept-Encoding", b"X-Forwarded-For", b"Cookie"]),
                         BYTES)


def sometimes_broken(good: st.SearchStrategy[T], broken: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """Mostly ``good``, one time in five ``broken``: a request broken everywhere only tests the first check.
    (Hypothesis favours the first of sampled values, so "good" comes first.)"""
    return st.sampled_from([True, True, True, True, False]).flatmap(lambda ok: good if ok else broken)


GOOD_VALUES = st.sampled_from([b"1", b"30s", b"5m", b"0", b"W/\"1\"", b"*", b"text/plain; version=abc",
                               b"application/openmetrics-text", b"Bearer " + TOKEN.encode(), b"Bearer nope",
                               b"application/json", b"gzip", b"text/html", b"x", b"\xc2\xb2", b"9" * 5000,
                               b"1" * 3000 + b"x", b"nan", b"-1"])


BODIES = [b'{"level": "cache_only", "ttl": "1s"}', b'{"level": "nope"}', b"[" * 3000 + b"]" * 3000,
          b'{"dependency": "nope", "ok": false}', b'[{"dependency": 1}]', b'{"context": {"a": [[[[1]]]]}}',
          b'{"ttl": 1e999}', b'{"level": "cache_only", "ttl": "' + b"9" * 3000 + b'"}', b"\xff\xfe{}",
          b'{"reason": "' + b"x" * 5000 + b'"}']


def quote(value: bytes) -> bytes:
    """``value`` percent-encoded for a query string."""
    return urllib.parse.quote_from_bytes(value, safe="").encode()


@st.composite
def raw_requests(draw: st.DrawFn) -> bytes:
    """One HTTP/1.x request, more or less: every part drawn, one in five parts broken."""
    method = draw(sometimes_broken(st.sampled_from([b"GET", b"GET", b"POST", b"HEAD", b"DELETE", b"OPTIONS"]),
                                   st.one_of(st.sampled_from([b"PUT", b"PATCH", b"CONNECT", b"G\x00T", b"get"]),
                                             BYTES)))
    target = draw(PATHS)
    if draw(st.booleans()):
        query = b"&".join(draw(PARAMS) + b"=" + draw(sometimes_broken(GOOD_VALUES.map(quote), PIECE))
                          for _ in range(draw(st.integers(1, 3))))
        target += b"?" + query
    if not draw(st.sampled_from([True] * 19 + [False])):
        target = draw(BYTES)
    version = draw(sometimes_broken(st.just(b"HTTP/1.1"),
                                    st.sampled_from([b"HTTP/1.0", b"HTTP/9.9", b"HTTP/1.1x", b"", b"HTTP/0.9"])))
    lines = [method + b" " + target + (b" " + version if version else b"")]
    if draw(sometimes_broken(st.just(True), st.just(False))):
        lines.append(b"Host: 127.0.0.1")  # HTTP/1.1 requires it (aiohttp answers 400 without)
    lines += [draw(sometimes_broken(HEADER_NAMES.filter(lambda n: n.isalpha()) | st.just(b"Accept"), HEADER_NAMES))
              + b": " + draw(sometimes_broken(GOOD_VALUES, PIECE)) for _ in range(draw(st.integers(0, 5)))]
    if draw(st.sampled_from([True, True, True, False])):
        lines.append(b"Connection: close")
    body = draw(st.one_of(st.just(b""), BYTES, st.sampled_from(BODIES)))
    framing = draw(sometimes_broken(st.sampled_from(["length", "none"]),
                                    st.sampled_from(["chunked", "wrong-length"])))
    if framing == "none":
        body = b""  # without framing, a body would be read as the next request
    elif framing == "length":
        lines.append(b"Content-Length: " + str(len(body)).encode())
    elif framing == "wrong-length":
        lines.append(b"Content-Length: " + draw(st.sampled_from([b"-1", b"99999999999999999999", b"1x", b"10"])))
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
        body = (f"{len(body):x}".encode() + b"\r\n" + body + b"\r\n0\r\n\r\n") if draw(st.booleans()) else body
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def test_fuzzed_requests_never_get_a_5xx_nor_a_traceback(daemon: DaemonProcess) -> None:
    """Hundreds of generated requests: no 5xx, no traceback or error line in the log, memory bounded, the level
    unchanged and no level change published."""
    port = port_of(daemon)
    seq = daemon.state()["seq"]
    offset = len(daemon.output())
    rss_before = daemon_rss_kib(daemon)
    seen: dict[int | None, int] = {}

    @settings(max_examples=400, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(raw_requests())
    def one(data: bytes) -> None:
        status = status_of(exchange(port, data))
        seen[status] = seen.get(status, 0) + 1
        assert status is None or status < 500, data[:300]

    one()
    print(f"\n  statuses seen: {dict(sorted(seen.items(), key=lambda kv: str(kv[0])))}")
    print(f"  RSS {rss_before} -> {daemon_rss_kib(daemon)} KiB")
    output = daemon.output()[offset:]
    assert "Traceback" not in output
    assert '"level":"error"' not in output and '"level":"critical"' not in output
    assert daemon_rss_kib(daemon) - rss_before < 64 * 1024
    state = daemon.state()
    assert state["level"] == "full"
    changes = [e for e in daemon.get("/history?limit=1000")[1] if e["type"] == "level_changed" and e["seq"] > seq]
    # a fuzzed POST /override with the token may legitimately set and clear levels; anything else may not
    assert all(e.get("reason", "").startswith(("override", "manual")) or "override" in str(e) for e in changes), \
        changes


def test_ten_megabyte_bodies_are_refused_without_being_read(daemon: DaemonProcess) -> None:
    """A 10 MB override body, announced or chunked, is a 413 with the error body; memory does not grow by it."""
    port = port_of(daemon)
    before = daemon_rss_kib(daemon)
    head = f"POST /override HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n".encode()
    body = b'{"level": "' + b"x" * 10_000_000 + b'"}'
    announced = exchange(port, head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body, 10, whole=True)
    chunked = exchange(port, head + b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(
        f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in (body[i:i + 65536] for i in range(0, len(body), 65536)))
        + b"0\r\n\r\n", 10, whole=True)
    for answer in (announced, chunked):
        assert status_of(answer) == 413, answer[:300]
        assert b'"code":"body_too_large"' in answer
    assert daemon_rss_kib(daemon) - before < 32 * 1024


@pytest.mark.parametrize(("body", "code"), [
    (b"[" * 2000 + b"]" * 2000, 400),
    (b'{"level": ' + b"[" * 2000 + b"]" * 2000 + b"}", 400),
    (b'{"level": "\xff\xfe"}', 400),
    (b'{"level": "full", "ttl": "' + b"9" * 3000 + b'"}', 400),
])
def test_deep_and_broken_json_bodies_are_400(daemon: DaemonProcess, body: bytes, code: int) -> None:
    """Deeply nested JSON (2,000 levels, within the 4 KiB override body), invalid UTF-8 in JSON and a 3,000-digit
    ttl are 400 with the error body."""
    answer = exchange(port_of(daemon), b"POST /override HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                      + TOKEN.encode() + b"\r\nContent-Type: application/json\r\nConnection: close\r\n"
                      + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body, whole=True)
    assert status_of(answer) == code, answer[:300]
    assert b'"code":"bad_override"' in answer


def test_thousands_of_connections_opened_and_dropped(daemon: DaemonProcess) -> None:
    """3,000 connections opened and reset at once (some after half a request), in bursts: the level stays,
    /service-level answers at the end, the log stays small and has no traceback."""
    port = port_of(daemon)
    seq = daemon.state()["seq"]
    offset = len(daemon.output())
    linger = struct.pack("ii", 1, 0)  # close() sends RST
    for burst in range(30):
        socks = []
        for i in range(100):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            with contextlib.suppress(OSError):
                s.connect(("127.0.0.1", port))
                if i % 3 == 0:
                    s.sendall(b"GET /service-level?wait=30s&index=" + str(burst).encode())
            socks.append(s)
        for s in socks:
            s.close()
    time.sleep(0.5)  # let the daemon see the resets before reading its log
    assert daemon.get("/service-level")[0] == 200
    assert daemon.state()["level"] == "full"
    assert not [e for e in daemon.get("/history?limit=1000")[1] if e["type"] == "level_changed" and e["seq"] > seq]
    output = daemon.output()[offset:]
    assert "Traceback" not in output
    assert len(output.splitlines()) < 100
