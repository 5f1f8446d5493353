"""The fault matrix: one row per fault, each with the state and reason the daemon must report, against real servers.

Rows are data (``SERVER_ROWS``, ``PRESENT_ROWS``, ``LLM_ROWS``); one generic test per table runs them. Faults are
real: signals to real PostgreSQL and Redis processes, a standby started with ``standby.signal``, Redis filled
past ``maxmemory``, its password changed under the daemon, iptables rules in a network namespace the test
creates (packets dropped, or answered with TCP resets), TLS servers with certificates made by the test, a name
under ``.invalid``, a body dripped a byte at a time, one far larger than a probe reads, and the LLM simulator's
failure modes. Every row ends in ``MATRIX``, printed as a table at the end of the run (fault, expected, seen,
detection time); detection times are printed, never asserted.

Not here yet: "PostgreSQL refusing new sessions (max_connections reached) seen by a daemon already running"
depends on a probe fix made elsewhere; it is added as a row when that lands.

The flapping property (faults at 30 % random failure never make the level flap faster than ``recover_after``)
runs for ``FLAP_SECONDS`` (20 s in ``make test``, a minute in ``make soak``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis as redis_lib
import trustme
from faultservers import (
    MATRIX,
    BigBodyServer,
    MatrixRow,
    NetworkNamespace,
    ThreadedServer,
    drip_server,
    require_netns,
    silent_server,
    tls_server,
)
from support import SECRETS, DaemonProcess, make_server, wait_for

from failsoft.devtools.llmsim import ThreadedSimulator
from failsoft.devtools.localservers import PostgresServer, RedisServer, find_redis, free_port

pytestmark = pytest.mark.e2e

# Fast probing so that each row is decided in about a second; a slow machine only stretches the detection times.
FAST = """
defaults:
  interval: 200ms
  fast_interval: 100ms
  timeout: 1s
  slow_threshold: 5s
  jitter: 0%
  down_interval: {initial: 200ms, max: 1s}
"""
DEADLINE = 30.0  # seconds a row may take to reach its expected state (generous: two cores, eight test runs)
FLAP_SECONDS = float(os.environ.get("FLAP_SECONDS", "20"))


def dependency_yaml(deps: dict[str, dict[str, Any]], extra: str = "") -> str:
    """A daemon config: the given dependencies, fast probing, and no policy (the built-in one)."""
    return "http: {listen: \"127.0.0.1:0\"}\n" + FAST + extra + "dependencies:\n" + "".join(
        f"  {name}: {json.dumps(d)}\n" for name, d in deps.items())


def expect_text(state: str, reason: str | None) -> str:
    """``down/timeout``: how a row's expectation and observation are printed."""
    return f"{state}/{reason or '-'}"


def seen_text(d: DaemonProcess, name: str) -> str:
    """The dependency's current state/reason."""
    dep = d.state()["dependencies"][name]
    return expect_text(dep["state"], dep["reason"])


@dataclass(frozen=True)
class Expect:
    """A row's fault and the dependency state and reason it must lead to."""

    fault: str
    state: str
    reason: str | None


def watch_row(d: DaemonProcess, name: str, want: Expect, since: float, *, since_wall: float | None = None,
              note: str = "") -> dict[str, Any]:
    """Wait until dependency ``name`` is as ``want`` says; record the row (also when it never gets there).

    The detection time runs from ``since`` (monotonic) to the first answer that shows it; with ``since_wall`` (a
    fault present from the start) from that wall-clock time to the dependency's own ``since``.
    """
    fault, state, reason = want.fault, want.state, want.reason
    expected = expect_text(state, reason)
    try:
        found = d.wait_state(lambda s: (s["dependencies"][name]["state"], s["dependencies"][name]["reason"])
                             == (state, reason), timeout=DEADLINE, what=f"{name} {expected}")
    except AssertionError:
        MATRIX.append(MatrixRow(fault, expected, seen_text(d, name), None, note, ok=False))
        raise
    dep = found["dependencies"][name]
    took = time.monotonic() - since
    if since_wall is not None:
        took, note = parse_time(dep["since"]).timestamp() - since_wall, note or "from the daemon's start"
    MATRIX.append(MatrixRow(fault, expected, expected, took, note))
    return dep


