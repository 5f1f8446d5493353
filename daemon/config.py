"""The configuration file: parsed once, validated with the YAML path in every message, then frozen.

Every problem is collected (not only the first) so that ``failsoft check-config`` can list them all.
Values are echoed in messages only through the redactor, and secret fields are never echoed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from failsoft.daemon import limits, safeyaml
from failsoft.daemon.cors import parse_origin
from failsoft.daemon.deprecations import DEPRECATIONS, Deprecation, apply_deprecations
from failsoft.daemon.envoverride import apply_env_overrides
from failsoft.daemon.fleetconfig import FleetSettings, read_fleet, read_pod
from failsoft.daemon.lint import config_warnings
from failsoft.daemon.redact import Redactor, url_password
from failsoft.daemon.streamcap import DEFAULT_MAX_STREAMS, read_max_streams
from failsoft.daemon.yamlread import Reader, join, parse_listen, show, type_name
from failsoft.policies.rules import DEFAULT_LEVELS, MATCHERS, Condition, Policy, Rule
from failsoft.probes import KINDS
from failsoft.probes.options import Duration, Fraction

DEFAULT_PATH = "failsoft.yaml"
# A longer grace would hide a dependency that never comes up behind a level that says all is well.
MAX_STARTUP_GRACE = 600.0
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")


class ConfigError(Exception):
    """The configuration is not usable; ``errors`` lists every problem as ``path: what to fix``."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Backoff:
    """Re-probe delays while the breaker is open: exponential with full jitter."""

    initial: Duration = 1.0
    max: Duration = 30.0
    multiplier: float = 2.0


@dataclass(frozen=True, slots=True)
class PassiveSettings:
    """How the app's reported call outcomes (``POST /report``) are judged; either rule opens the breaker."""

    enabled: bool = True
    consecutive_failures: int = 5  # this many failed calls in a row
    failure_ratio: Fraction = 0.5  # or this share of failed calls within `window`, once there are `min_requests`
    window: Duration = 10.0
    min_requests: int = 20


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """How and how often one dependency is probed; the ``defaults`` block sets these for all."""

    interval: Duration = 1.0
    timeout: Duration = 0.5
    jitter: Fraction = 0.1
    unhealthy_threshold: int = 3
    healthy_threshold: int = 2
    fast_interval: Duration = 0.25
    down_interval: Backoff = field(default_factory=Backoff)
    slow_threshold: Duration = 0.25
    passive: PassiveSettings = field(default_factory=PassiveSettings)
    # Before its first answer, a dependency's failures leave the level alone for this long (policies/grace.py).
    startup_grace: Duration = 30.0


@dataclass(frozen=True, slots=True)
class Dependency:
    """One configured dependency: its name, kind, probe settings and kind-specific options."""

    name: str
    kind: str
    settings: ProbeSettings
    options: Any


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The local API. An empty admin token turns the admin endpoints off (403)."""

    host: str = "127.0.0.1"
    port: int = 8765
    admin_token: str = ""
    report_token: str = ""  # bearer token for POST /report from other hosts; loopback peers need none
    cors_origins: tuple[str, ...] = ()  # web origins that may read the GET endpoints (daemon/cors.py)
    max_streams: int = DEFAULT_MAX_STREAMS  # open event streams at most (daemon/streamcap.py)


@dataclass(frozen=True, slots=True)
class LogSettings:
    """Log level and renderer."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


