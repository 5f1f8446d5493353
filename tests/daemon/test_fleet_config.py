"""The ``pod`` and ``fleet`` config keys: defaults and what they are derived from (the invalid cases are
testdata files in testdata/invalid/fleet_*.yaml and pod_*.yaml, checked by test_config.py)."""

from __future__ import annotations

import socket

import pytest

from failsoft.daemon.config import ConfigError, parse_config, summary
from failsoft.daemon.fleetconfig import redis_identity

DEPS = """
dependencies:
  cache: {kind: redis, url: "redis://:pw-fleet-cfg@10.0.0.5:6380/2"}
  db: {kind: tcp, address: "127.0.0.1:5432"}
  openai: {kind: llm, provider: openai, api_key: sk-fleet-config-0000}
"""


def test_without_fleet_nothing_changes() -> None:
    """No fleet section: no fleet settings, the publisher stays a plain one."""
    c = parse_config(DEPS + 'publish: {redis: cache}\n', {})
    assert c.fleet is None and c.publish is not None and not c.publish.cluster


def test_pod_comes_from_failsoft_pod_else_the_file_else_the_host_name() -> None:
    """$FAILSOFT_POD wins over the file (a deploy-time setting, as the contract says); then the file; then the
    host name. A value that cannot be a pod id is refused with the pod's rule."""
    assert parse_config("pod: web-1\n", {"FAILSOFT_POD": "env-pod"}).pod == "env-pod"
    assert parse_config("pod: web-1\n", {}).pod == "web-1"
    assert parse_config("service: s\n", {"FAILSOFT_POD": "env-pod"}).pod == "env-pod"
    with pytest.raises(ConfigError, match="pod: expected letters"):
        parse_config("service: s\n", {"FAILSOFT_POD": "web/1"})
    assert parse_config("service: s\n", {}).pod == socket.gethostname()


def test_fleet_defaults_share_everything_but_its_own_redis_and_take_the_publish_prefix() -> None:
    """shared defaults to every dependency but the fleet's Redis; prefix to publish.prefix; lease 3s; K 1."""
    c = parse_config(DEPS + "publish: {redis: cache, prefix: pub}\nfleet: {redis: cache}\n", {})
    assert c.fleet is not None
    assert c.fleet.shared == ("db", "openai")
    assert (c.fleet.prefix, c.fleet.lease, c.fleet.confirm_down, c.fleet.cluster) == ("pub", 3.0, 1, False)
    assert c.fleet.redis_url == "redis://:pw-fleet-cfg@10.0.0.5:6380/2" and c.fleet.redis_dependency == "cache"


def test_cluster_applies_to_publish_too_and_the_summary_says_fleet_mode_without_secrets() -> None:
    """cluster: true makes the publisher hash-tag its keys as well; check-config's summary names the mode."""
    c = parse_config(DEPS + "pod: p1\npublish: {redis: cache}\nfleet: {redis: cache, cluster: true, shared: [db]}\n",
                     {})
    assert c.publish is not None and c.publish.cluster
    text = "\n".join(summary(c))
    assert "fleet mode as pod p1: sharing db, lease 3s, Redis Cluster" in text
    assert "pw-fleet-cfg" not in text


def test_a_url_with_another_password_or_spelling_still_names_the_same_redis() -> None:
    """Same host, port and database: the same Redis, whatever the credentials or the default port spelling."""
    c = parse_config(DEPS + 'publish: {redis: "redis://other:pw2@10.0.0.5:6380/2"}\nfleet: {redis: cache}\n', {})
    assert c.fleet is not None
    assert redis_identity("redis://h") == redis_identity("redis://:x@H:6379/0")
    assert redis_identity("redis://h/1") != redis_identity("redis://h/0")