def local_server(kind: str) -> Any:
    """A local PostgreSQL or Redis (these rows need the process itself: its pid, its data directory)."""
    return make_server(kind, local=True)


# -------------------------------------------------------------------------------------------------------
# Rows against real servers: one daemon each, the fault injected once the dependency is healthy.


@dataclass
class Lab:
    """What a row builds, and what the test tears down after it."""

    tmp: Path
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def keep(self, server: Any) -> Any:
        """Close ``server`` after the row."""
        self.cleanups.append(server.close)
        return server


@dataclass(frozen=True)
class Scenario:
    """A dependency (its YAML) and the fault to inject into it."""

    dependency: dict[str, Any]
    inject: Callable[[], None]
    secret: str | None = None  # a secret that must appear nowhere in what the daemon prints
    # For a fault that is undone (a restart): the state the fault must lead to first, and how it is undone.
    midway: tuple[str, str | None] | None = None
    undo: Callable[[], None] | None = None


@dataclass(frozen=True)
class Row:
    """One fault of the matrix: how to build it, and the dependency state and reason it must lead to."""

    fault: str
    build: Callable[[Lab], Scenario]
    state: str
    reason: str | None
    kernel: bool = False  # needs a network namespace and iptables (root)


def _postgres(lab: Lab) -> PostgresServer:
    return lab.keep(local_server("postgres"))


def _redis(lab: Lab) -> RedisServer:
    return lab.keep(local_server("redis"))


def kill_postgres(lab: Lab) -> Scenario:
    """kill -9 of the whole PostgreSQL process tree."""
    pg = _postgres(lab)
    return Scenario({"kind": "postgres", "dsn": pg.dsn}, pg.kill)


def stop_postgres(lab: Lab) -> Scenario:
    """A graceful stop: SIGINT, PostgreSQL's fast shutdown (what ``pg_ctl stop`` does), then the process exits."""
    pg = _postgres(lab)
    return Scenario({"kind": "postgres", "dsn": pg.dsn}, lambda: _fast_shutdown(pg))


def _fast_shutdown(pg: PostgresServer) -> None:
    """SIGINT, PostgreSQL's fast shutdown, and the wait for the postmaster to exit."""
    assert pg.proc is not None
    pg.proc.send_signal(signal.SIGINT)
    pg.proc.wait(30)


def stop_redis(lab: Lab) -> Scenario:
    """A graceful stop of Redis: SIGTERM (it closes its clients and exits)."""
    rd = _redis(lab)

    def stop() -> None:
        assert rd.proc is not None
        rd.proc.terminate()
        rd.proc.wait(30)

    return Scenario({"kind": "redis", "url": rd.url}, stop)


def restart_postgres(lab: Lab) -> Scenario:
    """kill -9 and start again on the same port and data: healthy again."""
    pg = _postgres(lab)

    return Scenario({"kind": "postgres", "dsn": pg.dsn}, pg.kill, midway=("down", "connection_refused"),
                    undo=pg.start)


def sigstop_redis(lab: Lab) -> Scenario:
    """SIGSTOP: Redis hangs with its connections open (resumed after the row)."""
    rd = _redis(lab)
    lab.cleanups.insert(0, rd.resume)
    return Scenario({"kind": "redis", "url": rd.url}, rd.pause)