@dataclass(frozen=True, slots=True)
class PublishSettings:
    """Where the level goes besides HTTP: a Redis server (URL resolved from a dependency name if given)."""

    redis_url: str
    prefix: str = "failsoft"
    heartbeat: float = 5.0
    cluster: bool = False  # fleet.cluster: the URL is a Redis Cluster node


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration."""

    service: str
    http: HttpSettings
    log: LogSettings
    publish: PublishSettings | None
    dependencies: Mapping[str, Dependency]
    llm_failover: tuple[str, ...]
    policy: Policy
    secrets: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # things worth saying that are not errors (check-config prints them)
    warnings: tuple[str, ...] = ()  # deprecated keys and suspicious values: logged at start, printed by check-config
    pod: str = ""  # this replica's id (fleet mode)
    fleet: FleetSettings | None = None

    def redactor(self) -> Redactor:
        """A redactor that knows every secret of this config."""
        return Redactor(self.secrets)


# --------------------------------------------------------------------------------------------------------
# The file


TOP_KEYS = ["service", "http", "log", "publish", "defaults", "dependencies", "llm_failover", "policy", "pod", "fleet"]
SETTINGS_KEYS = [f.name for f in dataclasses.fields(ProbeSettings)]


def resolve_path(path: str | None, env: Mapping[str, str] | None = None) -> Path:
    """``--config PATH``, else ``$FAILSOFT_CONFIG``, else ``./failsoft.yaml``."""
    env = os.environ if env is None else env
    return Path(path or env.get("FAILSOFT_CONFIG") or DEFAULT_PATH)


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, expand and validate the file at ``path``; ConfigError lists every problem."""
    p = Path(path)
    try:
        text = safeyaml.read_file(p)  # a regular file, bounded, UTF-8
    except safeyaml.YamlInputError as exc:
        raise ConfigError([f"{p}: cannot read the config file ({exc})"]) from None
    return parse_config(text, env, base_dir=p.parent, source=str(p))


def parse_config(
    text: str, env: Mapping[str, str] | None = None, *, base_dir: Path | None = None, source: str = "<config>",
    deprecations: Sequence[Deprecation] = DEPRECATIONS,
) -> Config:
    """Validate a config given as YAML text."""
    try:
        data = safeyaml.load(text)  # bounded in size, depth and alias expansion
    except safeyaml.YamlInputError as exc:
        raise ConfigError([f"{source}: {exc}"]) from None
    if data is None:
        data = {}
    reader = Reader(os.environ if env is None else env)
    warnings, clashes = apply_deprecations(data, deprecations)
    overridden, bad_env = apply_env_overrides(data, reader.env, TOP_KEYS)
    for clash in [*clashes, *bad_env]:
        reader.error(*clash.split(": ", 1))
    config = _build(reader, data, base_dir or Path.cwd())
    if reader.errors or config is None:
        redact = Redactor(reader.secrets)
        # Redact the message, not the path: a path such as `dependencies.x.api_key:` looks like a credential.
        errors = [path + sep + redact(msg) for path, sep, msg in (e.partition(": ") for e in reader.errors)]
        if reader.dropped:
            errors.append(f"... and {reader.dropped} more problem(s) not listed")
        raise ConfigError(errors or ["the configuration is not usable"])
    return dataclasses.replace(config, warnings=(*warnings, *config.warnings), notes=(*overridden, *config.notes))


def _build(r: Reader, data: Any, base_dir: Path) -> Config | None:
    if not isinstance(data, dict):
        r.error("", f"the config file must be a mapping of keys to values, got {type_name(data)}")
        return None
    top = r.mapping(r.expand(data, ""), "", TOP_KEYS)
    service = top.get("service") or r.env.get("FAILSOFT_SERVICE") or socket.gethostname()
    service = r.value(str, service, "service")
    http = _http(r, r.mapping(top.get("http"), "http",
                              ["listen", "admin_token", "report_token", "cors_origins", "max_streams"]))
    log = r.dataclass(LogSettings, r.mapping(top.get("log"), "log", ["level", "format"]), "log")
    defaults_node = r.mapping(top.get("defaults"), "defaults", SETTINGS_KEYS)
    defaults = r.dataclass(ProbeSettings, defaults_node, "defaults", ProbeSettings()) or ProbeSettings()
    _check_settings(r, defaults, "defaults", set(defaults_node))
    deps = _dependencies(r, top.get("dependencies"), defaults)
    # Dependencies defined but invalid: their own errors are the root mistake; naming them elsewhere is no error.
    raw_deps = top.get("dependencies")
    broken = frozenset(map(str, raw_deps)) - deps.keys() if isinstance(raw_deps, dict) else frozenset()
    failover = _failover(r, top.get("llm_failover"), deps, broken)
    publish = _publish(r, top.get("publish"), deps, broken)
    pod = read_pod(r, top.get("pod"))
    fleet = read_fleet(r, top.get("fleet"), deps, publish, publish.redis_url if publish else None,
                       broken=broken)
    if fleet is not None and publish is not None and fleet.cluster:
        publish = dataclasses.replace(publish, cluster=True)
    policy, notes = _policy(r, top.get("policy"), deps, base_dir, broken)
    if r.errors or service is None or http is None or log is None or policy is None:
        return None
    return Config(
        service=service,
        http=http,
        log=log,
        publish=publish,
        dependencies=deps,
        llm_failover=failover,
        policy=policy,
        secrets=tuple(sorted(r.secrets)),
        notes=tuple(notes),
        warnings=tuple(config_warnings(deps)),
        pod=pod or "",
        fleet=fleet,
    )


