"""OFREP against the real daemon process, read by the official OpenFeature SDKs with their stock OFREP providers:
Python (``openfeature-sdk`` + ``openfeature-provider-ofrep`` from PyPI) and JavaScript (``@openfeature/server-sdk``
+ ``@openfeature/ofrep-provider`` from npm, run with Node), while the level changes through an override."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openfeature import api as openfeature
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from support import IN_CI, SECRETS, request, wait_for

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "ofrep-e2e-admin-token-7f3a"
SECRETS.add(ADMIN_TOKEN)
JS_DIR = Path(__file__).parent / "ofrep_js"

CAPABILITIES = """
policy:
  rules:
    - {level: cache_only, when: {any_down: [cache]}}
  capabilities:
    full: [chat, search, write]
    degraded: [chat, search, write]
    limited: [search, write]
    cache_only: [search]
"""


def config(redis_url: str) -> str:
    """One real Redis dependency, an admin token for overrides, capabilities per level."""
    return f"""
http: {{listen: "127.0.0.1:0", admin_token: "${{ADMIN}}"}}
dependencies:
  cache: {{kind: redis, url: "{redis_url}"}}
{CAPABILITIES}
"""


def override(url: str, level: str | None) -> None:
    """Force ``level`` (or clear the override with None) through the admin API."""
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    if level is None:
        status, body, _ = request(url + "/override", "DELETE", headers=auth)
    else:
        payload = json.dumps({"level": level, "ttl": "5m", "reason": "ofrep e2e"}).encode()
        status, body, _ = request(url + "/override", "POST", payload, headers=auth)
    assert status == 200, body


@pytest.fixture
def daemon(run_daemon: Any, redis_server: Any) -> Any:
    """The daemon with one healthy Redis, at level full."""
    d = run_daemon(config(redis_server.url), env={"ADMIN": ADMIN_TOKEN})
    d.wait_state(lambda s: s["level"] == "full", what="level full")
    return d


def test_python_sdk_reads_the_flags_while_the_level_changes(daemon: Any) -> None:
    """The Python SDK resolves service-level, capability.chat, active-llm and dependency.cache with TARGETING_MATCH
    and metadata {seq, boot}; after an override to cache_only it reads cache_only, chat off and reason STATIC; an
    unknown flag gives the code default with FLAG_NOT_FOUND; the override cleared, full again."""
    domain = "failsoft-e2e"
    openfeature.set_provider(OFREPProvider(daemon.url, timeout=5), domain=domain)
    client = openfeature.get_client(domain)
    try:
        state = daemon.state()
        level = client.get_string_details("service-level", "fallback")
        assert (level.value, level.variant, level.reason) == ("full", "full", Reason.TARGETING_MATCH)
        assert level.flag_metadata["boot"] == state["boot"]
        assert level.flag_metadata["seq"] >= state["seq"]
        assert client.get_boolean_value("capability.chat", False) is True
        assert client.get_string_value("active-llm", "fallback") == ""
        assert client.get_string_value("dependency.cache", "fallback") == "healthy"

        missing = client.get_string_details("no-such-flag", "fallback")
        assert (missing.value, missing.error_code) == ("fallback", ErrorCode.FLAG_NOT_FOUND)
        teleport = client.get_boolean_details("capability.teleport", True)
        assert (teleport.value, teleport.error_code) == (True, ErrorCode.FLAG_NOT_FOUND)

        override(daemon.url, "cache_only")
        wait_for(lambda: client.get_string_value("service-level", "fallback") == "cache_only", 10,
                 what="the SDK to read cache_only")
        forced = client.get_string_details("service-level", "fallback")
        assert forced.reason == Reason.STATIC
        assert forced.flag_metadata["seq"] > level.flag_metadata["seq"]
        assert client.get_boolean_value("capability.chat", True) is False
        assert client.get_boolean_value("capability.search", False) is True

        override(daemon.url, None)
        wait_for(lambda: client.get_string_value("service-level", "fallback") == "full", 10,
                 what="the SDK to read full again")
    finally:
        openfeature.clear_providers()


def test_bulk_polling_is_cheap_with_the_etag(daemon: Any) -> None:
    """A bulk poll with the last ETag is 304 with no body while nothing changed, and 200 with a new ETag and the
    new values once the level changed (the cheap polling the client-side providers do)."""
    url = daemon.url + "/ofrep/v1/evaluate/flags"
    headers = {"Content-Type": "application/json; charset=utf-8"}
    status, body, hdrs = request(url, "POST", b'{"context": {"targetingKey": "u1"}}', headers)
    assert status == 200
    tag = hdrs["ETag"]
    assert tag.startswith('W/"')
    assert {f["key"] for f in body["flags"]} >= {"service-level", "capability.chat", "active-llm", "dependency.cache"}
    status, body, hdrs = request(url, "POST", b"{}", {**headers, "If-None-Match": tag})
    assert (status, body, hdrs["ETag"]) == (304, None, tag)
    override(daemon.url, "limited")
    status, body, hdrs = wait_for(
        lambda: (r := request(url, "POST", b"{}", {**headers, "If-None-Match": tag}))[0] == 200 and r, 10,
        what="a 200 after the override")
    assert hdrs["ETag"] != tag
    flags = {f["key"]: f["value"] for f in body["flags"]}
    assert (flags["service-level"], flags["capability.chat"], flags["capability.search"]) == ("limited", False, True)


@pytest.fixture(scope="module")
def js_check(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The committed tests/e2e/ofrep_js package, installed with ``npm ci`` into a temporary directory."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        message = "node and npm are needed for the JavaScript OFREP check (.ci/test-tools.txt installs them)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    where = tmp_path_factory.mktemp("ofrep-js")
    for name in ("package.json", "package-lock.json", "check.mjs"):
        shutil.copy(JS_DIR / name, where / name)
    done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=where, capture_output=True,
                          text=True, timeout=300, check=False, env={**os.environ, "NO_UPDATE_NOTIFIER": "1"})
    if done.returncode != 0:
        pytest.fail("npm could not install @openfeature/server-sdk and @openfeature/ofrep-provider from "
                    f"tests/e2e/ofrep_js/package-lock.json (is the npm registry reachable?):\n{done.stderr[-2000:]}")
    yield where


def run_js(where: Path, url: str) -> dict[str, Any]:
    """Run check.mjs: what the JavaScript SDK resolved for each flag."""
    done = subprocess.run(["node", "check.mjs", url, "cache"], cwd=where, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_javascript_sdk_reads_the_flags_while_the_level_changes(js_check: Path, daemon: Any) -> None:
    """The JavaScript server SDK with @openfeature/ofrep-provider reads full, chat on, active-llm "" and cache
    healthy with TARGETING_MATCH and metadata {seq, boot}, FLAG_NOT_FOUND for an unknown flag; after an override it
    reads cache_only and chat off."""
    state = daemon.state()
    seen = run_js(js_check, daemon.url)
    level = seen["service-level"]
    assert (level["value"], level["variant"], level["reason"], level["errorCode"]) == (
        "full", "full", "TARGETING_MATCH", None)
    assert level["metadata"]["boot"] == state["boot"]
    assert isinstance(level["metadata"]["seq"], int)
    assert seen["capability.chat"]["value"] is True
    assert seen["active-llm"]["value"] == ""
    assert seen["dependency.cache"]["value"] == "healthy"
    assert (seen["no-such-flag"]["value"], seen["no-such-flag"]["errorCode"]) == ("fallback", "FLAG_NOT_FOUND")

    override(daemon.url, "cache_only")
    daemon.wait_state(lambda s: s["level"] == "cache_only", what="the override")
    seen = run_js(js_check, daemon.url)
    assert (seen["service-level"]["value"], seen["service-level"]["reason"]) == ("cache_only", "STATIC")
    assert seen["capability.chat"]["value"] is False
