"""Fleet mode's Redis vocabulary: key names, dependency-target identities, the Lua scripts and the wire format of a
shared probe result. No IO here.

Key layout (P = prefix, S = service, T = a target's digest). With ``cluster: true`` every group is wrapped in a hash
tag (``{P:S}:state``, ``{P:t:T}:lease``), so the keys a script touches always share one slot.

- ``P:S:state``, ``P:S:events`` (channel), ``P:S:stream``: the fleet's publication, written by the leader only.
- ``P:S:seq``: the fleet seq (no TTL). ``P:S:leader``: the leader lease (token ``<pod>/<boot>``).
- ``P:S:pod:<pod>``: each pod's own State; ``P:S:claim:<pod>``: who uses that pod id; ``P:S:pods``: a set of ids.
- ``P:t:T:lease``: the prober lease of one dependency target; ``P:t:T:results``: its results (a stream).
"""

from __future__ import annotations

import hashlib
import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from failsoft.daemon.clock import iso
from failsoft.daemon.config import Dependency
from failsoft.daemon.fleetconfig import redis_identity
from failsoft.policies.model import BreakerState, DependencyStatus, DepState

RESULTS_MAXLEN = 100  # results kept per target: a follower only ever needs the latest
RELAY_MAXLEN = 100  # relayed rate limits kept per target: the prober reads them as they come
SEQ_FIELD = b'"seq":-1'  # the placeholder the PUBLISH script replaces with the fleet seq (see with_seq_placeholder)


@dataclass(frozen=True, slots=True)
class ServiceKeys:
    """The keys of one service's fleet."""

    state: str
    events: str
    stream: str
    seq: str
    leader: str
    pods: str
    base: str

    def pod(self, pod: str) -> str:
        """``P:S:pod:<pod>``: a pod's own State."""
        return f"{self.base}:pod:{pod}"

    def claim(self, pod: str) -> str:
        """``P:S:claim:<pod>``: the token of the process using that pod id."""
        return f"{self.base}:claim:{pod}"


def service_keys(prefix: str, service: str, cluster: bool) -> ServiceKeys:
    """The key names for ``service``; hash-tagged in a cluster."""
    base = f"{{{prefix}:{service}}}" if cluster else f"{prefix}:{service}"
    return ServiceKeys(state=f"{base}:state", events=f"{base}:events", stream=f"{base}:stream", seq=f"{base}:seq",
                       leader=f"{base}:leader", pods=f"{base}:pods", base=base)


@dataclass(frozen=True, slots=True)
class TargetKeys:
    """The keys of one dependency target (shared by every service that probes it the same way)."""

    digest: str
    lease: str
    results: str


def target_keys(prefix: str, digest: str, cluster: bool) -> TargetKeys:
    """The key names of a target; hash-tagged in a cluster."""
    base = f"{{{prefix}:t:{digest}}}" if cluster else f"{prefix}:t:{digest}"
    return TargetKeys(digest=digest, lease=f"{base}:lease", results=f"{base}:results")


def fingerprint(secret: str) -> str:
    """A non-reversible fingerprint of an API key: SHA-256 with a fixed domain prefix, 16 hex digits.

    API keys are long random strings, so the digest cannot be searched back to the key; 64 bits keep two accounts
    apart. It only ever appears inside another digest (``target_digest``).
    """
    return hashlib.sha256(b"failsoft-fleet-api-key\x00" + secret.encode()).hexdigest()[:16]


