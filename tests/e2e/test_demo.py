"""``failsoft demo`` as a process, with a standard input that is not a terminal (a CI job, ``< /dev/null``)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from support import LOG_DIR, request, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def no_input_file(tmp_path: Path) -> Iterator[Callable[[str], Any]]:
    """Standard inputs the event loop cannot watch, or one that ends at once: /dev/null, an empty regular file,
    a pipe whose writer has gone."""
    opened: list[Any] = []

    def make(kind: str) -> Any:
        if kind == "devnull":
            f: Any = Path(os.devnull).open("rb")  # noqa: SIM115 - closed by the fixture
        elif kind == "regular-file":
            (tmp_path / "empty").write_bytes(b"")
            f = (tmp_path / "empty").open("rb")
        else:
            read_end, write_end = os.pipe()
            os.close(write_end)
            f = os.fdopen(read_end, "rb")
        opened.append(f)
        return f

    yield make
    for f in opened:
        f.close()


def start_demo(stdin: IO[bytes], log: Path) -> subprocess.Popen[bytes]:
    """``failsoft demo --port 0`` with this stdin, everything it prints into ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "failsoft", "demo", "--port", "0"], stdin=stdin,
                                stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.parametrize("stdin_kind", ["devnull", "regular-file", "closed-pipe"])
def test_demo_without_a_terminal_runs_until_sigterm_without_a_traceback(
    no_input_file: Callable[[str], Any], stdin_kind: str,
) -> None:
    """With a standard input that is not a terminal the demo starts, publishes a level, keeps running, and on
    SIGTERM stops cleanly with exit status 0; nothing it prints is a traceback."""
    log = LOG_DIR / f"demo-{stdin_kind}-{os.getpid()}.out"
    proc = start_demo(no_input_file(stdin_kind), log)
    try:
        def port() -> int | None:
            assert proc.poll() is None, f"the demo exited with {proc.returncode}:\n{log.read_text()}"
            match = re.search(r"listening .* port=(\d+)", log.read_text(errors="replace"))
            return int(match[1]) if match else None

        url = f"http://127.0.0.1:{wait_for(port, 60, what='the demo to listen')}"
        state = wait_for(lambda: (s := request(url + "/service-level")[1]) and s.get("level") not in (None, "unknown")
                         and s, 30, what="the demo's level")
        assert state["service"] == "demo"
        # Still serving after stdin ended (it was at EOF from the start).
        assert proc.poll() is None
        assert request(url + "/healthz")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    output = log.read_text(errors="replace")
    assert "Traceback" not in output, output
    assert "Exception in callback" not in output, output
    assert "demo stopped; servers removed" in output
