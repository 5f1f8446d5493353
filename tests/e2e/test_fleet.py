"""Fleet mode end to end: several real daemon processes sharing one real Redis (and a real 3-master Redis Cluster),
real PostgreSQL, the LLM simulator, and real faults (SIGKILL of the prober and of the leader, Redis killed and
restarted, a wrong password, a lease key overwritten by hand, two pods with one id).

Leases of 2 s and heartbeats of 500 ms keep the whole file to about a minute. Deadlines are generous;
nothing here asserts a duration (the bench measures them).
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from redis.cluster import RedisCluster
from rediscluster import RedisClusterServer
from schemas import problems
from support import IN_CI, SECRETS, DaemonProcess, pg_monitoring_connections, request, wait_for

from failsoft.devtools.llmsim import ThreadedSimulator
from failsoft.devtools.localservers import ServerError, free_port

pytestmark = pytest.mark.e2e

HEARTBEAT = 0.5
LEASE = "2s"  # short, but a 2-core machine shared with other test runs can stall a process for a second
FAST = ("defaults: {interval: 200ms, fast_interval: 100ms, timeout: 1s, jitter: 0, unhealthy_threshold: 1, "
        "healthy_threshold: 1, down_interval: {initial: 200ms, max: 400ms}, startup_grace: 0s}")
POLICY = "policy: {recover_after: 0s, rules: [{level: cache_only, when: {any_down: [db]}}, " \
         "{level: limited, when: {any_down: [openai]}}]}"


@pytest.fixture
def sim() -> Iterator[ThreadedSimulator]:
    """The LLM simulator with one OpenAI-format provider, ``openai``, whose key is a registered secret."""
    key = "sk-fleet-" + secrets.token_hex(10)
    SECRETS.add(key)
    s = ThreadedSimulator({"openai": "openai"}, {"openai": key}).start()
    yield s
    s.stop()


@pytest.fixture
def cluster() -> Iterator[RedisClusterServer]:
    """A 3-master Redis Cluster on loopback, for this test alone."""
    try:
        c = RedisClusterServer()
        c.start()
    except ServerError as exc:
        if IN_CI:
            pytest.fail(f"CI needs a Redis Cluster: {exc}")
        pytest.skip(f"no Redis Cluster: {exc}")
    SECRETS.add(c.password)
    yield c
    c.close()


def fleet_config(store_url: str, sim: ThreadedSimulator, pg: Any, service: str, prefix: str, *,
                 cluster: bool = False, extra: str = "") -> str:
    """Three daemons' config: db (PostgreSQL) and openai (the simulator) shared through the fleet's Redis."""
    openai = json.dumps(sim.dependency_config("openai"))
    return f"""
service: {service}
http: {{listen: "127.0.0.1:0"}}
publish: {{redis: "{store_url}", prefix: {prefix}, heartbeat: {HEARTBEAT}s}}
fleet: {{redis: "{store_url}", prefix: {prefix}, lease: {LEASE}, cluster: {str(cluster).lower()}}}
{FAST}
dependencies:
  db: {{kind: postgres, dsn: "{pg.dsn}"}}
  openai: {openai}
{POLICY}
{extra}
"""


class Fleet:
    """The daemons of one test's fleet, started one after the other with their own pod ids."""

    def __init__(self, config: str, tmp: Path) -> None:
        self.config, self.tmp = config, tmp
        self.pods: dict[str, DaemonProcess] = {}

    def start(self, pod: str, env: dict[str, str] | None = None, wait_ready: bool = True) -> DaemonProcess:
        """Start one more daemon as ``pod``."""
        d = DaemonProcess(self.config, self.tmp, {"FAILSOFT_POD": pod, **(env or {})})
        self.pods[pod] = d
        return d.start(wait_ready=wait_ready)

    def live(self) -> dict[str, DaemonProcess]:
        """The daemons still running."""
        return {p: d for p, d in self.pods.items() if d.proc is not None and d.proc.poll() is None}

    def kill(self, pod: str) -> None:
        """SIGKILL one daemon: no lease released, no key deleted."""
        d = self.pods[pod]
        d.signal(signal.SIGKILL)
        d.wait_exit()

    def stop(self) -> None:
        """Stop every daemon."""
        for d in self.pods.values():
            d.stop()


