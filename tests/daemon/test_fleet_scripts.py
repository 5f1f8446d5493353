"""failsoft.daemon.fleetkeys against a real Redis: the lease, share, pod and publish scripts do their check and
their write as one step (only the holder extends, releases, shares and publishes); the fleet seq is gapless,
never goes back (also when Redis lost it), and lands in the State and in every event.

Also the pure parts of the module: target identities (shared across services, never holding a secret), the wire
format of shared results (total on garbage) and the seq placeholder.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import redis

from failsoft.daemon.config import parse_config
from failsoft.daemon.fleetkeys import (
    ACQUIRE,
    POD,
    PUBLISH,
    RELEASE,
    RENEW,
    SHARE,
    postgres_address,
    service_keys,
    status_from_wire,
    status_to_wire,
    target_digest,
    target_identity,
    target_keys,
    with_seq_placeholder,
)
from failsoft.policies.model import BreakerState, DependencyStatus, DepState

A, B = "pod-a/aaaaaa", "pod-b/bbbbbb"


@pytest.fixture
def r(redis_server: Any) -> Iterator[redis.Redis]:
    """A client of the session's Redis."""
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def key() -> str:
    """A fresh key name."""
    return f"test:fleet:{secrets.token_hex(6)}"


def test_acquire_gives_a_free_lease_to_one_pod_and_tells_the_other_who_holds_it(r: redis.Redis) -> None:
    """The first pod gets it (with the TTL set); the second learns the holder and the time left."""
    k = key()
    assert r.eval(ACQUIRE, 1, k, A, 3000) == [1, A.encode(), 3000]
    ok, holder, pttl = r.eval(ACQUIRE, 1, k, B, 3000)
    assert (ok, holder) == (0, A.encode()) and 0 < pttl <= 3000
    assert 0 < r.pttl(k) <= 3000


def test_acquire_by_the_holder_renews_its_own_lease(r: redis.Redis) -> None:
    """A holder whose earlier reply was lost asks again and simply gets its own lease extended."""
    k = key()
    r.set(k, A, px=100)
    assert r.eval(ACQUIRE, 1, k, A, 5000)[0] == 1
    assert r.pttl(k) > 1000


@pytest.mark.parametrize("garbage", [b"garbage", b"\xff\x00", b"pod-x/123"])
def test_acquire_replaces_a_value_no_pod_wrote(r: redis.Redis, garbage: bytes) -> None:
    """A value without a slash, or any value without a TTL (written by hand), would block the lease forever: the
    acquire script replaces it."""
    k = key()
    r.set(k, garbage)
    assert r.eval(ACQUIRE, 1, k, A, 3000)[0] == 1
    assert r.get(k) == A.encode()


def test_renew_and_release_only_touch_the_holders_own_key(r: redis.Redis) -> None:
    """Another pod can neither extend nor delete the lease; the holder can do both; a renew of a gone key is 0."""
    k = key()
    r.eval(ACQUIRE, 1, k, A, 3000)
    assert r.eval(RENEW, 1, k, B, 9000) == 0 and r.pttl(k) <= 3000
    assert r.eval(RELEASE, 1, k, B) == 0 and r.get(k) == A.encode()
    assert r.eval(RENEW, 1, k, A, 9000) == 1 and r.pttl(k) > 3000
    assert r.eval(RELEASE, 1, k, A) == 1 and r.get(k) is None
    assert r.eval(RENEW, 1, k, A, 9000) == 0 and r.get(k) is None


def test_a_result_is_shared_only_by_the_lease_holder(r: redis.Redis) -> None:
    """SHARE appends to the results stream only while the token holds the lease: a prober that lost it cannot
    slip in a stale result."""
    t = target_keys("test", secrets.token_hex(4), cluster=False)
    r.eval(ACQUIRE, 1, t.lease, A, 3000)
    assert r.eval(SHARE, 2, t.lease, t.results, B, 100, b"stale", "result") == 0
    assert r.eval(SHARE, 2, t.lease, t.results, A, 100, b"fresh", "result") == 1
    assert [e[b"result"] for _, e in r.xrange(t.results)] == [b"fresh"]


