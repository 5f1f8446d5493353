"""The OpenAPI description (``GET /openapi.json``, ``docs/openapi.json``) and schemathesis against the live daemon.

schemathesis runs as its own command against the daemon process, with every check it has (status codes,
content types, headers, response schemas, no 5xx, positive and negative data, unsupported methods, ignored auth);
its settings are in ``schemathesis.toml`` beside this file (a fixed seed and deterministic generation, so CI is
reproducible) and its hooks in ``schemathesis_hooks.py`` (blocking queries and the event stream bounded). The
event stream's resume paths are checked here with deadlines.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree

import jsonschema
import pytest
from openapi_spec_validator import validate
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from support import SECRETS, request

from failsoft.daemon import openapi
from failsoft.devtools.localservers import free_port

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DOCS_SPEC = ROOT / "docs" / "openapi.json"
ST_CONFIG = HERE / "schemathesis.toml"
HTTP_METHODS = frozenset({"get", "head", "post", "put", "delete", "patch", "options", "trace"})
ADMIN_TOKEN = "st-admin-" + os.urandom(6).hex()
SECRETS.add(ADMIN_TOKEN)


def daemon_config(cache_url: str, admin: bool = True) -> str:
    """A small daemon: a real Redis (up) and a TCP port nothing listens on (down), so the State has both; in fleet
    mode through that Redis (a prefix of its own), so that ``GET /fleet`` has a fleet to describe."""
    token = f', admin_token: "{ADMIN_TOKEN}"' if admin else ""
    return f"""
http: {{listen: "127.0.0.1:0"{token}}}
dependencies:
  cache: {{kind: redis, url: "{cache_url}"}}
  gone: {{kind: tcp, address: "127.0.0.1:{free_port()}"}}