def postgres_in_recovery(lab: Lab) -> Scenario:
    """The primary comes back as a standby (``standby.signal``): in recovery, read-only."""
    pg = _postgres(lab)

    def to_standby() -> None:
        _fast_shutdown(pg)
        signal_file = pg.data / "standby.signal"
        signal_file.touch()
        if pg.user is not None:
            import pwd

            entry = pwd.getpwnam(pg.user)
            os.chown(signal_file, entry.pw_uid, entry.pw_gid)
        pg.start()

    return Scenario({"kind": "postgres", "dsn": pg.dsn, "role": "primary"}, to_standby)


def postgres_refusing_sessions(lab: Lab) -> Scenario:
    """PostgreSQL at ``max_connections`` while the daemon runs: its kept connection still answers, every new
    session gets "too many clients already". The daemon's periodic new-session check sees it (degraded)."""
    pg = _postgres(lab)
    loop = asyncio.new_event_loop()
    held: list[asyncpg.Connection] = []

    async def fill() -> None:
        while True:
            try:
                held.append(await asyncpg.connect(pg.dsn, timeout=10))
            except asyncpg.TooManyConnectionsError:
                return
            assert len(held) < 500, "the server never refused a session"

    def release() -> None:
        for conn in held:
            conn.terminate()
        loop.close()

    lab.cleanups.insert(0, release)
    return Scenario({"kind": "postgres", "dsn": pg.dsn}, lambda: loop.run_until_complete(fill()))


def redis_oom(lab: Lab) -> Scenario:
    """``maxmemory`` just above what is used, ``noeviction``, then filled past it."""
    rd = _redis(lab)

    def fill() -> None:
        # Data first, then the limit under it: the server is full for good (a limit set above and filled up to
        # drops back under it as soon as the filling client's buffers are freed).
        client = redis_lib.Redis(port=rd.port, password=rd.password)
        for i in range(40):
            client.set(f"fill:{i}", b"x" * 100_000)
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", str(used - 1_000_000))
        with pytest.raises(redis_lib.exceptions.OutOfMemoryError):
            client.set("one-more", b"x")
        client.close()

    return Scenario({"kind": "redis", "url": rd.url}, fill)


def redis_password_changed(lab: Lab) -> Scenario:
    """The password changes under the daemon and its connections are killed: every new login is refused."""
    rd = _redis(lab)
    new = "rd-new-" + os.urandom(6).hex()
    SECRETS.add(new)

    def change() -> None:
        client = redis_lib.Redis(port=rd.port, password=rd.password)
        client.config_set("requirepass", new)
        client.client_kill_filter(_type="normal", skipme=True)
        client.close()

    return Scenario({"kind": "redis", "url": rd.url}, change, secret=rd.password)


def _namespaced_redis(lab: Lab) -> tuple[NetworkNamespace, int, str]:
    binary = find_redis()
    if binary is None:
        pytest.skip("redis-server is not installed")
    ns = NetworkNamespace()
    lab.cleanups.append(ns.close)
    port, password = free_port(), "rd-ns-" + os.urandom(6).hex()
    SECRETS.add(password)
    ns.spawn([binary, "--bind", ns.ns_ip, "--port", str(port), "--requirepass", password, "--save", "",
              "--appendonly", "no", "--daemonize", "no"], lab.tmp / "redis-ns.log")

    def answers() -> bool:
        try:
            return bool(redis_lib.Redis(host=ns.ns_ip, port=port, password=password, socket_timeout=1).ping())
        except redis_lib.exceptions.ConnectionError:
            return False

    wait_for(answers, 15, what="Redis inside the namespace")
    return ns, port, f"redis://:{password}@{ns.ns_ip}:{port}/0"


def blackhole(lab: Lab) -> Scenario:
    """iptables DROP inside the namespace: packets to Redis vanish, nothing answers."""
    ns, port, url = _namespaced_redis(lab)
    return Scenario({"kind": "redis", "url": url}, lambda: ns.drop(port))


