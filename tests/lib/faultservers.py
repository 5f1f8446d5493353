"""Servers that fail on purpose, for the fault matrix (tests/e2e/test_faults.py), and the matrix's report.

Each server is a real socket on 127.0.0.1 served by a thread: a TLS server with a certificate the test made
(trustme), a server that accepts and then says nothing (a TLS handshake that never ends), one that drips its body
a byte at a time, one whose body is far larger than any probe reads. ``NetworkNamespace`` builds a private
network the test owns (``ip netns``, a veth pair, a /30 of 10.x addresses that exists only there) where iptables
rules drop or reset packets for real.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from support import IN_CI

LISTING = b'{"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]}'


class ThreadedServer:
    """A TCP listener on 127.0.0.1 (a free port) whose connections ``handle`` serves, one thread each."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self._handle = handle
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True, name=f"fault-server-{self.port}")
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError, ssl.SSLError), conn:
            self._handle(conn)

    @property
    def stopping(self) -> bool:
        """True once ``close`` was called (handlers that wait use it to end)."""
        return self._stop.is_set()

    def close(self) -> None:
        """Stop accepting and close every connection."""
        self._stop.set()
        self._sock.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.close()
        self._thread.join(2)


def _read_request(conn: socket.socket) -> bytes:
    """Read one HTTP request head (the probes send no body on GET)."""
    data = b""
    conn.settimeout(10)
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def tls_server(context: ssl.SSLContext) -> ThreadedServer:
    """HTTPS on 127.0.0.1 answering 200 with a model listing (fit for ``kind: http`` and ``kind: llm``)."""

    def handle(conn: socket.socket) -> None:
        conn.settimeout(10)
        with context.wrap_socket(conn, server_side=True) as tls:
            while _read_request(tls):
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                            % (len(LISTING), LISTING))

    return ThreadedServer(handle)


def silent_server() -> ThreadedServer:
    """Accepts connections and never sends a byte: a TLS handshake (or an HTTP answer) that never comes."""
    server: ThreadedServer

    def handle(conn: socket.socket) -> None:
        conn.settimeout(0.2)
        while not server.stopping:
            with contextlib.suppress(TimeoutError):
                if not conn.recv(4096):
                    return

    server = ThreadedServer(handle)
    return server


def drip_server(every: float = 0.5, headers: bool = False) -> ThreadedServer:
    """HTTP 200 dripping one byte every ``every`` seconds: its body (headers at once), or its headers."""
    server: ThreadedServer

    def handle(conn: socket.socket) -> None:
        _read_request(conn)
        if headers:
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: ")
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
        while not server.stopping:
            conn.sendall(b"x" if headers else b" ")
            time.sleep(every)

    server = ThreadedServer(handle)
    return server


class BigBodyServer(ThreadedServer):
    """HTTP 200 with a JSON body of ``size`` bytes (far more than a probe reads); ``sent`` holds, per answer, how
    many body bytes the client let it send before hanging up."""

    def __init__(self, size: int = 64 << 20) -> None:
        self.size = size
        self.sent: list[int] = []
        super().__init__(self._answer)

    def _answer(self, conn: socket.socket) -> None:
        while _read_request(conn):
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % self.size
            conn.sendall(head)
            chunk = b'{"object": "list", "data": [' + b'{"id": "m", "object": "model"},' * 2000
            self.sent.append(0)
            while self.sent[-1] < self.size:
                part = chunk[: self.size - self.sent[-1]]
                conn.sendall(part)  # raises once the client has closed: the body was not read whole
                self.sent[-1] += len(part)


# -------------------------------------------------------------------------------------------------------
# A private network where the kernel drops or resets packets


def netns_unavailable() -> str | None:
    """Why network namespace faults cannot run here (None when they can)."""
    if os.geteuid() != 0:
        return "needs root (ip netns, iptables)"
    missing = [tool for tool in ("ip", "iptables") if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install -y iproute2 iptables)"
    return None


def _run(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()}")