def postgres_address(dsn: str) -> tuple[str, int] | None:
    """(host or socket directory, port) of the first host of a ``postgresql://`` DSN, or None if it has none.

    libpq allows ``host1:port1,host2:port2`` and ``?host=...&port=...``; the first host names the target.
    """
    try:
        url = urllib.parse.urlsplit(dsn)
    except ValueError:
        return None
    first = url.netloc.rpartition("@")[2].split(",")[0]
    if first.startswith("["):
        host, _, rest = first[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = first.partition(":")
    query = urllib.parse.parse_qs(url.query)
    host = (query.get("host") or [urllib.parse.unquote(host)])[0].split(",")[0]
    port_text = (query.get("port") or [port_text or "5432"])[0].split(",")[0]
    if not host or not port_text.isdigit():
        return None
    return host.lower(), int(port_text)


def target_identity(dep: Dependency) -> str:
    """What makes two dependencies the same thing to probe, whatever they are called in which service.

    The kind and its endpoint (user, host, port and database; a base URL and the API key's fingerprint), plus the
    options that change what the probe concludes (role, lag bound, probe kind, model, expected statuses...), so
    that two services share a prober only when its results mean the same to both. Secrets never enter it.
    """
    o = dep.options
    if dep.kind == "postgres":
        address = postgres_address(o.dsn) or ("?", 0)
        url = urllib.parse.urlsplit(o.dsn)
        database = url.path.strip("/") or "?"
        # The user, not the password: another user is another way in (pg_hba, grants), so another target.
        endpoint = f"{url.username or ''}@{address[0]}:{address[1]}/{database}"
        extra = f"role={o.role};lag={o.max_replication_lag:g}"
    elif dep.kind == "redis":
        host, port, db = redis_identity(o.url)
        endpoint, extra = f"{urllib.parse.urlsplit(o.url).username or ''}@{host}:{port}/{db}", f"role={o.role}"
    elif dep.kind == "llm":
        key = fingerprint(o.api_key) if o.api_key else "-"
        endpoint = f"{o.provider}|{o.base_url or 'default'}|key={key}"
        extra = f"probe={o.probe};model={o.model};headroom={o.min_headroom:g};org={o.organization};prj={o.project}"
    elif dep.kind == "http":
        u = urllib.parse.urlsplit(o.url)
        endpoint = urllib.parse.urlunsplit((u.scheme, u.hostname or "", u.path, u.query, "")) + f":{u.port}"
        extra = f"method={o.method};expect={','.join(map(str, o.expect_status))}"
    else:
        endpoint, extra = str(getattr(o, "address", "?")), ""
    s = dep.settings
    timing = f"timeout={s.timeout:g};slow={s.slow_threshold:g}"
    return f"{dep.kind}|{endpoint}|{extra}|{timing}"


def target_digest(dep: Dependency) -> str:
    """The target's identity as a short digest, for key names."""
    return hashlib.sha256(target_identity(dep).encode()).hexdigest()[:20]


# --- shared results on the wire ---------------------------------------------------------------------------


def status_to_wire(status: DependencyStatus, pod: str, token: str) -> bytes:
    """A probe result as the prober publishes it: secret-free (the prober redacted its error text already)."""
    return orjson.dumps({
        "pod": pod, "token": token, "kind": status.kind, "state": str(status.state), "breaker": str(status.breaker),
        "since": iso(status.since), "latency_ms": status.latency_ms,
        "consecutive_failures": status.consecutive_failures, "reason": status.reason,
        "last_error": status.last_error, "retry_at": iso(status.retry_at), "details": dict(status.details),
        "probes": status.probes,
    })


@dataclass(frozen=True, slots=True)
class SharedResult:
    """A result read back: who produced it and the status (named after the local dependency by the caller)."""

    pod: str
    token: str
    status: DependencyStatus


def status_from_wire(raw: bytes | str, name: str) -> SharedResult | None:
    """Parse a published result; None for anything malformed (the stream may hold anything: never trusted)."""
    try:
        d: Any = orjson.loads(raw)
        if not isinstance(d, dict) or not isinstance(d.get("pod"), str) or not isinstance(d.get("token"), str):
            return None
        details = d.get("details") or {}
        latency = d.get("latency_ms")
        status = DependencyStatus(
            name=name, kind=str(d["kind"]), state=DepState(d["state"]), breaker=BreakerState(d["breaker"]),
            since=_time(d.get("since")), latency_ms=float(latency) if latency is not None else None,
            consecutive_failures=int(d.get("consecutive_failures") or 0), reason=_text(d.get("reason")),
            last_error=_text(d.get("last_error")), retry_at=_time(d.get("retry_at")),
            details=details if isinstance(details, dict) else {}, probes=max(1, int(d.get("probes") or 1)),
            prober=d["pod"],
        )
    except (ValueError, TypeError, KeyError, orjson.JSONDecodeError):
        return None
    return SharedResult(pod=d["pod"], token=d["token"], status=status)


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _text(value: Any) -> str | None:
    return value[:2000] if isinstance(value, str) else None


def with_seq_placeholder(body: bytes) -> bytes:
    """``body`` if it holds the seq placeholder (``"seq":-1``) the PUBLISH script replaces, else ValueError.

    Only a real ``"seq"`` key can match: a ``"`` inside a JSON string value is escaped (``\\"seq\\":-1``), so the
    placeholder cannot appear inside one.
    """
    if SEQ_FIELD not in body:
        raise ValueError("the body has no seq placeholder")
    return body


# --- the scripts ------------------------------------------------------------------------------------------
# Each is one EVAL: Redis runs a script alone, so nothing else (another pod's request) can come between the read
# and the write inside it. That is what makes each one a check-and-set.

# KEYS: lease. ARGV: token, ttl_ms. Returns {1, token, ttl} when we hold it now, else {0, holder, pttl}.
# Atomic: the free-or-ours check and the SET/PEXPIRE are one step, so two pods can never both get 1. A value that
# cannot be a token (no "/") or a key without a TTL was not written by a pod (by hand, or garbage): it would block
# the lease forever, so it is replaced.
ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
local pttl = redis.call('PTTL', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, ARGV[1], tonumber(ARGV[2])}
end
if cur and string.find(cur, '/', 1, true) and pttl > 0 then
  return {0, cur, pttl}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, ARGV[1], tonumber(ARGV[2])}