def tcp_reset(lab: Lab) -> Scenario:
    """iptables REJECT --reject-with tcp-reset inside the namespace: every packet to Redis gets a TCP RST."""
    ns, port, url = _namespaced_redis(lab)
    return Scenario({"kind": "redis", "url": url}, lambda: ns.reset(port))


SERVER_ROWS = [
    Row("PostgreSQL kill -9", kill_postgres, "down", "connection_refused"),
    Row("PostgreSQL graceful stop (fast shutdown)", stop_postgres, "down", "connection_refused"),
    Row("PostgreSQL restart (kill -9, seen down, start)", restart_postgres, "healthy", None),
    Row("PostgreSQL primary in recovery (standby.signal)", postgres_in_recovery, "degraded", "read_only"),
    Row("PostgreSQL refusing new sessions (max_connections)", postgres_refusing_sessions, "degraded",
        "too_many_connections"),
    Row("Redis graceful stop (SIGTERM)", stop_redis, "down", "connection_refused"),
    Row("Redis SIGSTOP (hang)", sigstop_redis, "down", "timeout"),
    Row("Redis maxmemory + noeviction filled", redis_oom, "degraded", "oom"),
    Row("Redis wrong password", redis_password_changed, "down", "auth"),
    Row("blackhole (iptables DROP in a netns)", blackhole, "down", "timeout", kernel=True),
    Row("TCP reset (iptables REJECT tcp-reset in a netns)", tcp_reset, "down", "connection_refused", kernel=True),
]


@pytest.mark.parametrize("row", SERVER_ROWS, ids=lambda r: r.fault)
def test_server_fault(row: Row, tmp_path: Path) -> None:
    """Each server fault leads the dependency to the row's state and reason (the matrix prints how fast); no
    secret shows up in what the daemon printed."""
    if row.kernel:
        require_netns()
    lab = Lab(tmp_path)
    try:
        scenario = row.build(lab)
        d = DaemonProcess(dependency_yaml({"dep": scenario.dependency}), tmp_path)
        lab.cleanups.insert(0, d.stop)
        d.start()
        d.wait_state(lambda s: s["dependencies"]["dep"]["state"] == "healthy", timeout=DEADLINE,
                     what="dep healthy before the fault")
        injected = time.monotonic()
        scenario.inject()
        if scenario.midway is not None and scenario.undo is not None:
            d.wait_state(lambda s: (s["dependencies"]["dep"]["state"], s["dependencies"]["dep"]["reason"])
                         == scenario.midway, timeout=DEADLINE, what=f"dep {scenario.midway} before the restart")
            injected = time.monotonic()
            scenario.undo()
        dep = watch_row(d, "dep", Expect(row.fault, row.state, row.reason), injected)
        if scenario.secret is not None:
            assert scenario.secret not in json.dumps(dep)
            assert scenario.secret not in d.output()
    finally:
        for cleanup in lab.cleanups:
            try:
                cleanup()
            except Exception as exc:
                print(f"cleanup failed: {exc!r}")


# -------------------------------------------------------------------------------------------------------
# Faults present from the start (TLS, DNS, slow and huge bodies): one daemon for all, one dependency per row.


@dataclass(frozen=True)
class PresentRow:
    """A dependency that is broken from the daemon's start, and what it must be reported as."""

    fault: str
    dependency: str
    state: str
    reason: str | None
    error_has: str = ""  # what last_error must say (tells an untrusted CA from a wrong name)


