"""Throw-away PostgreSQL and Redis servers from the local binaries, for ``failsoft demo`` and the tests.

Each server lives in its own temporary directory on a free loopback port, in its own process group so that
a crash can be simulated for real (SIGKILL to every process) and a hang too (SIGSTOP). PostgreSQL refuses to
run as root, so as root it runs as the ``postgres`` user (or ``nobody``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class ServerError(RuntimeError):
    """A server binary is missing or the server did not start; the message says what to install or check."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_redis() -> str | None:
    """Path of ``redis-server``, or None."""
    return os.environ.get("FAILSOFT_REDIS_SERVER") or shutil.which("redis-server")


def find_postgres_bindir() -> str | None:
    """A directory holding ``initdb`` and ``postgres`` (newest version first), or None."""
    candidates = [os.environ.get("FAILSOFT_PG_BIN", "")]
    versions = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()]
    candidates += [str(p) for p in sorted(versions, key=lambda p: int(p.parent.name), reverse=True)]
    if which := shutil.which("initdb"):
        candidates.append(str(Path(which).parent))
    for d in candidates:
        if d and Path(d, "initdb").exists() and Path(d, "postgres").exists():
            return d
    return None


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"{what} exited with code {proc.returncode} at start; see {log}:\n{_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise ServerError(f"{what} did not listen on port {port} within {timeout:g}s; see {log}:\n{_tail(log)}")


def _tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


class _Server:
    """What both servers share: a process group to start, kill, pause and resume."""

    name = "server"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"failsoft-{self.name}-"))
        self.log = self.dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, argv: list[str], user: str | None = None) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - fixed argv built from found binaries
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, user=user, cwd=self.dir,
            )

    @property
    def pid(self) -> int | None:
        """The server's main process id while it runs."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def _signal(self, sig: signal.Signals) -> None:
        """Signal the server and every process it started.

        PostgreSQL backends call setsid(), so the postmaster's process group holds only the postmaster:
        a hang or crash of the server must reach the whole process tree, as a frozen machine would.
        """
        if self.proc is None:
            return
        for pid in _process_tree(self.proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def kill(self) -> None:
        """Crash it: SIGKILL to every process of the server, as a machine failure would."""
        self._signal(signal.SIGSTOP)  # freeze the tree first so that no process forks a new one meanwhile
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)

    def pause(self) -> None:
        """Hang it: SIGSTOP; connections stay open and nothing answers."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Undo ``pause``."""
        self._signal(signal.SIGCONT)

    def start(self) -> None:  # pragma: no cover - each server defines it
        """Start (or restart after ``kill``) on the same port and data."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop for good and delete the temporary directory."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> _Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisServer(_Server):
    """``redis-server`` without persistence, with a password so that redaction is exercised."""

    name = "redis"

    def __init__(self, port: int | None = None, password: str | None = None) -> None:
        super().__init__(port)
        self.binary = find_redis()
        if self.binary is None:
            raise ServerError("redis-server is not installed: apt-get install -y redis-server")
        self.password = password or "rd-" + secrets.token_hex(8)

    @property
    def url(self) -> str:
        """``redis://:password@127.0.0.1:port/0``."""
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start on ``port`` in the temporary directory."""
        assert self.binary is not None
        self._spawn([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", str(self.dir), "--requirepass", self.password,
                     "--daemonize", "no", "--loglevel", "warning"])
        assert self.proc is not None
        _wait_port(self.port, self.proc, 10, "redis-server", self.log)


class PostgresServer(_Server):
    """A fresh cluster (initdb) with password authentication for the user ``failsoft``."""

    name = "postgres"

    def __init__(self, port: int | None = None, password: str | None = None) -> None:
        super().__init__(port)
        bindir = find_postgres_bindir()
        if bindir is None:
            raise ServerError("PostgreSQL server binaries (initdb, postgres) are not installed: "
                              "apt-get install -y postgresql, or set FAILSOFT_PG_BIN to their directory")
        self.bindir = Path(bindir)
        self.password = password or "pg-" + secrets.token_hex(8)
        self.user = _unprivileged_user() if os.geteuid() == 0 else None
        self.data = self.dir / "data"
        self._initialised = False

    @property
    def dsn(self) -> str:
        """``postgresql://failsoft:password@127.0.0.1:port/postgres``."""
        return f"postgresql://failsoft:{self.password}@127.0.0.1:{self.port}/postgres"

    def _init(self) -> None:
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for path in (self.dir, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        result = subprocess.run(  # noqa: S603 - fixed argv
            [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "failsoft", "--pwfile", str(pwfile),
             "--auth=scram-sha-256", "--no-sync", "-E", "UTF8", "--locale=C"],
            capture_output=True, user=self.user, cwd=self.dir, check=False,
        )
        pwfile.unlink()
        if result.returncode != 0:
            raise ServerError(f"initdb failed: {result.stderr.decode(errors='replace')[-2000:]}")
        self._initialised = True

    def start(self) -> None:
        """Start the cluster (creating it the first time) on ``port``."""
        if not self._initialised:
            self._init()
        self._spawn([str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                     "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}",
                     "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off",
                     "-c", "max_connections=50", "-c", "shared_buffers=16MB"], user=self.user)
        assert self.proc is not None
        _wait_port(self.port, self.proc, 30, "postgres", self.log)
        self._wait_accepting()

    def _wait_accepting(self, timeout: float = 30) -> None:
        """The port opens before the server accepts logins (``the database system is starting up``)."""
        deadline = time.monotonic() + timeout
        isready = self.bindir / "pg_isready"
        while time.monotonic() < deadline:
            if not isready.exists():
                return
            result = subprocess.run(  # noqa: S603 - fixed argv
                [str(isready), "-h", "127.0.0.1", "-p", str(self.port), "-q"], check=False, capture_output=True)
            if result.returncode == 0:
                return
            time.sleep(0.05)
        raise ServerError(f"postgres on port {self.port} did not accept connections; see {self.log}")


def _process_tree(root: int) -> list[int]:
    """``root`` and all its descendants, parents first, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid ...
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _unprivileged_user() -> str:
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise ServerError("running as root and there is no 'postgres' user to run PostgreSQL as: "
                      "apt-get install -y postgresql creates one")