"""

# KEYS: lease. ARGV: token, ttl_ms. Returns 1 when extended, 0 when the key is not ours (gone, taken, garbage).
# Atomic: only the holder extends, checked and done in one step (a GET then PEXPIRE from the client could extend
# a key that expired and was taken by another pod in between).
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: lease. ARGV: token. Deletes the key only if it is still ours (at shutdown, so a successor need not wait).
# Atomic for the same reason as RENEW: a plain DEL could remove the next holder's lease.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: lease, results. ARGV: token, maxlen, body, field ("result", or "check" for confirm_down). Appends an entry
# only while we hold the lease.
# Atomic: a prober that lost its lease (it was paused, its successor probes already) cannot slip in a stale result
# after the check.
SHARE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', ARGV[4], ARGV[3], 'token', ARGV[1])
return 1
"""

# KEYS: claim, pod key, pods set, seq. ARGV: token, ttl_ms, body, pod.
# Returns {1, '', fleet seq} after writing this pod's State, or {0, other token, fleet seq} when another live
# process uses this pod id. Atomic: the claim check and the write are one step, so two processes with one id
# never interleave their States under it.
POD = """
local owner = redis.call('GET', KEYS[1])
local seq = redis.call('GET', KEYS[4]) or '0'
if owner and owner ~= ARGV[1] then return {0, owner, seq} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
redis.call('SADD', KEYS[3], ARGV[4])
return {1, '', seq}
"""

# KEYS: leader lease, seq, state, stream. ARGV: token, floor, state ttl_ms, channel, PUBLISH or SPUBLISH,
# maxlen, state, n, then the n events; every `"seq":-1` in a body becomes the fleet seq (a resync's embedded State
# too).
# Returns the fleet seq after the write, or -1 when we are not the leader (nothing written).
# Atomic: the fencing check, the seq increments and every write are one step, so no other leader's write comes
# between them, seqs are gapless, and no reader sees an event without its seq or a State ahead of its events.
# `floor` is the highest fleet seq this pod has seen: after a Redis restart without persistence the seq key is
# gone, and the seq must still never go back.
PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
local floor = tonumber(ARGV[2])
if seq < floor then seq = floor end
local n = tonumber(ARGV[8])
for i = 1, n do
  seq = seq + 1
  local body = string.gsub(ARGV[8 + i], '"seq":%-1', '"seq":' .. seq)
  redis.call(ARGV[5], ARGV[4], body)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'event', body)
end
redis.call('SET', KEYS[2], seq)
local state = string.gsub(ARGV[7], '"seq":%-1', '"seq":' .. seq)
redis.call('SET', KEYS[3], state, 'PX', ARGV[3])
return seq
"""