def _free_subnet() -> ipaddress.IPv4Network:
    """A /30 in 10.200.0.0/13 that no interface of this machine uses (the namespace pair will be its only user)."""
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=False).stdout
    rng = random.Random()
    for _ in range(100):
        net = ipaddress.IPv4Network(f"10.{rng.randint(200, 207)}.{rng.randint(0, 255)}.{rng.randrange(0, 256, 4)}/30")
        if str(net.network_address)[:-1] not in used:
            return net
    raise RuntimeError("no free 10.200.0.0/13 subnet for the test namespace")


@dataclass
class NetworkNamespace:
    """A namespace with a veth pair to this one: ``host_ip`` here, ``ns_ip`` inside; iptables rules inside it."""

    name: str = field(default_factory=lambda: f"fsf{os.getpid() % 10000}{random.randrange(1000)}")
    host_ip: str = ""
    ns_ip: str = ""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        net = _free_subnet()
        hosts = list(net.hosts())
        self.host_ip, self.ns_ip = str(hosts[0]), str(hosts[1])
        self._veth = f"{self.name}h"[:15]
        peer = f"{self.name}n"[:15]
        _run("ip", "netns", "add", self.name)
        try:
            _run("ip", "link", "add", self._veth, "type", "veth", "peer", "name", peer)
            _run("ip", "link", "set", peer, "netns", self.name)
            _run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self._veth)
            _run("ip", "link", "set", self._veth, "up")
            self.exec("ip", "addr", "add", f"{self.ns_ip}/30", "dev", peer)
            self.exec("ip", "link", "set", peer, "up")
            self.exec("ip", "link", "set", "lo", "up")
        except Exception:
            self.close()
            raise

    def exec(self, *argv: str) -> None:
        """Run a command inside the namespace (it must succeed)."""
        _run("ip", "netns", "exec", self.name, *argv)

    def spawn(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        """Start a long-running process inside the namespace (stopped by ``close``)."""
        with log.open("ab") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", self.name, *argv], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def drop(self, port: int) -> None:
        """Blackhole: every packet to ``port`` inside the namespace is silently dropped."""
        self.exec("iptables", "-I", "INPUT", "-p", "tcp", "--dport", str(port), "-j", "DROP")

    def reset(self, port: int) -> None:
        """Every packet to ``port`` inside the namespace is answered with a TCP reset."""
        self.exec("iptables", "-I", "INPUT", "-p", "tcp", "--dport", str(port), "-j", "REJECT",
                  "--reject-with", "tcp-reset")

    def heal(self) -> None:
        """Remove every rule."""
        self.exec("iptables", "-F", "INPUT")

    def close(self) -> None:
        """Stop the processes, delete the veth pair and the namespace."""
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        subprocess.run(["ip", "link", "del", self._veth], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)


def require_netns() -> None:
    """Skip (with the reason) where namespaces cannot be made; in CI fail instead: those rows must run there."""
    import pytest

    why = netns_unavailable()
    if why is None:
        return
    if IN_CI:
        pytest.fail(f"the kernel fault rows must run in CI: {why}")
    pytest.skip(f"kernel fault rows skipped: {why}")


# -------------------------------------------------------------------------------------------------------
# The matrix report


@dataclass(frozen=True)
class MatrixRow:
    """One fault and what the daemon did about it."""

    fault: str
    expected: str
    seen: str
    detection: float | None  # seconds from the fault to the expected state; None when never seen or not timed
    note: str = ""
    ok: bool = True  # False: the daemon did not do what the row expects


MATRIX: list[MatrixRow] = []


def matrix_lines() -> list[str]:
    """The matrix as a text table (fault, expected, seen, detection time), in the order the rows ran."""
    if not MATRIX:
        return []
    header = ("fault", "expected", "seen", "detection")
    rows = [(r.fault, r.expected, r.seen + ("" if r.ok else "  <-- differs"),
             ("-" if r.detection is None else f"{r.detection * 1000:.0f} ms") + (f" ({r.note})" if r.note else ""))
            for r in MATRIX]
    widths = [max(len(str(x[i])) for x in [header, *rows]) for i in range(4)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)]
