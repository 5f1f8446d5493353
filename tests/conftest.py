"""Fixtures: real PostgreSQL and Redis, the daemon as a process, and the session-wide secret check."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No secret handed to a daemon may appear in anything a daemon printed, in the whole session."""
    leaks = []
    for log in LOG_DIR.glob("*.log"):
        text = log.read_text(errors="replace")
        leaks += [f"{log.name}: contains secret {s[:3]}***" for s in SECRETS if s and s in text]
    if leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print("\nSECRET LEAK in daemon output:\n  " + "\n  ".join(leaks))