@pytest.fixture
def fleet_of(tmp_path: Path) -> Iterator[Callable[[str], Fleet]]:
    """Make fleets; every daemon is stopped after the test."""
    made: list[Fleet] = []

    def make(config: str) -> Fleet:
        made.append(Fleet(config, tmp_path))
        return made[-1]

    yield make
    for f in made:
        f.stop()


def fleet_view(d: DaemonProcess) -> dict[str, Any] | None:
    """``GET /fleet`` when it answers 200."""
    status, body, _ = d.get("/fleet")
    return body if status == 200 else None


def probes(d: DaemonProcess, dependency: str) -> float:
    """How many probes of ``dependency`` this daemon ran (failsoft_probes_total, every outcome)."""
    text = d.get("/metrics")[1]
    pattern = rf'^failsoft_probes_total\{{[^}}]*dependency="{dependency}"[^}}]*\}} ([0-9.e+]+)$'
    return sum(float(m) for m in re.findall(pattern, text, re.M))


def metric(d: DaemonProcess, name: str, dependency: str) -> float:
    """A counter's value for one dependency in the daemon's /metrics."""
    text = d.get("/metrics")[1]
    found = re.findall(rf'^{name}\{{dependency="{dependency}"\}} ([0-9.e+]+)$', text, re.M)
    return float(found[0]) if found else 0.0


class Subscriber:
    """Follows the fleet's events channel in a thread: PUBLISH on a standalone Redis, SPUBLISH on a cluster."""

    def __init__(self, url: str, channel: str, cluster: bool) -> None:
        self.messages: list[dict[str, Any]] = []
        self._stop = threading.Event()
        if cluster:
            self._client: Any = RedisCluster.from_url(url)
            self._pubsub = self._client.pubsub()
            self._pubsub.ssubscribe(channel)
            self._get = lambda: self._pubsub.get_sharded_message(timeout=0.2)
        else:
            self._client = redis.Redis.from_url(url)
            self._pubsub = self._client.pubsub()
            self._pubsub.subscribe(channel)
            self._get = lambda: self._pubsub.get_message(timeout=0.2)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._get()
            if msg and msg.get("type") in ("message", "smessage"):
                self.messages.append(orjson.loads(msg["data"]))

    def seqs(self) -> list[int]:
        """The seqs seen, in arrival order."""
        return [m["seq"] for m in list(self.messages)]

    def close(self) -> None:
        """Stop following."""
        self._stop.set()
        self._thread.join(5)
        self._pubsub.close()
        self._client.close()


def one_prober_each(f: Fleet) -> dict[str, str]:
    """{dependency: prober} once every live pod's /fleet agrees, names a live pod for both, and lists them all."""
    live = f.live()
    views = [fleet_view(d) for d in live.values()]
    if not all(views):
        return {}
    probers = [v["probers"] for v in views if v]
    pods = [sorted(p["pod"] for p in v["pods"]) for v in views if v]
    ok = (all(p == probers[0] for p in probers) and set(probers[0]) == {"db", "openai"}
          and all(pod in live for pod in probers[0].values()) and all(p == sorted(live) for p in pods))
    return probers[0] if ok else {}