def _http(r: Reader, node: dict[str, Any]) -> HttpSettings | None:
    host, port = "127.0.0.1", 8765
    if "listen" in node:
        listen = r.value(str, node["listen"], "http.listen")
        try:
            host, port = parse_listen(listen or "")
        except ValueError:
            r.error("http.listen", f"expected host:port like 127.0.0.1:8765 or [::1]:8765, got {show(listen)}")
    token = r.value(str, node.get("admin_token", ""), "http.admin_token", secret=True) or ""
    r.secrets.add(token)
    report_token = r.value(str, node.get("report_token", ""), "http.report_token", secret=True) or ""
    r.secrets.add(report_token)
    origins = node.get("cors_origins") or []
    if not isinstance(origins, list):
        r.error("http.cors_origins", f"expected a list of origins like [https://app.example.com], got "
                f"{type_name(origins)}")
        origins = []
    cors = tuple(_origin(r, o, f"http.cors_origins[{i}]") for i, o in enumerate(origins))
    return HttpSettings(host=host, port=port, admin_token=token, report_token=report_token, cors_origins=cors,
                        max_streams=read_max_streams(r, node))


def _origin(r: Reader, text: object, path: str) -> str:
    if not isinstance(text, str):
        r.error(path, f"expected an origin like https://app.example.com, got {show(text)}")
        return ""
    try:
        return parse_origin(text)
    except ValueError as exc:
        r.error(path, str(exc))
        return ""


def _dependencies(r: Reader, node: Any, defaults: ProbeSettings) -> dict[str, Dependency]:
    deps: dict[str, Dependency] = {}
    for name, raw in r.mapping(node, "dependencies").items():
        path = join("dependencies", name)
        if not NAME_RE.match(name):
            r.error(path, "a dependency name starts with a letter and uses letters, digits, _ . - (max 63)")
        body = r.mapping(raw, path)
        kind_name = body.get("kind")
        kind = KINDS.get(kind_name) if isinstance(kind_name, str) else None
        if kind is None:
            if kind_name is None:
                r.error(join(path, "kind"), f"is required (one of: {', '.join(sorted(KINDS))})")
            else:
                kinds = ", ".join(sorted(KINDS))
                r.error(join(path, "kind"), f"unknown kind {show(kind_name)} (expected one of: {kinds})")
            continue
        option_keys = [f.name for f in dataclasses.fields(kind.options)]
        r.mapping(body, path, ["kind", *SETTINGS_KEYS, *option_keys])
        settings = r.dataclass(ProbeSettings, {k: v for k, v in body.items() if k in SETTINGS_KEYS}, path, defaults)
        options = r.dataclass(kind.options, {k: v for k, v in body.items() if k in option_keys}, path)
        if settings is None or options is None:
            continue
        _check_settings(r, settings, path, set(body) & set(SETTINGS_KEYS))
        for key, message in getattr(options, "problems", lambda: [])():
            r.error(join(path, key), message)
        deps[name] = Dependency(name, kind_name, settings, options)  # type: ignore[arg-type]
    return deps