def test_a_pod_id_is_claimed_by_one_process_at_a_time(r: redis.Redis) -> None:
    """POD writes the pod's State and claims its id; another token with the same id is refused and told who has
    it, and nothing of its State is written."""
    keys = service_keys("test", f"svc-{secrets.token_hex(3)}", cluster=False)
    args = [keys.claim("web"), keys.pod("web"), keys.pods, keys.seq]
    assert r.eval(POD, 4, *args, A, 1500, b'{"level":"full"}', "web") == [1, b"", b"0"]
    assert r.eval(POD, 4, *args, B, 1500, b'{"level":"down"}', "web") == [0, A.encode(), b"0"]
    assert r.get(keys.pod("web")) == b'{"level":"full"}'
    assert r.smembers(keys.pods) == {b"web"}
    assert 0 < r.pttl(keys.pod("web")) <= 1500


def publish(r: redis.Redis, keys: Any, token: str, floor: int, events: list[dict[str, Any]]) -> int:
    """Run PUBLISH with a State and ``events`` (each serialised with the seq placeholder)."""
    args: list[Any] = [token, floor, 5000, keys.events, "PUBLISH", 100,
                       with_seq_placeholder(orjson.dumps({"service": "s", "seq": -1, "level": "full"})), len(events)]
    args += [with_seq_placeholder(orjson.dumps({"type": e["type"], "seq": -1, "reason": e.get("reason"),
                                                "state": {"seq": -1}})) for e in events]
    return int(r.eval(PUBLISH, 4, keys.leader, keys.seq, keys.state, keys.stream, *args))


def test_only_the_leader_publishes_and_the_fleet_seq_is_gapless_across_leaders(r: redis.Redis) -> None:
    """PUBLISH is fenced by the leader lease; each event takes the next seq, the State carries the last one, and
    a new leader goes on from there."""
    keys = service_keys("test", f"svc-{secrets.token_hex(3)}", cluster=False)
    r.eval(ACQUIRE, 1, keys.leader, A, 3000)
    assert publish(r, keys, B, 0, [{"type": "resync"}]) == -1
    assert not r.exists(keys.state) and not r.exists(keys.stream)
    assert publish(r, keys, A, 0, [{"type": "resync"}, {"type": "level_changed"}]) == 2
    assert publish(r, keys, A, 0, []) == 2  # a heartbeat: no new seq
    r.eval(RELEASE, 1, keys.leader, A)
    r.eval(ACQUIRE, 1, keys.leader, B, 3000)
    assert publish(r, keys, B, 0, [{"type": "resync", "reason": 'quote " and "seq":-1 inside'}]) == 3
    seqs = [orjson.loads(e[b"event"])["seq"] for _, e in r.xrange(keys.stream)]
    assert seqs == [1, 2, 3]
    last = orjson.loads(r.xrange(keys.stream)[-1][1][b"event"])
    assert last["reason"] == 'quote " and "seq":-1 inside'  # the placeholder inside a string is left alone
    assert last["state"]["seq"] == 3  # an embedded State (a resync's) gets the same seq
    assert orjson.loads(r.get(keys.state) or b"")["seq"] == 3


def test_the_seq_never_goes_back_when_redis_lost_it(r: redis.Redis) -> None:
    """After Redis lost the seq key (a restart without persistence), the leader's floor, the highest seq any pod
    saw, keeps the seq from going back."""
    keys = service_keys("test", f"svc-{secrets.token_hex(3)}", cluster=False)
    r.eval(ACQUIRE, 1, keys.leader, A, 3000)
    publish(r, keys, A, 0, [{"type": "resync"}] * 5)
    r.delete(keys.seq, keys.state)
    assert publish(r, keys, A, 5, [{"type": "resync"}]) == 6


def test_cluster_keys_share_one_hash_tag_per_service_and_per_target() -> None:
    """With cluster, every key of a service (and of a target) carries the same hash tag, so a script's keys
    share a slot; without, the contract's plain names."""
    plain = service_keys("fs", "checkout", cluster=False)
    assert (plain.state, plain.events, plain.stream, plain.pod("p1")) == (
        "fs:checkout:state", "fs:checkout:events", "fs:checkout:stream", "fs:checkout:pod:p1")
    tagged = service_keys("fs", "checkout", cluster=True)
    names = [tagged.state, tagged.events, tagged.stream, tagged.seq, tagged.leader, tagged.pods, tagged.pod("p1"),
             tagged.claim("p1")]
    assert all(n.startswith("{fs:checkout}:") for n in names)
    t = target_keys("fs", "abc", cluster=True)
    assert t.lease.startswith("{fs:t:abc}:") and t.results.startswith("{fs:t:abc}:")