def scenario(f: Fleet, sub: Subscriber, sim: ThreadedSimulator, pg: Any, read_stream: Callable[[], list[int]]) -> None:
    """The fleet story shared by the standalone and the cluster runs (see the tests' docstrings)."""
    for pod in ("pod-a", "pod-b", "pod-c"):
        f.start(pod)
    probers = wait_for(lambda: one_prober_each(f), 20, what="one prober per dependency on every pod's /fleet")
    # Only the prober probes: the other pods never ran a probe of a shared dependency.
    prober = probers["openai"]
    wait_for(lambda: probes(f.pods[prober], "openai") > 3, 10, what="the prober probing")
    for pod, d in f.live().items():
        if pod != probers["openai"]:
            assert probes(d, "openai") == 0, f"{pod} probed openai although {prober} is its prober"
        if pod != probers["db"]:
            assert probes(d, "db") == 0, f"{pod} probed db although {probers['db']} is its prober"
        deps = d.state()["dependencies"]
        assert deps["openai"]["prober"] == probers["openai"] and deps["db"]["prober"] == probers["db"]
        held = 1 if pod == probers["openai"] else 0
        assert f'failsoft_fleet_leases_held{{lease="openai"}} {held}.0' in d.get("/metrics")[1]
        if not held:
            wait_for(lambda d=d: metric(d, "failsoft_fleet_shared_results_applied_total", "openai") > 0, 10,
                     what="shared results counted")
    wait_for(lambda: pg_monitoring_connections(pg.dsn) == 1, 10, what="one monitoring backend on PostgreSQL")

    # The prober's fault reaches every pod: openai down everywhere, through the shared result.
    sim.set_mode("openai", "error")
    for d in f.live().values():
        d.wait_state(lambda s: s["dependencies"]["openai"]["state"] == "down", 15, what="openai down on every pod")
    sim.set_mode("openai", "healthy")
    for d in f.live().values():
        d.wait_state(lambda s: s["level"] == "full", 15, what="back to full on every pod")

    # SIGKILL the pod that probes and leads: another pod takes both over; the killed pod leaves /fleet.
    leader = wait_for(lambda: (v := fleet_view(f.pods["pod-b"])) and v["leader"], 10, what="a leader")
    victim = leader if leader == probers["openai"] else probers["openai"]
    f.kill(victim)
    survivor = next(iter(f.live().values()))
    after = wait_for(lambda: (p := one_prober_each(f)) and victim not in p.values() and p, 20,
                     what="the probers to move to live pods and the killed pod to leave /fleet")
    assert victim not in after.values()
    wait_for(lambda: (v := fleet_view(survivor)) and v["leader"] not in (None, victim), 20, what="a new leader")
    wait_for(lambda: pg_monitoring_connections(pg.dsn) == 1, 10, what="still one monitoring backend")
    # Events after the leader change continue the fleet seq.
    sim.set_mode("openai", "error")
    for d in f.live().values():
        d.wait_state(lambda s: s["dependencies"]["openai"]["state"] == "down", 15, what="openai down again")
    sim.set_mode("openai", "healthy")
    for d in f.live().values():
        d.wait_state(lambda s: s["level"] == "full", 15, what="full again")
    wait_for(lambda: len(sub.messages) >= 6, 10, what="events on the channel")
    seqs = sub.seqs()
    assert all(a < b for a, b in itertools.pairwise(seqs)), f"seqs not strictly increasing: {seqs}"
    assert len({m["boot"] for m in sub.messages}) >= 2, "no leader change seen on the channel"
    for m in sub.messages:  # every event the leaders published is a documented event (docs/schema)
        assert not problems("event.json", m) and not problems(f"events/{m['type']}.json", m), (m, problems(
            f"events/{m['type']}.json", m))
    resyncs = [m for m in sub.messages if m["type"] == "resync"]
    assert resyncs and all(m["state"]["seq"] == m["seq"] and m["state"]["leader"] == m["leader"] for m in resyncs)
    stream = read_stream()
    assert stream == list(range(1, len(stream) + 1)), f"the stream's seqs have a gap or go back: {stream}"


def test_a_fleet_on_one_redis_probes_each_dependency_once_and_publishes_one_coherent_stream(
    fleet_of: Callable[[str], Fleet], sim: ThreadedSimulator, postgres: Any, own_redis: Any
) -> None:
    """Three daemons on one Redis: one prober per shared dependency (the others never probe it; one monitoring
    backend on PostgreSQL), a fault seen by the prober reaches every pod, SIGKILL of the prober and leader moves
    both to live pods and drops the dead pod from /fleet, and a subscriber on P:S:events sees strictly increasing
    seqs across the leader change while the stream's seqs are gapless from 1."""
    service, prefix = f"fl-{secrets.token_hex(3)}", "t"
    f = fleet_of(fleet_config(own_redis.url, sim, postgres, service, prefix))
    sub = Subscriber(own_redis.url, f"{prefix}:{service}:events", cluster=False)
    client = redis.Redis.from_url(own_redis.url)
    try:
        def stream() -> list[int]:
            return [orjson.loads(e[b"event"])["seq"] for _, e in client.xrange(f"{prefix}:{service}:stream")]

        scenario(f, sub, sim, postgres, stream)
        state = orjson.loads(client.get(f"{prefix}:{service}:state") or b"{}")
        assert not problems("state.json", state) and state["leader"] in f.live()
    finally:
        sub.close()
        client.close()


