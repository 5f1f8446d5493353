"""The ``pod`` and ``fleet`` keys of the configuration (fleet mode), read and checked with their YAML paths.

Kept out of ``config.py`` so that the main config module only gains the wiring lines. The bounds below are named
once, with why they are what they are.
"""

from __future__ import annotations

import re
import socket
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from failsoft.daemon.redact import url_password
from failsoft.daemon.yamlread import Reader, show
from failsoft.probes.options import Duration

if TYPE_CHECKING:
    from failsoft.daemon.config import Dependency, PublishSettings

# A pod id is part of Redis key names and of the lease holder token `<pod>/<boot>`: no `/`, no spaces, no braces
# (a `{` would change the hash slot in Redis Cluster). 253 is the longest Kubernetes pod name.
POD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$")
# Leases: below 500 ms a renewal every third of it competes with probes on a loaded machine and a GC pause
# can cost the lease; above 5 minutes a dead prober leaves its dependency unprobed for too long.
LEASE_MIN, LEASE_MAX = 0.5, 300.0
# confirm_down counts pods; a fleet larger than this asking each other to check would be its own outage.
CONFIRM_MAX = 100


@dataclass(frozen=True, slots=True)
class FleetSettings:
    """Fleet mode: where the fleet coordinates, and what it shares."""

    redis_url: str
    cluster: bool = False
    prefix: str = "failsoft"
    lease: float = 3.0
    shared: tuple[str, ...] = ()
    confirm_down: int = 1
    redis_dependency: str | None = None  # the dependency naming the fleet's Redis, if it is one


def read_pod(r: Reader, node: Any) -> str | None:
    """``pod``: this replica's id; default ``$FAILSOFT_POD``, else the host name."""
    raw = node if node is not None and node != "" else (r.env.get("FAILSOFT_POD") or socket.gethostname())
    pod = r.value(str, raw, "pod")
    if pod is not None and not POD_RE.match(pod):
        r.error("pod", f"expected letters, digits, _ . - (starting with a letter or digit, max 253), got {show(pod)}")
        return None
    return pod  # type: ignore[no-any-return]


def read_fleet(
    r: Reader, node: Any, deps: Mapping[str, Dependency], publish: PublishSettings | None, publish_target: Any,
    *, broken: frozenset[str] = frozenset(),
) -> FleetSettings | None:
    """``fleet``: validated, with defaults filled in from ``publish`` and the dependencies.

    ``broken`` names dependencies that are defined but invalid: their own errors are the root mistake, so naming
    them here is not one more.
    """
    if node is None:
        return None
    keys = ["redis", "cluster", "prefix", "lease", "shared", "confirm_down"]
    body = r.mapping(node, "fleet", keys)
    if "redis" not in body:
        r.error("fleet.redis", "is required: the name of a redis dependency or a redis:// URL")
        return None
    target = r.value(str, body["redis"], "fleet.redis")
    if target is None:
        return None
    if target in broken:
        return None
    url, dep_name = _redis_target(r, target, deps)
    cluster = bool(r.value(bool, body.get("cluster", False), "fleet.cluster"))
    default_prefix = publish.prefix if publish is not None else "failsoft"
    prefix = r.value(str, body.get("prefix", default_prefix), "fleet.prefix")
    if prefix is not None and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", prefix):
        r.error("fleet.prefix", f"expected letters, digits, _ . : - (max 64), got {show(prefix)}")
    lease = r.value(Duration, body.get("lease", "3s"), "fleet.lease")
    if lease is not None and not LEASE_MIN <= lease <= LEASE_MAX:
        bounds = f"{LEASE_MIN * 1000:g}ms and {LEASE_MAX / 60:g}m"
        r.error("fleet.lease", f"must be between {bounds}, got {show(body['lease'])}")
    confirm = r.value(int, body.get("confirm_down", 1), "fleet.confirm_down")
    if confirm is not None and not 1 <= confirm <= CONFIRM_MAX:
        r.error("fleet.confirm_down", f"must be between 1 and {CONFIRM_MAX} (a number of pods), got {confirm}")
    shared = _shared(r, body, deps, dep_name, broken)
    if url is not None and cluster and url.startswith("unix://"):
        r.error("fleet.cluster", "a Redis Cluster is reached over TCP: fleet.redis must be a redis:// URL")
    if url is not None and publish is not None and _same_redis(publish_target, url) is False:
        r.error("publish.redis", "must name the same Redis as fleet.redis: in fleet mode the leader publishes "
                "to the fleet's Redis")
    if url is None or prefix is None or lease is None or confirm is None or shared is None:
        return None
    return FleetSettings(redis_url=url, cluster=cluster, prefix=prefix, lease=lease, shared=shared,
                         confirm_down=confirm, redis_dependency=dep_name)


def _redis_target(r: Reader, target: str, deps: Mapping[str, Dependency]) -> tuple[str | None, str | None]:
    if target in deps:
        dep = deps[target]
        if dep.kind != "redis":
            r.error("fleet.redis", f"{target!r} is a {dep.kind} dependency, not redis")
            return None, None
        return str(dep.options.url), target
    if re.match(r"^rediss?://|^unix://", target):
        if pw := url_password(target):
            r.secrets.add(pw)
        return target, None
    names = ", ".join(n for n, d in deps.items() if d.kind == "redis") or "none defined"
    r.error("fleet.redis", f"expected a redis dependency name ({names}) or a redis:// URL")
    return None, None


def _shared(r: Reader, body: Mapping[str, Any], deps: Mapping[str, Dependency],
            own_redis: str | None, broken: frozenset[str]) -> tuple[str, ...] | None:
    if "shared" not in body:
        return tuple(n for n in deps if n != own_redis)
    names = r.value(tuple[str, ...], body["shared"], "fleet.shared")
    if names is None:
        return None
    for i, name in enumerate(names):
        if name in broken:
            continue
        if name not in deps:
            known = ", ".join(deps) or "none defined"
            r.error(f"fleet.shared[{i}]", f"unknown dependency {name!r} (expected one of: {known})")
        elif name == own_redis:
            r.error(f"fleet.shared[{i}]", f"{name!r} is the fleet's own Redis: each pod must see it itself "
                    "(without it there is nothing to share through)")
    if len(set(names)) != len(names):
        r.error("fleet.shared", "lists a dependency twice")
    return tuple(names)


def redis_identity(url: str) -> tuple[str, str, int | str]:
    """(host or socket path, port, database) of a Redis URL: what makes two URLs the same server and database."""
    u = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(u.query)
    if u.scheme == "unix":
        return (u.path, "", int(query.get("db", ["0"])[0] or 0))
    db_text = u.path.strip("/") or query.get("db", ["0"])[0] or "0"
    try:
        port = u.port or 6379
    except ValueError:
        port = 0
    return ((u.hostname or "localhost").lower(), str(port), int(db_text) if db_text.isdigit() else db_text)


def _same_redis(a: Any, b: str) -> bool | None:
    """Whether two Redis URLs name the same server and database (None when ``a`` is not known)."""
    if not isinstance(a, str):
        return None
    return redis_identity(a) == redis_identity(b)