PRESENT_ROWS = [
    PresentRow("http: TLS certificate from an untrusted CA", "http_untrusted", "down", "tls", "local issuer"),
    PresentRow("http: TLS certificate for another host name", "http_wrong_host", "down", "tls", "mismatch"),
    PresentRow("http: TLS handshake never answered", "http_handshake", "down", "timeout"),
    PresentRow("llm: TLS certificate from an untrusted CA", "llm_untrusted", "down", "tls", "local issuer"),
    PresentRow("llm: TLS certificate for another host name", "llm_wrong_host", "down", "tls", "mismatch"),
    PresentRow("llm: TLS handshake never answered", "llm_handshake", "down", "timeout"),
    PresentRow("http: DNS failure (a name under .invalid)", "http_dns", "down", "dns"),
    PresentRow("http: headers dripped a byte every 0.5 s", "http_drip_headers", "down", "timeout"),
    PresentRow("llm: body dripped a byte every 0.5 s", "llm_drip", "down", "timeout"),
    # kind http judges the status and reads at most a few KiB, whatever comes (or does not come) after.
    PresentRow("http: body dripped a byte every 0.5 s (status judged)", "http_drip", "healthy", None),
    PresentRow("http: body larger than the read limit (64 MiB)", "http_huge", "healthy", None),
]


@dataclass
class PresentLab:
    """The daemon and the servers behind the rows of ``PRESENT_ROWS``."""

    daemon: DaemonProcess
    started: float  # wall clock (epoch seconds) of the daemon's start
    huge: BigBodyServer