def test_the_same_fleet_on_a_three_master_redis_cluster(
    fleet_of: Callable[[str], Fleet], sim: ThreadedSimulator, postgres: Any, cluster: RedisClusterServer
) -> None:
    """The same story on a real 3-master Redis Cluster: hash-tagged keys, the events on a sharded channel read
    with SSUBSCRIBE, the stream gapless. Then the whole cluster is killed: every pod says so, falls back to probing
    alone and keeps answering (redis-py's cluster errors are not RedisErrors; one used to stop the daemon)."""
    service, prefix = f"fl-{secrets.token_hex(3)}", "t"
    f = fleet_of(fleet_config(cluster.url, sim, postgres, service, prefix, cluster=True))
    sub = Subscriber(cluster.url, f"{{{prefix}:{service}}}:events", cluster=True)
    client = RedisCluster.from_url(cluster.url)
    try:
        def stream() -> list[int]:
            return [orjson.loads(e[b"event"])["seq"] for _, e in client.xrange(f"{{{prefix}:{service}}}:stream")]

        scenario(f, sub, sim, postgres, stream)
        assert client.exists(f"{{{prefix}:{service}}}:state") and not client.exists(f"{prefix}:{service}:state")
        sub.close()  # our own subscriber would only complain that the cluster went away
        alive = set(f.live())
        cluster.kill()
        for d in f.live().values():
            wait_for(lambda d=d: any(line.get("event") == "fleet_redis_unreachable" for line in d.lines()), 15,
                     what="each pod to say the fleet Redis is away")
        wait_for(lambda: all(probes(d, "db") > 0 for d in f.live().values()), 15, what="every pod probing db itself")
        assert set(f.live()) == alive and all(d.get("/healthz")[0] == 200 for d in f.live().values())
        assert not any(line.get("event") in ("task_crashed", "uncaught_exception")
                       for d in f.pods.values() for line in d.lines())
    finally:
        sub.close()
        client.close()


def test_redis_killed_and_restarted_means_local_probing_then_sharing_again(
    fleet_of: Callable[[str], Fleet], sim: ThreadedSimulator, postgres: Any, own_redis: Any
) -> None:
    """Redis dies: every pod says so once, probes everything itself and keeps serving its level; /fleet answers
    503. Redis comes back empty: the pods share again (one prober), and the fleet seq does not go back."""
    service, prefix = f"fl-{secrets.token_hex(3)}", "t"
    f = fleet_of(fleet_config(own_redis.url, sim, postgres, service, prefix))
    a, b = f.start("pod-a"), f.start("pod-b")
    wait_for(lambda: one_prober_each(f), 20, what="one prober each")
    client = redis.Redis.from_url(own_redis.url)
    seq_before = wait_for(lambda: (raw := client.get(f"{prefix}:{service}:state")) and orjson.loads(raw)["seq"], 10,
                          what="the fleet state")
    client.close()
    own_redis.kill()
    for d in (a, b):
        wait_for(lambda d=d: any(line.get("event") == "fleet_redis_unreachable" for line in d.lines()), 15,
                 what="the fallback log line")
        count = probes(d, "openai")
        wait_for(lambda d=d, count=count: probes(d, "openai") > count + 2, 15, what="local probing")
        assert d.state()["level"] == "full"
        assert d.get("/fleet")[0] == 503
        assert 'failsoft_fleet_redis_up 0.0' in d.get("/metrics")[1]
    own_redis.start()
    for d in (a, b):
        wait_for(lambda d=d: any(line.get("event") == "fleet_redis_back" for line in d.lines()), 20,
                 what="the back-to-sharing log line")
        assert sum(line.get("event") == "fleet_redis_unreachable" for line in d.lines()) == 1
    wait_for(lambda: one_prober_each(f), 20, what="one prober each again")

    def only_one_probing() -> bool:
        prober = one_prober_each(f).get("openai")
        if prober is None:
            return False
        before = {p: probes(d, "openai") for p, d in f.live().items()}
        wait_for(lambda: probes(f.pods[prober], "openai") >= before[prober] + 3, 10, what="the prober probing")
        return all(probes(d, "openai") == before[p] for p, d in f.live().items() if p != prober)

    wait_for(only_one_probing, 20, interval=0.1, what="a single pod probing openai again")
    client = redis.Redis.from_url(own_redis.url)
    try:
        seq_after = wait_for(lambda: (raw := client.get(f"{prefix}:{service}:state")) and orjson.loads(raw)["seq"],
                             10, what="the fleet state rewritten")
        assert seq_after > seq_before
    finally:
        client.close()