fleet: {{redis: cache, lease: 2s, prefix: "st-{os.urandom(4).hex()}"}}
"""


def schemathesis(tmp: Path, location: str, *args: str, settings: str = "",
                 timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run ``schemathesis run LOCATION`` with this suite's settings (plus ``settings``, TOML) and hooks."""
    config = tmp / "schemathesis.toml"
    config.write_text(ST_CONFIG.read_text() + "\n" + settings)
    exe = Path(sys.executable).with_name("schemathesis")
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "schemathesis.cli"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]), "NO_COLOR": "1"}
    report = ["--report", "junit", "--report-junit-path", str(tmp / "junit.xml")]
    return subprocess.run([*argv, "--config-file", str(config), "run", location, *report, *args], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


# -- the document ------------------------------------------------------------------------------------------


def test_the_merged_description_is_valid_openapi_3_1() -> None:
    """Every fragment merged: a valid OpenAPI 3.1 document (openapi-spec-validator), with the core endpoints."""
    doc = openapi.document()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    for path in ("/service-level", "/service-level/events", "/history", "/healthz", "/readyz", "/metrics",
                 "/override", "/openapi.json"):
        assert path in doc["paths"], path


def test_docs_openapi_json_is_what_the_daemon_serves(run_daemon, redis_server) -> None:
    """``GET /openapi.json`` serves exactly ``docs/openapi.json`` (regenerate it with ``make openapi``); HEAD
    answers the same status and type without a body. (The file is rendered for the built-in policy and the
    dependencies ``db`` and ``cache``, so this daemon has those.)"""
    d = run_daemon(f"""
http: {{listen: "127.0.0.1:0"}}
dependencies:
  db: {{kind: tcp, address: "127.0.0.1:{free_port()}"}}
  cache: {{kind: redis, url: "{redis_server.url}"}}
""")
    conn = http.client.HTTPConnection(*urlsplit(d.url).netloc.split(":"), timeout=5)
    conn.request("GET", "/openapi.json")
    resp = conn.getresponse()
    served = resp.read()
    assert resp.status == 200
    assert resp.getheader("Content-Type", "").startswith("application/json")
    assert served == DOCS_SPEC.read_bytes(), "docs/openapi.json is stale: run make openapi"
    conn.request("HEAD", "/openapi.json")
    head = conn.getresponse()
    assert (head.status, head.read()) == (200, b"")
    assert head.getheader("Content-Type", "").startswith("application/json")
    conn.close()


def test_config_dependent_values_are_the_daemons_own(run_daemon, redis_server) -> None:
    """A policy with its own levels: the served description's override ``level`` lists those levels, and the
    report's ``dependency`` the configured dependencies (``x-failsoft-enum``)."""
    policy = """
policy:
  levels: [all_good, reduced]
  rules: [{level: reduced, when: {any_down: [gone]}}]
"""
    d = run_daemon(daemon_config(redis_server.url) + policy)
    status, spec, _ = d.get("/openapi.json")
    assert status == 200
    schemas = spec["components"]["schemas"]
    assert schemas["OverrideRequest"]["properties"]["level"]["enum"] == ["all_good", "reduced"]
    if "Report" in schemas:  # the /report fragment
        assert schemas["Report"]["properties"]["dependency"]["enum"] == ["cache", "gone"]


# -- schemathesis ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["admin", "anonymous", "admin_disabled"])
def test_schemathesis_finds_no_answer_outside_the_description(run_daemon, redis_server, tmp_path: Path,
                                                              who: str) -> None:
    """schemathesis with all its checks against the live daemon finds nothing: as the admin (token sent), as
    anyone (no token: 401 on the admin endpoints) and with the admin endpoints disabled (403)."""
    d = run_daemon(daemon_config(redis_server.url, admin=who != "admin_disabled"))
    args: list[str] = []
    # The admin token goes to the admin endpoints only (POST /report refuses any token but its own).
    settings = (f'[[operations]]\ninclude-path = "/override"\nheaders = {{Authorization = "Bearer {ADMIN_TOKEN}"}}\n'
                if who == "admin" else "")
    if who == "admin_disabled":
        # With no admin token configured, no credential can help: 403 for every request, also one without an
        # Authorization header (RFC 9110: 401 asks for credentials that would work). schemathesis expects 401
        # for a missing header; the daemon's choice is the contract's ("empty = those endpoints answer 403").
        args = ["--exclude-checks", "missing_required_header"]
    started = time.monotonic()
    result = schemathesis(tmp_path, f"{d.url}/openapi.json", *args, settings=settings)
    took = time.monotonic() - started
    summary = [line for line in result.stdout.splitlines() if "generated" in line or "passed" in line]
    print(f"\nschemathesis ({who}): exit {result.returncode} in {took:.1f} s; {' / '.join(summary[-2:])}")
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    out = result.stdout
    assert "Failures:" not in out, out[-4000:]
    # Every operation of the served description was exercised, a new fragment's endpoints included (schemathesis
    # leaves out GET of the description it was loaded from; test_docs_openapi_json_is_what_the_daemon_serves).
    _, spec, _ = d.get("/openapi.json")
    operations = {f"{method.upper()} {path}" for path, item in spec["paths"].items() for method in item
                  if method in HTTP_METHODS}
    tested = {case.get("name") for case in ElementTree.parse(tmp_path / "junit.xml").iter("testcase")}
    assert operations - {"GET /openapi.json"} <= tested, sorted(operations - tested)
    if who == "admin":
        assert "No issues found" in out, out[-4000:]
    else:
        # Without a usable token every admin call is refused, and only those: schemathesis says so.
        assert "Authentication failed: 2 operations returned only 401/403" in out, out[-4000:]
        assert "- DELETE /override" in out
        assert "- POST /override" in out
    assert ADMIN_TOKEN not in d.output()


def test_schemathesis_reports_a_response_that_breaks_the_description(run_daemon, redis_server,
                                                                      tmp_path: Path) -> None:
    """The harness is not vacuous: against a description that says /healthz answers ``{"status": "fine"}``
    and the State has a field it lacks, schemathesis fails naming the schema violations."""
    d = run_daemon(daemon_config(redis_server.url))
    wrong = openapi.document()
    wrong["paths"]["/healthz"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["properties"][
        "status"] = {"const": "fine"}
    wrong["components"]["schemas"]["State"]["required"].append("no_such_field")
    path = tmp_path / "wrong.json"
    path.write_text(json.dumps(wrong))
    result = schemathesis(tmp_path, str(path), "--url", d.url, "--include-operation-id", "getHealthz",
                          "--include-operation-id", "getServiceLevel", "--phases", "examples,coverage")
    assert result.returncode != 0, result.stdout[-4000:]
    assert "Response violates schema: 2" in result.stdout
    assert '"fine" was expected' in result.stdout
    assert '"no_such_field" is a required property' in result.stdout


# -- the event stream, with deadlines ----------------------------------------------------------------------


def _validator(schema_name: str) -> Any:
    """A validator of ``components.schemas.<schema_name>`` of the served description (its $refs resolved)."""
    uri = "urn:failsoft:openapi"
    registry: Registry[Any] = Registry().with_resource(uri, DRAFT202012.create_resource(openapi.document()))
    return jsonschema.Draft202012Validator({"$ref": f"{uri}#/components/schemas/{schema_name}"}, registry=registry)


class SseReader:
    """A raw event stream reader over http.client, every read under a deadline."""

    def __init__(self, url: str, last_event_id: str | None = None, timeout: float = 10) -> None:
        host, port = urlsplit(url).netloc.split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self.conn.request("GET", "/service-level/events", headers=headers)
        self.resp = self.conn.getresponse()

    def message(self) -> tuple[list[str], dict[str, str]]:
        """The next message: (comment lines before it, its fields)."""
        comments: list[str] = []
        fields: dict[str, str] = {}
        while True:
            line = self.resp.readline().decode()
            if not line:
                raise AssertionError("the stream ended")
            line = line.rstrip("\n")
            if not line:
                if fields:
                    return comments, fields
                continue
            if line.startswith(":"):
                comments.append(line)
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
            if name == "retry" and value.strip().isdigit():
                fields[name] = int(value)  # type: ignore[assignment]  # a number, as SSE parsers read it

    def close(self) -> None:
        """Hang up."""
        self.conn.close()


def test_the_event_stream_conforms_to_the_description(run_daemon, redis_server) -> None:
    """The stream's answer, its first message (a snapshot: the State) and, after resuming with the current id
    (nothing missed), the events an override makes, all conform to the description; each read has a deadline."""
    d = run_daemon(daemon_config(redis_server.url))
    message, state = _validator("StreamMessage"), _validator("State")
    event = _validator("Event")
    first = SseReader(d.url)
    try:
        assert first.resp.status == 200
        assert first.resp.getheader("Content-Type", "").startswith("text/event-stream")
        int(first.resp.getheader("X-Failsoft-Index", ""))
        _, snap = first.message()
    finally:
        first.close()
    message.validate(snap)
    assert snap["event"] == "snapshot"
    state.validate(json.loads(snap["data"]))

    resumed = SseReader(d.url, last_event_id=snap["id"])
    try:
        body = json.dumps({"level": "cache_only", "ttl": "5m", "reason": "openapi test"}).encode()
        status, _, _ = request(f"{d.url}/override", "POST", body,
                               {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"})
        assert status == 200
        seen = []
        deadline = time.monotonic() + 10
        while "override_set" not in seen and time.monotonic() < deadline:
            _, fields = resumed.message()
            message.validate(fields)
            event.validate(json.loads(fields["data"]))
            seen.append(fields["event"])
        assert "override_set" in seen, seen
        assert "snapshot" not in seen  # resumed: nothing was repeated
    finally:
        resumed.close()
        request(f"{d.url}/override", "DELETE", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
