"""A real Redis Cluster on loopback for the tests: three masters (``redis-server --cluster-enabled yes``) joined
with ``redis-cli --cluster create``, with a password, in a temporary directory, on free ports.

Each node runs in its own process group; ``kill``/``start`` crash and restart all of them (the cluster re-forms
from its nodes.conf files).
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from failsoft.devtools.localservers import ServerError, find_redis, free_port


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with contextlib.suppress(OSError), socket.socket() as s:
            s.bind(("127.0.0.1", port + 10000))
            return port
    raise ServerError("no free pair of ports for a Redis Cluster node")


class RedisClusterServer:
    """Three masters, no replicas, slots spread by ``redis-cli --cluster create``."""

    def __init__(self, masters: int = 3) -> None:
        server = find_redis()
        cli = shutil.which("redis-cli")
        if server is None or cli is None:
            raise ServerError("redis-server and redis-cli are needed: apt-get install -y redis-server")
        self.server, self.cli = server, cli
        self.ports = [_cluster_port() for _ in range(masters)]
        self.password = "rc-" + secrets.token_hex(8)
        self.dir = Path(tempfile.mkdtemp(prefix="failsoft-rediscluster-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self._created = False

    @property
    def port(self) -> int:
        """The first node's port (any node works as the entry point)."""
        return self.ports[0]

    @property
    def url(self) -> str:
        """``redis://:password@127.0.0.1:port/0`` of the first node."""
        return f"redis://:{self.password}@127.0.0.1:{self.ports[0]}/0"

    def start(self) -> None:
        """Start every node; create the cluster the first time; wait until it says ``cluster_state:ok``."""
        self.procs = []
        for port in self.ports:
            with (self.dir / f"node-{port}.log").open("ab") as out:
                self.procs.append(subprocess.Popen(
                    [self.server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                     "--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", "2000",
                     "--save", "", "--appendonly", "no", "--requirepass", self.password,
                     "--masterauth", self.password, "--dir", str(self.dir), "--daemonize", "no",
                     "--loglevel", "warning"],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                    cwd=self.dir))
        for port in self.ports:
            self._wait_port(port)
        if not self._created:
            done = subprocess.run(
                [self.cli, "-a", self.password, "--no-auth-warning", "--cluster", "create",
                 *(f"127.0.0.1:{p}" for p in self.ports), "--cluster-yes"],
                capture_output=True, text=True, timeout=60, check=False)
            if done.returncode != 0:
                raise ServerError(f"redis-cli --cluster create failed: {done.stdout[-1500:]}{done.stderr[-1500:]}")
            self._created = True
        self._wait_ok()

    def _wait_port(self, port: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
            time.sleep(0.02)
        raise ServerError(f"redis cluster node on port {port} did not listen; see {self.dir}")

    def _wait_ok(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [self.command(p, "CLUSTER", "INFO") for p in self.ports]
            if all("cluster_state:ok" in s for s in states):
                return
            time.sleep(0.1)
        raise ServerError(f"the Redis Cluster did not reach cluster_state:ok within {timeout:g}s")

    def command(self, port: int, *args: str) -> str:
        """Run one command on one node with redis-cli; its output."""
        done = subprocess.run(
            [self.cli, "-p", str(port), "-a", self.password, "--no-auth-warning", *args],
            capture_output=True, text=True, timeout=10, check=False)
        return done.stdout

    def kill(self) -> None:
        """Crash every node (SIGKILL)."""
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)

    def close(self) -> None:
        """Stop for good and delete the directory."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