def test_a_wrong_fleet_password_is_said_clearly_without_the_secret_and_the_pod_probes_locally(
    fleet_of: Callable[[str], Fleet], sim: ThreadedSimulator, postgres: Any, own_redis: Any
) -> None:
    """A fleet Redis that refuses the password: the daemon starts, probes everything itself, and one log line says
    the credentials were refused, never showing the password given."""
    wrong = "wrong-" + secrets.token_hex(8)
    SECRETS.add(wrong)
    url = f"redis://:{wrong}@127.0.0.1:{own_redis.port}/0"
    f = fleet_of(fleet_config(url, sim, postgres, f"fl-{secrets.token_hex(3)}", "t"))
    d = f.start("pod-a")
    line = wait_for(lambda: next((x for x in d.lines() if x.get("event") == "fleet_redis_unreachable"), None), 10,
                    what="the fallback line")
    assert "credentials" in line["error"] or "AUTH" in line["error"].upper()
    assert probes(d, "openai") > 0 and probes(d, "db") > 0
    assert wrong not in d.output()


def test_a_lease_key_overwritten_by_hand_is_taken_back(
    fleet_of: Callable[[str], Fleet], sim: ThreadedSimulator, postgres: Any, own_redis: Any
) -> None:
    """Garbage without a TTL written over every lease key: the holders notice they lost it, and a pod takes each
    lease back (the acquire script replaces what no pod wrote), so sharing goes on."""
    service, prefix = f"fl-{secrets.token_hex(3)}", "t"
    f = fleet_of(fleet_config(own_redis.url, sim, postgres, service, prefix))
    f.start("pod-a")
    f.start("pod-b")
    wait_for(lambda: one_prober_each(f), 20, what="one prober each")
    client = redis.Redis.from_url(own_redis.url)
    try:
        keys = [*client.scan_iter(f"{prefix}:t:*:lease"), f"{prefix}:{service}:leader".encode()]
        assert len(keys) == 3
        for key in keys:
            client.set(key, b"\xff garbage")
        for key in keys:
            wait_for(lambda key=key: (v := client.get(key)) and re.fullmatch(rb"pod-[ab]/[0-9a-f]{6}", v), 15,
                     what=f"{key!r} to hold a pod's token again")
        wait_for(lambda: one_prober_each(f), 20, what="one prober each again")
        # Its next renewal finds the garbage or another pod's token (lost), or, on a machine too busy to renew in
        # time, its held time ends (stepped down).
        wait_for(lambda: [x for d in f.live().values() for x in d.lines()
                          if x.get("event") == "fleet_lease" and x.get("change") in ("lost", "stepped_down")],
                 10, what="the holder noticing it lost its lease")
    finally:
        client.close()


def test_two_pods_with_one_id_end_up_with_two_ids(
    fleet_of: Callable[[str], Fleet], sim: ThreadedSimulator, postgres: Any, own_redis: Any
) -> None:
    """A second live process with the same pod id waits out 3 heartbeats (a restart of the same pod would have
    expired by then), then renames itself <pod>-<boot> and says so; /fleet lists both."""
    f = fleet_of(fleet_config(own_redis.url, sim, postgres, f"fl-{secrets.token_hex(3)}", "t"))
    first = f.start("web")
    second = DaemonProcess(f.config, f.tmp, {"FAILSOFT_POD": "web"})
    f.pods["web-2"] = second
    second.start()
    line = wait_for(lambda: next((x for x in second.lines() if x.get("event") == "fleet_pod_renamed"), None), 15,
                    what="the rename line")
    boot = second.state()["boot"]
    assert line["pod"] == f"web-{boot}"
    wait_for(lambda: (v := fleet_view(first)) and sorted(p["pod"] for p in v["pods"]) == ["web", f"web-{boot}"], 10,
             what="both pods in /fleet")