@pytest.fixture(scope="module")
def present_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PresentLab]:
    """TLS servers (one trusted CA in the daemon's SSL_CERT_FILE, one not), a silent server, a dripping one and a
    huge one; one daemon probing each of them once a dependency."""
    tmp = tmp_path_factory.mktemp("present-faults")
    trusted, stranger = trustme.CA(), trustme.CA()
    ca_file = tmp / "ca.pem"
    trusted.cert_pem.write_to_path(str(ca_file))

    def context(ca: trustme.CA, host: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(host).configure_cert(ctx)
        return ctx

    big = BigBodyServer()
    servers: list[ThreadedServer] = [
        tls_server(context(stranger, "127.0.0.1")),  # untrusted
        tls_server(context(trusted, "failsoft-other.example")),  # trusted CA, wrong name
        silent_server(),
        drip_server(),
        drip_server(headers=True),
        big,
    ]
    untrusted, wrong, silent, drip, drip_headers, huge = (s.port for s in servers)
    key = "sk-fault-" + os.urandom(6).hex()
    SECRETS.add(key)

    def llm(port: int) -> dict[str, Any]:
        return {"kind": "llm", "provider": "openai", "base_url": f"https://127.0.0.1:{port}/v1", "api_key": key}

    deps = {
        "http_untrusted": {"kind": "http", "url": f"https://127.0.0.1:{untrusted}/"},
        "http_wrong_host": {"kind": "http", "url": f"https://127.0.0.1:{wrong}/"},
        "http_handshake": {"kind": "http", "url": f"https://127.0.0.1:{silent}/"},
        "llm_untrusted": llm(untrusted),
        "llm_wrong_host": llm(wrong),
        "llm_handshake": llm(silent),
        "http_dns": {"kind": "http", "url": "http://failsoft-fault-test.invalid/"},
        "http_drip": {"kind": "http", "url": f"http://127.0.0.1:{drip}/"},
        "http_drip_headers": {"kind": "http", "url": f"http://127.0.0.1:{drip_headers}/"},
        "llm_drip": {**llm(drip), "base_url": f"http://127.0.0.1:{drip}/v1"},
        "http_huge": {"kind": "http", "url": f"http://127.0.0.1:{huge}/"},
    }
    d = DaemonProcess(dependency_yaml(deps), tmp, env={"SSL_CERT_FILE": str(ca_file), "SSL_CERT_DIR": str(tmp)})
    started = time.time()
    try:
        yield PresentLab(d.start(wait_ready=False), started, big)
    finally:
        d.stop()
        for s in servers:
            s.close()


@pytest.mark.parametrize("row", PRESENT_ROWS, ids=lambda r: r.fault)
def test_fault_present_from_the_start(row: PresentRow, present_lab: PresentLab) -> None:
    """A dependency broken from the start is reported with the row's state and reason (the matrix prints the
    time from the daemon's start); the daemon never hangs on it, and no secret shows up."""
    d = present_lab.daemon
    dep = watch_row(d, row.dependency, Expect(row.fault, row.state, row.reason), time.monotonic(),
                    since_wall=present_lab.started)
    assert row.error_has in (dep["last_error"] or ""), dep["last_error"]
    if row.dependency == "http_huge":
        # Judged by its status after a few KiB: the probe hung up long before the 64 MiB were sent.
        wait_for(lambda: len(present_lab.huge.sent) >= 2, DEADLINE, what="two answers of the huge server")
        assert max(present_lab.huge.sent[:-1]) < present_lab.huge.size
    for secret in SECRETS:
        assert secret not in json.dumps(dep)


# -------------------------------------------------------------------------------------------------------
# LLM answers: one daemon, one simulated provider per row, the fault set once the provider is healthy.


@dataclass(frozen=True)
class LlmRow:
    """A failure mode of the simulator (``llmsim``) and what the daemon must make of it."""

    fault: str
    mode: str
    params: dict[str, Any]
    state: str
    reason: str | None


LLM_ROWS = [
    LlmRow("llm 401 (bad key)", "auth", {}, "down", "auth"),
    LlmRow("llm 403 (forbidden)", "forbidden", {}, "down", "auth"),
    LlmRow("llm 404 (wrong base_url or model)", "not_found", {}, "down", "misconfigured"),
    LlmRow("llm 429 retry-after seconds", "rate_limit", {"form": "seconds", "retry_after": 30}, "degraded",
           "rate_limited"),
    LlmRow("llm 429 retry-after-ms", "rate_limit", {"form": "ms", "retry_after": 30}, "degraded", "rate_limited"),
    LlmRow("llm 429 retry-after HTTP date", "rate_limit", {"form": "date", "retry_after": 30}, "degraded",
           "rate_limited"),
    LlmRow("llm 500", "error", {}, "down", "http_5xx"),
    LlmRow("llm 529 (overloaded)", "overloaded", {}, "down", "overloaded"),
    LlmRow("llm truncated JSON", "truncated", {}, "down", "truncated_response"),
    LlmRow("llm redirect loop", "redirect_loop", {}, "down", "redirect_loop"),
    LlmRow("llm body larger than the read limit", "huge", {}, "healthy", None),
]


def _provider(row: LlmRow) -> str:
    return "p" + str(LLM_ROWS.index(row))


@pytest.fixture(scope="module")
def llm_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThreadedSimulator, DaemonProcess]]:
    """The simulator with one OpenAI-format provider per row, all healthy, and a daemon probing each."""
    sim = ThreadedSimulator({_provider(r): "openai" for r in LLM_ROWS}).start()
    tmp = tmp_path_factory.mktemp("llm-faults")
    deps = {_provider(r): sim.dependency_config(_provider(r)) for r in LLM_ROWS}
    SECRETS.update(str(dep["api_key"]) for dep in deps.values())
    d = DaemonProcess(dependency_yaml(deps), tmp)
    try:
        yield sim, d.start()
    finally:
        d.stop()
        sim.stop()


@pytest.mark.parametrize("row", LLM_ROWS, ids=lambda r: r.fault)
def test_llm_fault(row: LlmRow, llm_lab: tuple[ThreadedSimulator, DaemonProcess]) -> None:
    """A provider that turns to the row's failure mode is reported with the row's state and reason."""
    sim, d = llm_lab
    name = _provider(row)
    d.wait_state(lambda s: s["dependencies"][name]["state"] == "healthy", timeout=DEADLINE, what=f"{name} healthy")
    before = sim.requests(name)
    injected = time.monotonic()
    sim.set_mode(name, row.mode, **row.params)
    dep = watch_row(d, name, Expect(row.fault, row.state, row.reason), injected,
                    note="stays healthy" if row.state == "healthy" else "")
    if row.state == "healthy":
        # Still healthy after several probes of the huge answer: it was judged, not buffered.
        wait_for(lambda: sim.requests(name) >= before + 3, DEADLINE, what="three probes of the huge answer")
        assert d.state()["dependencies"][name]["state"] == "healthy"
    if row.reason == "rate_limited":
        assert dep["retry_at"] is not None