def _check_settings(r: Reader, s: ProbeSettings, path: str, keys: set[str] | None = None) -> None:
    """Range checks; ``keys`` limits them to what this block sets (defaults are checked once, at ``defaults``)."""
    def bad(key: str) -> bool:
        return keys is None or key in keys

    for key in ("interval", "timeout", "fast_interval"):
        if bad(key) and getattr(s, key) <= 0:
            r.error(join(path, key), "must be more than 0")
    _check_periods(r, s, path, bad)
    for key in ("unhealthy_threshold", "healthy_threshold"):
        if bad(key) and getattr(s, key) < 1:
            r.error(join(path, key), "must be at least 1")
    if bad("startup_grace") and s.startup_grace > MAX_STARTUP_GRACE:
        r.error(join(path, "startup_grace"), f"must be at most {MAX_STARTUP_GRACE / 60:g}m (0 turns it off)")
    b = s.down_interval
    if bad("down_interval") and (b.initial <= 0 or b.max < b.initial):
        r.error(join(path, "down_interval"), "needs 0 < initial <= max")
    if bad("down_interval") and b.multiplier < 1:
        r.error(join(path, "down_interval.multiplier"), "must be at least 1")
    if bad("down_interval") and b.multiplier > limits.MAX_BACKOFF_MULTIPLIER:
        r.error(join(path, "down_interval.multiplier"), f"must be at most {limits.MAX_BACKOFF_MULTIPLIER:g}")
    if bad("passive"):
        _check_passive(r, s.passive, join(path, "passive"))


def _check_passive(r: Reader, p: PassiveSettings, path: str) -> None:
    for key in ("consecutive_failures", "min_requests"):
        if getattr(p, key) < 1:
            r.error(join(path, key), "must be at least 1")
    if p.failure_ratio <= 0:
        r.error(join(path, "failure_ratio"), "must be more than 0% (a share of failed calls, like 50%)")
    if p.window < 0.1:
        r.error(join(path, "window"), "must be at least 100ms")
    elif p.window > limits.MAX_PERIOD:
        r.error(join(path, "window"), f"must be at most {limits.MAX_PERIOD / 3600:g}h")


def _check_periods(r: Reader, s: ProbeSettings, path: str, bad: Callable[[str], bool]) -> None:
    """Lower and upper bounds of every period (see daemon/limits.py): ``interval: 1e-9`` probed 1,600 times a
    second; a period of 1e300 seconds overflows the event loop's timers."""
    periods = {"interval": (s.interval, limits.MIN_PERIOD), "fast_interval": (s.fast_interval, limits.MIN_PERIOD),
               "timeout": (s.timeout, limits.MIN_TIMEOUT), "slow_threshold": (s.slow_threshold, 0.0),
               "down_interval.initial": (s.down_interval.initial, limits.MIN_PERIOD),
               "down_interval.max": (s.down_interval.max, limits.MIN_PERIOD)}
    for key, (value, low) in periods.items():
        if not bad(key.partition(".")[0]) or (value <= 0 and key != "slow_threshold"):
            continue  # not set in this block, or already reported as "must be more than 0" / "needs 0 < initial"
        if value < low:
            r.error(join(path, key), f"must be at least {low * 1000:g}ms")
        elif value > limits.MAX_PERIOD:
            r.error(join(path, key), f"must be at most {limits.MAX_PERIOD / 3600:g}h")


def _failover(r: Reader, node: Any, deps: Mapping[str, Dependency], broken: AbstractSet[str] = frozenset()
              ) -> tuple[str, ...]:
    if node is None:
        return ()
    names = r.value(tuple[str, ...], node, "llm_failover") or ()
    for i, name in enumerate(names):
        dep = deps.get(name)
        if dep is None and name in broken:
            continue
        if dep is None:
            r.error(f"llm_failover[{i}]", f"unknown dependency {name!r} (expected one of: {', '.join(deps)})")
        elif dep.kind != "llm":
            r.error(f"llm_failover[{i}]", f"{name!r} is a {dep.kind} dependency; only llm dependencies fail over")
    if len(set(names)) != len(names):
        r.error("llm_failover", "lists a dependency twice")
    return tuple(names)