def test_get_fleet_matches_its_openapi_fragment_and_failsoft_fleet_prints_it(
    fleet_of: Callable[[str], Fleet], sim: ThreadedSimulator, postgres: Any, own_redis: Any, run_daemon: Any
) -> None:
    """GET /fleet conforms to daemon/openapi/fleet.yaml; `failsoft fleet` prints the leader, the probers and one
    row per live pod (exit 0), says so when fleet mode is off (exit 1) and exits 3 when the daemon is unreachable."""
    import jsonschema
    import yaml

    fragment = yaml.safe_load((Path(__file__).parents[2] / "daemon" / "openapi" / "fleet.yaml").read_text())
    schemas = fragment["components"]["schemas"]
    f = fleet_of(fleet_config(own_redis.url, sim, postgres, f"fl-{secrets.token_hex(3)}", "t"))
    a = f.start("pod-a")
    f.start("pod-b")
    view = wait_for(lambda: (v := fleet_view(a)) and len(v["pods"]) == 2 and v["leader"] and v, 15, what="2 pods")
    # The fragment's own refs resolve inside it: validate against {"components": ...} with a $ref to Fleet.
    jsonschema.validate(view, {"$ref": "#/components/schemas/Fleet", "components": fragment["components"]},
                        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    assert {p["pod"] for p in view["pods"]} == {"pod-a", "pod-b"} and set(schemas["FleetPod"]["required"]) == set(
        view["pods"][0])
    done = subprocess.run([sys.executable, "-m", "failsoft", "fleet", "--url", a.url], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert f"leader {view['leader']}" in done.stdout and "pod-a" in done.stdout and "pod-b" in done.stdout
    assert "prober of db:" in done.stdout and "(2 live pods" in done.stdout
    plain = run_daemon('http: {listen: "127.0.0.1:0"}\n')
    status, body, _ = plain.get("/fleet")
    assert status == 404 and body["error"]["code"] == "fleet_off"
    off = subprocess.run([sys.executable, "-m", "failsoft", "fleet", "--url", plain.url], capture_output=True,
                         text=True, timeout=30, check=False)
    assert off.returncode == 1 and "fleet mode is off" in off.stderr
    gone = subprocess.run([sys.executable, "-m", "failsoft", "fleet", "--url", "http://127.0.0.1:1"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert gone.returncode == 3 and "cannot reach" in gone.stderr


def test_a_pod_stopped_cleanly_hands_over_its_leases_and_leaves_the_fleet_at_once(
    fleet_of: Callable[[str], Fleet], sim: ThreadedSimulator, postgres: Any, own_redis: Any
) -> None:
    """SIGTERM: the pod releases its leases and deletes its pod key as it exits, so the other pod probes and
    leads next and /fleet lists one pod, without waiting for a lease or a pod key to expire."""
    service, prefix = f"fl-{secrets.token_hex(3)}", "t"
    f = fleet_of(fleet_config(own_redis.url, sim, postgres, service, prefix))
    a, b = f.start("pod-a"), f.start("pod-b")
    probers = wait_for(lambda: one_prober_each(f), 20, what="one prober each")
    first = f.pods[probers["openai"]]
    other = b if first is a else a
    client = redis.Redis.from_url(own_redis.url)
    try:
        first.signal(signal.SIGTERM)
        assert first.wait_exit() == 0
        name = probers["openai"]
        assert not client.exists(f"{prefix}:{service}:pod:{name}"), "the pod key outlived a clean stop"
        view = fleet_view(other)
        assert view is not None and [p["pod"] for p in view["pods"]] == [other.env["FAILSOFT_POD"]]
        wait_for(lambda: (v := fleet_view(other)) and v["probers"]["openai"] == other.env["FAILSOFT_POD"]
                 and v["leader"] == other.env["FAILSOFT_POD"], 10, what="the other pod probing and leading")
    finally:
        client.close()


def test_two_services_on_one_database_share_one_prober_and_a_late_pod_is_ready_at_once(
    fleet_of: Callable[[str], Fleet], sim: ThreadedSimulator, postgres: Any, own_redis: Any
) -> None:
    """Pods of two different services probing the same database with the same options share one prober (one
    backend on PostgreSQL), and a pod that joins takes the newest shared result at once: with a 60 s interval,
    /readyz is 200 long before the prober's next probe."""
    prefix = "t"
    slow = 'interval: 60s\n'
    one = fleet_of(fleet_config(own_redis.url, sim, postgres, f"fl-a-{secrets.token_hex(3)}", prefix)
                   .replace("  db: {", "  db: {" + slow.strip() + ", "))
    two = fleet_of(fleet_config(own_redis.url, sim, postgres, f"fl-b-{secrets.token_hex(3)}", prefix)
                   .replace("  db: {", "  main: {" + slow.strip() + ", ").replace("any_down: [db]", "any_down: [main]"))
    a = one.start("svc-a-pod")
    wait_for(lambda: (v := fleet_view(a)) and v["probers"].get("db") == "svc-a-pod", 10, what="pod a probing db")
    b = two.start("svc-b-pod")  # waits for /readyz: only the shared result can make it ready within 20 s
    assert b.state()["dependencies"]["main"]["prober"] == "svc-a-pod"
    assert probes(b, "main") == 0
    assert pg_monitoring_connections(postgres.dsn) == 1


def test_a_rate_limit_reported_on_any_pod_holds_for_every_pod(
    fleet_of: Callable[[str], Fleet], sim: ThreadedSimulator, postgres: Any, own_redis: Any
) -> None:
    """POST /report of a rate limit of a shared LLM: reported on a follower, it is relayed to the prober, which
    holds it and shares the held status, so every pod shows it rate limited until the same retry_at. Reported on
    the prober, a longer one moves retry_at on every pod again."""
    f = fleet_of(fleet_config(own_redis.url, sim, postgres, f"fl-{secrets.token_hex(3)}", "t"))
    f.start("pod-a")
    f.start("pod-b")
    probers = wait_for(lambda: one_prober_each(f), 20, what="one prober each")
    prober = f.pods[probers["openai"]]
    follower = next(d for p, d in f.live().items() if p != probers["openai"])

    def report(d: DaemonProcess, wait: str) -> None:
        body = json.dumps({"dependency": "openai", "ok": False, "reason": "rate_limited", "retry_after": wait})
        status, _, _ = request(d.url + "/report", "POST", body.encode(), {"Content-Type": "application/json"})
        assert status == 202

    report(follower, "30s")
    held = [d.wait_state(lambda s: s["dependencies"]["openai"]["reason"] == "rate_limited", 10,
                         what="rate limited on every pod")["dependencies"]["openai"] for d in (prober, follower)]
    assert held[0]["retry_at"] is not None
    wait_for(lambda: follower.state()["dependencies"]["openai"]["retry_at"] == held[0]["retry_at"], 10,
             what="the follower to show the prober's retry_at")
    assert held[1]["prober"] == probers["openai"]
    first = held[0]["retry_at"]
    report(prober, "60s")
    later = [d.wait_state(lambda s: (s["dependencies"]["openai"]["retry_at"] or "") > first, 10,
                          what="the longer limit on every pod")["dependencies"]["openai"] for d in (prober, follower)]
    assert later[0]["reason"] == later[1]["reason"] == "rate_limited"


def libfaketime() -> str:
    """The libfaketime library (Debian package faketime): fails in CI without it, skips elsewhere."""
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1")) + sorted(
        Path("/usr/lib").glob("faketime/libfaketimeMT.so.1"))
    if not found:
        if IN_CI:
            pytest.fail("CI needs libfaketime (apt-get install -y faketime)")
        pytest.skip("libfaketime is not installed (apt-get install -y faketime)")
    return str(found[0])


def test_pods_whose_clocks_disagree_by_hours_still_share_one_prober_and_fail_over(
    fleet_of: Callable[[str], Fleet], sim: ThreadedSimulator, postgres: Any, own_redis: Any
) -> None:
    """Three pods whose wall clocks are 2 hours apart (one also ticking 5 % fast): leases rely on Redis TTLs and
    each pod's own monotonic clock only, so there is still one prober per dependency and one leader, and killing
    the prober moves the probing to another pod. The pods' own timestamps show the skew was real."""
    lib = libfaketime()
    f = fleet_of(fleet_config(own_redis.url, sim, postgres, f"fl-{secrets.token_hex(3)}", "t"))
    f.start("pod-now")
    f.start("pod-ahead", {"LD_PRELOAD": lib, "FAKETIME": "+2h", "DONT_FAKE_MONOTONIC": "1"})
    f.start("pod-behind", {"LD_PRELOAD": lib, "FAKETIME": "-2h x1.05"})
    probers = wait_for(lambda: one_prober_each(f), 20, what="one prober each")
    view = fleet_view(f.pods["pod-now"])
    assert view is not None
    stamps = {p["pod"]: datetime.fromisoformat(p["updated_at"]) for p in view["pods"]}
    assert stamps["pod-ahead"] - stamps["pod-now"] > timedelta(hours=1.5)
    assert stamps["pod-now"] - stamps["pod-behind"] > timedelta(hours=1.5)
    for pod, d in f.live().items():
        if pod != probers["openai"]:
            assert probes(d, "openai") == 0, f"{pod} probed openai although {probers['openai']} is its prober"
    f.kill(probers["openai"])
    wait_for(lambda: (p := one_prober_each(f)) and p["openai"] != probers["openai"], 20,
             what="another pod holding the openai lease")
    counts = {pod: probes(d, "openai") for pod, d in f.live().items()}
    wait_for(lambda: any(probes(d, "openai") > counts[pod] + 2 for pod, d in f.live().items()), 10,
             what="a surviving pod probing openai")


def test_the_fleet_publishes_the_level_of_most_pods_and_the_worse_on_a_tie(
    fleet_of: Callable[[str], Fleet], sim: ThreadedSimulator, postgres: Any, own_redis: Any
) -> None:
    """Each pod also probes a dependency of its own (not shared) that only one pod reaches: two pods at
    cache_only and one at full publish cache_only; with one of the two gone the tie goes to the worse level;
    when the pods agree again the fleet's level follows, with a level_changed event in the stream."""
    service, prefix = f"fl-{secrets.token_hex(3)}", "t"
    text = fleet_config(own_redis.url, sim, postgres, service, prefix).replace(
        "cluster: false}", "cluster: false, shared: [db, openai]}").replace(
        "dependencies:\n", 'dependencies:\n  local: {kind: tcp, address: "${LOCAL_ADDR}"}\n').replace(
        "rules: [", "rules: [{level: cache_only, when: {any_down: [local]}}, ")
    closed = f"127.0.0.1:{free_port()}"
    f = fleet_of(text)
    f.start("pod-up", {"LOCAL_ADDR": f"127.0.0.1:{own_redis.port}"})
    f.start("pod-down-1", {"LOCAL_ADDR": closed})
    f.start("pod-down-2", {"LOCAL_ADDR": closed})
    client = redis.Redis.from_url(own_redis.url)
    try:
        def fleet_level() -> str | None:
            raw = client.get(f"{prefix}:{service}:state")
            return orjson.loads(raw)["level"] if raw else None

        assert f.pods["pod-up"].state()["level"] == "full"
        wait_for(lambda: fleet_level() == "cache_only", 15, what="2 of 3 pods at cache_only")
        f.kill("pod-down-2")
        wait_for(lambda: (v := fleet_view(f.pods["pod-up"])) and len(v["pods"]) == 2, 15, what="2 live pods")
        assert fleet_level() == "cache_only"  # 1 full, 1 cache_only: the worse
        f.kill("pod-down-1")
        wait_for(lambda: fleet_level() == "full", 15, what="the only live pod's level")
        events = [orjson.loads(e[b"event"]) for _, e in client.xrange(f"{prefix}:{service}:stream")]
        changes = [(e["previous"], e["level"]) for e in events if e["type"] == "level_changed"]
        assert changes[-1] == ("cache_only", "full")
    finally:
        client.close()


def test_a_database_crash_seen_by_the_prober_reaches_every_pod_and_the_recovery_too(
    fleet_of: Callable[[str], Fleet], sim: ThreadedSimulator, own_postgres: Any, own_redis: Any
) -> None:
    """kill -9 of PostgreSQL: what the prober sees reaches the followers (which never probed it, the db's
    `prober` says who did); after the restart all pods are healthy again with one backend in total."""
    f = fleet_of(fleet_config(own_redis.url, sim, own_postgres, f"fl-{secrets.token_hex(3)}", "t"))
    for pod in ("pod-a", "pod-b", "pod-c"):
        f.start(pod)
    probers = wait_for(lambda: one_prober_each(f), 20, what="one prober each")
    own_postgres.kill()
    for d in f.live().values():
        db = d.wait_state(lambda s: s["dependencies"]["db"]["state"] == "down", 15, what="db down everywhere")
        assert db["dependencies"]["db"]["prober"] == probers["db"]
    own_postgres.start()
    for d in f.live().values():
        d.wait_state(lambda s: s["dependencies"]["db"]["state"] == "healthy", 20, what="db healthy everywhere")
    for pod, d in f.live().items():
        if pod != probers["db"]:
            assert probes(d, "db") == 0
    wait_for(lambda: pg_monitoring_connections(own_postgres.dsn) == 1, 10, what="one backend after the restart")