def deps(text: str) -> Any:
    """The dependencies of a config."""
    return parse_config(f"dependencies:\n{text}", {}).dependencies


def test_two_services_naming_one_database_differently_share_its_target() -> None:
    """The identity is the user, the endpoint and the probe options, not the name or the password."""
    d = deps("""
  db: {kind: postgres, dsn: "postgresql://app:pw1@db.internal:5432/shop"}
  main: {kind: postgres, dsn: "postgresql://app:pw2@db.internal:5432/shop?sslmode=prefer"}
  other_user: {kind: postgres, dsn: "postgresql://other:pw1@db.internal:5432/shop"}
  other_db: {kind: postgres, dsn: "postgresql://app:pw1@db.internal:5432/billing"}
  replica: {kind: postgres, dsn: "postgresql://app:pw1@db.internal:5432/shop", role: replica}
""")
    assert target_digest(d["db"]) == target_digest(d["main"])
    assert target_digest(d["db"]) != target_digest(d["other_user"])  # another way in: its own prober
    assert target_digest(d["db"]) != target_digest(d["other_db"])
    assert target_digest(d["db"]) != target_digest(d["replica"])  # a replica's results mean something else
    assert "pw1" not in target_identity(d["db"]) and "pw2" not in target_identity(d["main"])


def test_a_postgres_target_is_the_first_host_of_the_dsn() -> None:
    """Host and port as libpq reads them: bracketed IPv6, several hosts, ?host= and ?port= in the query."""
    assert postgres_address("postgresql://u:p@DB.internal/app") == ("db.internal", 5432)
    assert postgres_address("postgresql://u:p@[::1]:6432/app") == ("::1", 6432)
    assert postgres_address("postgresql://u:p@h1:5433,h2:5434/app") == ("h1", 5433)
    assert postgres_address("postgresql:///app?host=/run/pg&port=5499") == ("/run/pg", 5499)
    assert postgres_address("postgresql:///app") is None


def test_an_llm_target_is_its_base_url_and_a_fingerprint_of_its_key_never_the_key() -> None:
    """Two keys for one provider are two targets (two accounts, two rate limits); the key itself never appears."""
    d = deps("""
  a: {kind: llm, provider: openai, api_key: sk-first-secret-000000}
  b: {kind: llm, provider: openai, api_key: sk-first-secret-000000}
  c: {kind: llm, provider: openai, api_key: sk-second-secret-00000}
""")
    assert target_digest(d["a"]) == target_digest(d["b"]) != target_digest(d["c"])
    assert "sk-first-secret" not in target_identity(d["a"])


def test_a_shared_result_round_trips_and_garbage_is_refused() -> None:
    """What the prober writes is read back as the same status (renamed, with its prober); anything malformed is
    None, never an exception."""
    at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    status = DependencyStatus(name="db", kind="postgres", state=DepState.DOWN, breaker=BreakerState.OPEN, since=at,
                              latency_ms=3.5, consecutive_failures=2, reason="timeout", last_error="no answer",
                              retry_at=at, details={"lag_s": 1.0}, probes=7)
    back = status_from_wire(status_to_wire(status, "pod-a", A), "main")
    assert back is not None and back.pod == "pod-a" and back.token == A
    assert back.status == dataclasses.replace(status, name="main", prober="pod-a")
    for garbage in (b"", b"[]", b"{}", b'{"pod": "x", "token": "y", "kind": "tcp", "state": "sideways"}',
                    b"\xff", b'{"pod": 1}'):
        assert status_from_wire(garbage, "db") is None


def test_a_body_without_the_seq_placeholder_is_refused_at_once() -> None:
    """A body without the placeholder is a programming error, said before anything is sent."""
    assert with_seq_placeholder(b'{"seq":-1,"a":1}') == b'{"seq":-1,"a":1}'
    with pytest.raises(ValueError, match="placeholder"):
        with_seq_placeholder(b'{"seq":3}')