def _publish(r: Reader, node: Any, deps: Mapping[str, Dependency], broken: AbstractSet[str] = frozenset()
             ) -> PublishSettings | None:
    if node is None:
        return None
    body = r.mapping(node, "publish", ["redis", "prefix", "heartbeat"])
    target = r.value(str, body.get("redis"), "publish.redis") if "redis" in body else None
    if target is None:
        r.error("publish.redis", "is required: the name of a redis dependency or a redis:// URL")
        return None
    if target in broken:
        return None
    if target in deps:
        if deps[target].kind != "redis":
            r.error("publish.redis", f"{target!r} is a {deps[target].kind} dependency, not redis")
            return None
        url = deps[target].options.url
    elif re.match(r"^rediss?://|^unix://", target):
        url = target
        if pw := url_password(url):
            r.secrets.add(pw)
    else:
        names = ", ".join(deps) or "none defined"
        r.error("publish.redis", f"expected a redis dependency name ({names}) or a redis:// URL")
        return None
    prefix = r.value(str, body.get("prefix", "failsoft"), "publish.prefix")
    heartbeat = r.value(Duration, body.get("heartbeat", "5s"), "publish.heartbeat")
    if heartbeat is not None and heartbeat < 0.1:
        r.error("publish.heartbeat", "must be at least 100ms")
    elif heartbeat is not None and heartbeat > limits.MAX_PERIOD:
        r.error("publish.heartbeat", f"must be at most {limits.MAX_PERIOD / 3600:g}h")
    if prefix is None or heartbeat is None:
        return None
    return PublishSettings(redis_url=url, prefix=prefix, heartbeat=heartbeat)


# --------------------------------------------------------------------------------------------------------
# Policy


POLICY_KEYS = ["levels", "rules", "recover_after", "capabilities"]


def default_policy_text() -> str:
    """The shipped ``policies/default.yaml``."""
    return resources.files("failsoft.policies").joinpath("default.yaml").read_text(encoding="utf-8")


def _policy(
    r: Reader, node: Any, deps: Mapping[str, Dependency], base_dir: Path, broken: AbstractSet[str] = frozenset()
) -> tuple[Policy | None, list[str]]:
    notes: list[str] = []
    builtin = node is None
    path = "policy"
    if builtin:
        node = r.expand(safeyaml.load(default_policy_text()), path)
    elif isinstance(node, str):
        node = _policy_file(r, base_dir / node, path)
        if node is None:
            return None, notes
    body = r.mapping(node, path, POLICY_KEYS)
    levels = r.value(tuple[str, ...], body.get("levels", list(DEFAULT_LEVELS)), "policy.levels")
    if not levels:
        r.error("policy.levels", "must list at least one level, best first")
        return None, notes
    if len(set(levels)) != len(levels):
        r.error("policy.levels", "lists a level twice")
    recover_after = r.value(Duration, body.get("recover_after", "5s"), "policy.recover_after")
    rules = []
    raw_rules = body.get("rules") or []
    if not isinstance(raw_rules, list):
        r.error("policy.rules", f"expected a list of rules, got {type_name(raw_rules)}")
        raw_rules = []
    for i, raw in enumerate(raw_rules):
        rule = _rule(r, raw, f"policy.rules[{i}]", levels, deps, builtin=builtin, broken=broken)
        if rule is not None:
            rules.append(rule)
    capabilities = None
    if "capabilities" in body:
        caps = r.mapping(body["capabilities"], "policy.capabilities", list(levels))
        capabilities = {lv: r.value(tuple[str, ...], v, f"policy.capabilities.{lv}") or () for lv, v in caps.items()}
    notes.extend(_inherited_capabilities(levels, capabilities or {}))
    if builtin:
        notes.append("policy: the built-in default policy (policies/default.yaml) is used")
    referenced = {n for rule in rules for c in rule.when for n in c.dependencies}
    unused = [n for n in deps if n not in referenced]
    if unused:
        notes.append(f"policy: no rule mentions {', '.join(unused)}; they are probed and published only")
    policy = Policy(levels=levels, rules=tuple(rules), recover_after=recover_after or 0.0, capabilities=capabilities)
    return policy, notes