# -------------------------------------------------------------------------------------------------------
# Flapping: random failures never make the level change faster than recover_after


def parse_time(text: str) -> datetime:
    """A contract timestamp."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


RECOVER_AFTER = 2.0


def test_random_failures_never_flap_faster_than_recover_after(tmp_path: Path) -> None:
    """30 % of the LLM's answers fail at random for FLAP_SECONDS: the dependency flaps, but every published
    improvement of the level comes at least ``recover_after`` after the worsening before it (hysteresis), and
    the level did change both ways (the property was exercised)."""
    sim = ThreadedSimulator({"flaky": "openai"}).start()
    try:
        dep = sim.dependency_config("flaky")
        SECRETS.add(str(dep["api_key"]))
        policy = f"""
policy:
  recover_after: {RECOVER_AFTER}s
  rules:
    - {{level: degraded, when: {{any_not_healthy: [flaky]}}}}
"""
        config = dependency_yaml({"flaky": dep}, extra=policy).replace(
            "down_interval: {initial: 200ms, max: 1s}", "down_interval: {initial: 100ms, max: 200ms}\n"
            "  unhealthy_threshold: 2\n  healthy_threshold: 1").replace("interval: 200ms", "interval: 100ms")
        d = DaemonProcess(config, tmp_path).start()
        try:
            d.wait_state(lambda s: s["level"] == "full", timeout=DEADLINE, what="full before the faults")
            sim.set_mode("flaky", "flaky", rate=0.3, seed=20261130)
            end = time.monotonic() + FLAP_SECONDS
            wait_for(lambda: time.monotonic() > end, FLAP_SECONDS + 5, interval=0.5, what="the flapping period")
            sim.set_mode("flaky", "healthy")
            _, history, _ = d.get("/history?limit=1024")
        finally:
            d.stop()
    finally:
        sim.stop()
    changes = [e for e in history if e["type"] == "level_changed"]
    deps = [e for e in history if e["type"] == "dependency_changed"]
    rank = {"full": 0, "degraded": 1, "limited": 2, "cache_only": 3}
    gaps, too_soon = [], []
    for before, after in itertools.pairwise(changes):
        if rank[after["level"]] < rank[before["level"]]:
            gap = (parse_time(after["at"]) - parse_time(before["at"])).total_seconds()
            gaps.append(gap)
            if gap < RECOVER_AFTER - 0.01:  # timestamps are in ms on the wall clock; the daemon waits on monotonic
                too_soon.append((before, after))
    worse = sum(1 for e in changes if rank[e["level"]] > rank.get(e.get("previous") or "full", 0))
    downs = sum(1 for e in deps if e["state"] == "down")
    shortest = min(gaps, default=float("nan"))
    print(f"\nflapping {FLAP_SECONDS:g} s at 30 %: {len(deps)} dependency changes ({downs} down), {len(changes)} level "
          f"changes ({worse} worse), shortest improvement gap {shortest:.3f} s (recover_after {RECOVER_AFTER:g} s)")
    MATRIX.append(MatrixRow(f"30 % random LLM failures for {FLAP_SECONDS:g} s",
                            f"improves >= {RECOVER_AFTER:g} s after worsening",
                            f"min {shortest:.2f} s over {len(gaps)} improvements", None, note=f"{downs} times down",
                            ok=not too_soon))
    assert not too_soon, f"the level improved sooner than recover_after: {too_soon}"
    assert downs >= 2, "the dependency must have gone down more than once (else nothing was exercised)"
    assert worse >= 1 and gaps, "the level must have worsened and improved at least once"
