"""Fixtures: real PostgreSQL and Redis, the daemon as a process, and the session-wide secret check."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from faultservers import matrix_lines
from support import LOG_DIR, SECRETS, DaemonProcess, make_server


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """A PostgreSQL server shared by the session. Do not crash it: use ``own_postgres`` for faults."""
    server = make_server("postgres")
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Any]:
    """A Redis server shared by the session. Do not crash it: use ``own_redis`` for faults."""
    server = make_server("redis")
    yield server
    server.close()


@pytest.fixture
def own_postgres() -> Iterator[Any]:
    """A PostgreSQL server for this test alone, free to kill, pause and restart."""
    server = make_server("postgres")
    yield server
    server.close()


@pytest.fixture
def own_redis() -> Iterator[Any]:
    """A Redis server for this test alone, free to kill, pause and restart."""
    server = make_server("redis")
    yield server
    server.close()


@pytest.fixture
def run_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Start ``failsoft run`` with a config text; every daemon started is stopped after the test."""
    started: list[DaemonProcess] = []

    def start(config_text: str, env: dict[str, str] | None = None, wait_ready: bool = True) -> DaemonProcess:
        d = DaemonProcess(config_text, tmp_path, env)
        started.append(d)
        return d.start(wait_ready=wait_ready)

    yield start
    for d in started:
        d.stop()


def _secret_leaks() -> list[str]:
    """Every (log file, secret number) where a secret handed to a daemon shows up in what it printed."""
    logs = sorted(LOG_DIR.glob("*.log"))
    if logs and not SECRETS:
        return ["daemon logs exist but no secret was registered: the check would prove nothing"]
    ordered = sorted(SECRETS)
    return [f"{log}: secret #{ordered.index(s)} appears in the output"
            for log in logs for s in ordered if s in log.read_text(errors="replace")]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No secret handed to a daemon may appear in anything a daemon printed, in the whole session."""
    leaks = _secret_leaks()
    if leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        session.config.stash[_LEAKS] = leaks


_LEAKS = pytest.StashKey[list[str]]()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    """Report secret leaks next to the results (the run already failed in pytest_sessionfinish)."""
    leaks = config.stash.get(_LEAKS, [])
    if leaks:
        terminalreporter.section("SECRET LEAK in daemon output", red=True)
        for line in leaks:
            terminalreporter.line(line, red=True)
    else:
        count = len(list(LOG_DIR.glob("*.log")))
        terminalreporter.line(f"secret check: {len(SECRETS)} secrets, none in {count} daemon logs")
    matrix = matrix_lines()
    if matrix:
        terminalreporter.section("fault matrix (detection times are printed, never asserted)")
        for line in matrix:
            terminalreporter.line(line)