def _inherited_capabilities(levels: tuple[str, ...], capabilities: Mapping[str, tuple[str, ...]]) -> list[str]:
    """check-config says what each level without its own capabilities list gets (see Policy.capabilities_for)."""
    if not capabilities:  # the policy says nothing about capabilities: nothing to note
        return []
    policy = Policy(levels=levels, capabilities=capabilities)
    notes = []
    for level in levels:
        if level in capabilities:
            continue
        source = policy.capabilities_source(level)
        if source is None:
            notes.append(f"policy.capabilities: {level} has no list and no better level has one: it allows nothing")
        else:
            notes.append(f"policy.capabilities: {level} has no list: it inherits {source}'s "
                         f"[{', '.join(capabilities[source])}]")
    return notes


def _policy_file(r: Reader, file: Path, path: str) -> Any:
    """The expanded content of a policy file, or None with the error recorded. Read as a policy only: a regular
    file, bounded, and no error quotes what it holds (``policy: /etc/shadow`` printed its lines)."""
    try:
        text = safeyaml.read_file(file)
    except safeyaml.YamlInputError as exc:
        r.error(path, f"cannot read policy file {str(file)!r} ({exc})")
        return None
    try:
        node = r.expand(safeyaml.load(text), path)
    except safeyaml.YamlInputError as exc:
        r.error(path, f"policy file {str(file)!r}: {exc}")
        return None
    if not isinstance(node, dict) or not set(map(str, node)) & set(POLICY_KEYS):
        r.error(path, f"policy file {str(file)!r} is not a policy: expected a mapping with {', '.join(POLICY_KEYS)}")
        return None
    return node


def _rule(
    r: Reader, raw: Any, path: str, levels: tuple[str, ...], deps: Mapping[str, Dependency], *, builtin: bool,
    broken: AbstractSet[str] = frozenset(),
) -> Rule | None:
    body = r.mapping(raw, path, ["level", "when", "message"])
    level = r.value(str, body.get("level"), f"{path}.level")
    if level is not None and level not in levels:
        r.error(f"{path}.level", f"unknown level {level!r} (expected one of: {', '.join(levels)})")
    when = r.mapping(body.get("when"), f"{path}.when", list(MATCHERS))
    if not when:
        r.error(f"{path}.when", f"needs at least one matcher ({', '.join(MATCHERS)})")
    conditions = []
    for matcher, names_raw in when.items():
        if matcher not in MATCHERS:
            continue
        names = r.value(tuple[str, ...], names_raw, f"{path}.when.{matcher}") or ()
        if builtin:  # the shipped policy adapts to the dependencies this config has
            names = tuple(n for n in names if n in deps)
            if not names:
                return None
        for j, name in enumerate(names):
            if name not in deps and name not in broken:
                known = ", ".join([*deps, *sorted(broken)]) or "none defined"
                r.error(f"{path}.when.{matcher}[{j}]", f"unknown dependency {name!r} (expected one of: {known})")
        if not names:
            r.error(f"{path}.when.{matcher}", "must name at least one dependency")
        conditions.append(Condition(matcher, names))
    message = r.value(str, body["message"], f"{path}.message") if body.get("message") is not None else None
    if level is None or level not in levels:
        return None
    return Rule(level=level, when=tuple(conditions), message=message)


def summary(config: Config) -> list[str]:
    """A few lines describing a valid config, for ``check-config``."""
    lines = [f"service {config.service}: {len(config.dependencies)} dependencies, "
             f"levels {' > '.join(config.policy.levels)}, {len(config.policy.rules)} rules, "
             f"listening on {config.http.host}:{config.http.port}"]
    for dep in config.dependencies.values():
        s = dep.settings
        lines.append(f"  {dep.name} ({dep.kind}): every {s.interval:g}s, timeout {s.timeout:g}s, "
                     f"down after {s.unhealthy_threshold} failures")
    if config.publish:
        lines.append(f"  publishing to Redis with prefix {config.publish.prefix}:{config.service}")
    if config.fleet:
        lines.append(f"  fleet mode as pod {config.pod}: sharing {', '.join(config.fleet.shared) or 'nothing'}, "
                     f"lease {config.fleet.lease:g}s{', Redis Cluster' if config.fleet.cluster else ''}")
    lines.extend(f"note: {n}" for n in config.notes)
    lines.extend(f"warning: {w}" for w in config.warnings)
    return [config.redactor()(line) for line in lines]

