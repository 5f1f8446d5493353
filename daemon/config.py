"""The configuration file: parsed once, validated with the YAML path in every message, then frozen.

Every problem is collected (not only the first) so that ``failsoft check-config`` can list them all.
Values are echoed in messages only through the redactor, and secret fields are never echoed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import socket
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from daemon.redact import Redactor, url_password
from policies.rules import DEFAULT_LEVELS, MATCHERS, Condition, Policy, Rule
from probes import KINDS
from probes.options import DURATION, SECRET, Duration, Fraction

DEFAULT_PATH = "failsoft.yaml"
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")
_ENV_RE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SENSITIVE_HEADER = re.compile(r"auth|key|token|secret|cookie|session", re.I)


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

    def redactor(self) -> Redactor:
        """A redactor that knows every secret of this config."""
        return Redactor(self.secrets)


# --------------------------------------------------------------------------------------------------------
# Reading values


def parse_duration(value: Any) -> float:
    """Seconds from ``250ms``, ``2s``, ``1m30s``, ``5m`` or a plain number of seconds; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    else:
        raise ValueError
    if not 0 <= seconds < float("inf"):  # also rejects NaN
        raise ValueError
    return seconds


def parse_fraction(value: Any) -> float:
    """0.05 from ``5%`` or ``0.05``; ValueError outside 0..1."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, str) and value.strip().endswith("%"):
        result = float(value.strip()[:-1]) / 100
    elif isinstance(value, int | float | str):
        result = float(value)
    else:
        raise ValueError
    if not 0 <= result <= 1:
        raise ValueError
    return result


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ValueError otherwise."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]*):(\d+)", value.strip())
    if not m:
        raise ValueError
    host = m[1] if m[1] is not None else (m[3] or "127.0.0.1")
    port = int(m[2] if m[2] is not None else m[4])
    if not 0 <= port <= 65535:
        raise ValueError
    return host, port


class _Reader:
    """Walks the YAML tree, collects errors with their paths, and remembers secrets it sees."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.errors: list[str] = []
        self.secrets: set[str] = set()

    def error(self, path: str, message: str) -> None:
        """Record one problem; only the first per path, since later ones follow from it."""
        head = f"{path}: " if path else ""
        if not path or not any(e.startswith(head) for e in self.errors):
            self.errors.append(head + message)

    # -- ${VAR} substitution, applied to every string before it is read -----------------------------------

    def expand(self, node: Any, path: str) -> Any:
        if isinstance(node, str):
            return self._expand_str(node, path)
        if isinstance(node, list):
            return [self.expand(v, f"{path}[{i}]") for i, v in enumerate(node)]
        if isinstance(node, dict):
            return {k: self.expand(v, _join(path, str(k))) for k, v in node.items()}
        return node

    def _expand_str(self, text: str, path: str) -> str:
        def sub(m: re.Match[str]) -> str:
            if m[0] == "$${":
                return "${"
            name, default = m[1], m[2]
            if name in self.env:
                return self.env[name]
            if default is not None:
                return default
            self.error(path, f"environment variable {name} is not set (set it, or write ${{{name}:-default}})")
            return ""

        return _ENV_RE.sub(sub, text)

    # -- typed values -------------------------------------------------------------------------------------

    def mapping(self, node: Any, path: str, allowed: Iterator[str] | list[str] | None = None) -> dict[str, Any]:
        if node is None:
            return {}
        if not isinstance(node, dict):
            self.error(path, f"expected a mapping of keys to values, got {_type_name(node)}")
            return {}
        if allowed is not None:
            allowed = list(allowed)
            for key in node:
                if key not in allowed:
                    self.error(_join(path, str(key)), _unknown_key(str(key), allowed))
        return {str(k): v for k, v in node.items()}

    def value(self, hint: Any, node: Any, path: str, *, secret: bool = False) -> Any:
        """Convert ``node`` to ``hint``; on failure record an error and return None."""
        shown = "(hidden)" if secret else _show(node)
        origin, args = get_origin(hint), get_args(hint)
        if origin is typing.Annotated:
            unit = args[1]
            try:
                return parse_duration(node) if unit == DURATION else parse_fraction(node)
            except (ValueError, TypeError):
                what = "a duration like 250ms, 2s or 5m" if unit == DURATION else "a percentage like 5% or 0.05"
                self.error(path, f"expected {what}, got {shown}")
                return None
        if origin in (Union, types.UnionType):
            if node is None:
                return None
            inner = next(a for a in args if a is not type(None))
            return self.value(inner, node, path, secret=secret)
        if origin is Literal:
            if node in args:
                return node
            self.error(path, f"expected one of {', '.join(map(str, args))}, got {shown}")
            return None
        if origin is tuple:
            items = node if isinstance(node, list) else [node] if node is not None else None
            if items is None:
                self.error(path, f"expected a list, got {shown}")
                return None
            values = tuple(self.value(args[0], v, f"{path}[{i}]") for i, v in enumerate(items))
            return None if any(v is None for v in values) else values
        if origin in (Mapping, dict) or hint is dict:
            m = self.mapping(node, path)
            return {k: str(self.value(str, v, _join(path, k))) for k, v in m.items()}
        if dataclasses.is_dataclass(hint):
            raise TypeError("nested dataclasses are read with dataclass()")
        return self._scalar(hint, node, path, shown)

    def _scalar(self, hint: Any, node: Any, path: str, shown: str) -> Any:
        if hint is str:
            if isinstance(node, str | int | float) and not isinstance(node, bool):
                return str(node)
            self.error(path, f"expected a string, got {shown}")
        elif hint is bool:
            if isinstance(node, bool):
                return node
            if isinstance(node, str) and node.lower() in ("true", "false"):
                return node.lower() == "true"
            self.error(path, f"expected true or false, got {shown}")
        elif hint in (int, float):
            try:
                number = float(node) if not isinstance(node, bool) else None
            except (ValueError, TypeError):
                number = None
            if number is not None and not math.isfinite(number):
                number = None
            if number is not None and hint is int:
                number = int(number) if number.is_integer() else None
            if number is None:
                self.error(path, f"expected {'a whole number' if hint is int else 'a number'}, got {shown}")
                return None
            if number < 0:
                self.error(path, f"expected a number of at least 0, got {shown}")
                return None
            return number
        else:  # pragma: no cover - a kind declared a field type this reader does not know
            raise TypeError(f"unsupported option type {hint!r} at {path}")
        return None

    def dataclass(self, cls: type[Any], node: dict[str, Any], path: str, base: Any = None) -> Any:
        """Build ``cls`` from ``node``; keys not given come from ``base`` or the field defaults."""
        hints = typing.get_type_hints(cls, include_extras=True)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            fpath = _join(path, f.name)
            if f.name not in node:
                if base is not None:
                    values[f.name] = getattr(base, f.name)
                elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    self.error(fpath, "is required")
                continue
            raw, secret = node[f.name], bool(f.metadata.get(SECRET))
            if dataclasses.is_dataclass(hints[f.name]):
                sub = self.mapping(raw, fpath, [g.name for g in dataclasses.fields(hints[f.name])])
                nested_base = getattr(base, f.name) if base is not None else hints[f.name]()
                values[f.name] = self.dataclass(hints[f.name], sub, fpath, nested_base)
                continue
            value = self.value(hints[f.name], raw, fpath, secret=secret)
            if secret and isinstance(value, str):
                self.secrets.add(value)
            if isinstance(value, str) and (pw := url_password(value)):
                self.secrets.add(pw)
            if isinstance(value, dict):
                self.secrets.update(v for k, v in value.items() if _SENSITIVE_HEADER.search(k))
            if value is None and (raw is not None or not _optional(hints[f.name])):
                if raw is None and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    self.error(fpath, "is required")
                continue  # error recorded; keep going to find more
            values[f.name] = value
        try:
            return cls(**values)
        except TypeError:
            return None  # a required field was missing or invalid; already reported


def _optional(hint: Any) -> bool:
    return get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(node: Any) -> str:
    if node is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(type(node), "a number")


def _show(node: Any) -> str:
    if isinstance(node, dict | list) or node is None:
        return _type_name(node)
    text = repr(node)
    return text if len(text) <= 60 else text[:57] + "...'"


def _unknown_key(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown key{hint} (expected one of: {', '.join(sorted(allowed))})"


# --------------------------------------------------------------------------------------------------------
# The file


TOP_KEYS = ["service", "http", "log", "publish", "defaults", "dependencies", "llm_failover", "policy"]
SETTINGS_KEYS = [f.name for f in dataclasses.fields(ProbeSettings)]


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: with plain YAML the last one silently wins."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return dict(loader.construct_mapping(node, deep=deep))


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def resolve_path(path: str | None, env: Mapping[str, str] | None = None) -> Path:
    """``--config PATH``, else ``$FAILSOFT_CONFIG``, else ``./failsoft.yaml``."""
    env = os.environ if env is None else env
    return Path(path or env.get("FAILSOFT_CONFIG") or DEFAULT_PATH)


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, expand and validate the file at ``path``; ConfigError lists every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read the config file ({exc.strerror or exc})"]) from None
    return parse_config(text, env, base_dir=p.parent, source=str(p))


def parse_config(
    text: str, env: Mapping[str, str] | None = None, *, base_dir: Path | None = None, source: str = "<config>"
) -> Config:
    """Validate a config given as YAML text."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{source}: invalid YAML{where}: {problem}"]) from None
    if data is None:
        data = {}
    reader = _Reader(os.environ if env is None else env)
    config = _build(reader, data, base_dir or Path.cwd())
    if reader.errors or config is None:
        redact = Redactor(reader.secrets)
        # Redact the message, not the path: a path such as `dependencies.x.api_key:` looks like a credential.
        errors = [path + sep + redact(msg) for path, sep, msg in (e.partition(": ") for e in reader.errors)]
        raise ConfigError(errors or ["the configuration is not usable"])
    return config


def _build(r: _Reader, data: Any, base_dir: Path) -> Config | None:
    if not isinstance(data, dict):
        r.error("", f"the config file must be a mapping of keys to values, got {_type_name(data)}")
        return None
    top = r.mapping(r.expand(data, ""), "", TOP_KEYS)
    service = top.get("service") or r.env.get("FAILSOFT_SERVICE") or socket.gethostname()
    service = r.value(str, service, "service")
    http = _http(r, r.mapping(top.get("http"), "http", ["listen", "admin_token"]))
    log = r.dataclass(LogSettings, r.mapping(top.get("log"), "log", ["level", "format"]), "log")
    defaults_node = r.mapping(top.get("defaults"), "defaults", SETTINGS_KEYS)
    defaults = r.dataclass(ProbeSettings, defaults_node, "defaults", ProbeSettings()) or ProbeSettings()
    _check_settings(r, defaults, "defaults", set(defaults_node))
    deps = _dependencies(r, top.get("dependencies"), defaults)
    failover = _failover(r, top.get("llm_failover"), deps)
    publish = _publish(r, top.get("publish"), deps)
    policy, notes = _policy(r, top.get("policy"), deps, base_dir)
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
    )


def _http(r: _Reader, node: dict[str, Any]) -> HttpSettings | None:
    host, port = "127.0.0.1", 8765
    if "listen" in node:
        listen = r.value(str, node["listen"], "http.listen")
        try:
            host, port = parse_listen(listen or "")
        except ValueError:
            r.error("http.listen", f"expected host:port like 127.0.0.1:8765 or [::1]:8765, got {_show(listen)}")
    token = r.value(str, node.get("admin_token", ""), "http.admin_token", secret=True) or ""
    r.secrets.add(token)
    return HttpSettings(host=host, port=port, admin_token=token)


def _dependencies(r: _Reader, node: Any, defaults: ProbeSettings) -> dict[str, Dependency]:
    deps: dict[str, Dependency] = {}
    for name, raw in r.mapping(node, "dependencies").items():
        path = _join("dependencies", name)
        if not NAME_RE.match(name):
            r.error(path, "a dependency name starts with a letter and uses letters, digits, _ . - (max 63)")
        body = r.mapping(raw, path)
        kind_name = body.get("kind")
        kind = KINDS.get(kind_name) if isinstance(kind_name, str) else None
        if kind is None:
            if kind_name is None:
                r.error(_join(path, "kind"), f"is required (one of: {', '.join(sorted(KINDS))})")
            else:
                kinds = ", ".join(sorted(KINDS))
                r.error(_join(path, "kind"), f"unknown kind {_show(kind_name)} (expected one of: {kinds})")
            continue
        option_keys = [f.name for f in dataclasses.fields(kind.options)]
        r.mapping(body, path, ["kind", *SETTINGS_KEYS, *option_keys])
        settings = r.dataclass(ProbeSettings, {k: v for k, v in body.items() if k in SETTINGS_KEYS}, path, defaults)
        options = r.dataclass(kind.options, {k: v for k, v in body.items() if k in option_keys}, path)
        if settings is None or options is None:
            continue
        _check_settings(r, settings, path, set(body) & set(SETTINGS_KEYS))
        for key, message in getattr(options, "problems", lambda: [])():
            r.error(_join(path, key), message)
        deps[name] = Dependency(name, kind_name, settings, options)  # type: ignore[arg-type]
    return deps


def _check_settings(r: _Reader, s: ProbeSettings, path: str, keys: set[str] | None = None) -> None:
    """Range checks; ``keys`` limits them to what this block sets (defaults are checked once, at ``defaults``)."""
    def bad(key: str) -> bool:
        return keys is None or key in keys

    for key in ("interval", "timeout", "fast_interval"):
        if bad(key) and getattr(s, key) <= 0:
            r.error(_join(path, key), "must be more than 0")
    for key in ("unhealthy_threshold", "healthy_threshold"):
        if bad(key) and getattr(s, key) < 1:
            r.error(_join(path, key), "must be at least 1")
    b = s.down_interval
    if bad("down_interval") and (b.initial <= 0 or b.max < b.initial):
        r.error(_join(path, "down_interval"), "needs 0 < initial <= max")
    if bad("down_interval") and b.multiplier < 1:
        r.error(_join(path, "down_interval.multiplier"), "must be at least 1")


def _failover(r: _Reader, node: Any, deps: Mapping[str, Dependency]) -> tuple[str, ...]:
    if node is None:
        return ()
    names = r.value(tuple[str, ...], node, "llm_failover") or ()
    for i, name in enumerate(names):
        dep = deps.get(name)
        if dep is None:
            r.error(f"llm_failover[{i}]", f"unknown dependency {name!r} (expected one of: {', '.join(deps)})")
        elif dep.kind != "llm":
            r.error(f"llm_failover[{i}]", f"{name!r} is a {dep.kind} dependency; only llm dependencies fail over")
    if len(set(names)) != len(names):
        r.error("llm_failover", "lists a dependency twice")
    return tuple(names)


def _publish(r: _Reader, node: Any, deps: Mapping[str, Dependency]) -> PublishSettings | None:
    if node is None:
        return None
    body = r.mapping(node, "publish", ["redis", "prefix", "heartbeat"])
    target = r.value(str, body.get("redis"), "publish.redis") if "redis" in body else None
    if target is None:
        r.error("publish.redis", "is required: the name of a redis dependency or a redis:// URL")
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
    if prefix is None or heartbeat is None:
        return None
    return PublishSettings(redis_url=url, prefix=prefix, heartbeat=heartbeat)


# --------------------------------------------------------------------------------------------------------
# Policy


def default_policy_text() -> str:
    """The shipped ``policies/default.yaml``."""
    return resources.files("policies").joinpath("default.yaml").read_text(encoding="utf-8")


def _policy(
    r: _Reader, node: Any, deps: Mapping[str, Dependency], base_dir: Path
) -> tuple[Policy | None, list[str]]:
    notes: list[str] = []
    builtin = node is None
    path = "policy"
    if builtin:
        node = r.expand(yaml.safe_load(default_policy_text()), path)
    elif isinstance(node, str):
        file = (base_dir / node) if not Path(node).is_absolute() else Path(node)
        try:
            node = r.expand(yaml.load(file.read_text(encoding="utf-8"), Loader=_StrictLoader), path)  # noqa: S506
        except OSError as exc:
            r.error(path, f"cannot read policy file {str(file)!r} ({exc.strerror or exc})")
            return None, notes
        except yaml.YAMLError as exc:
            r.error(path, f"policy file {str(file)!r} is not valid YAML: {exc}")
            return None, notes
    body = r.mapping(node, path, ["levels", "rules", "recover_after", "capabilities"])
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
        r.error("policy.rules", f"expected a list of rules, got {_type_name(raw_rules)}")
        raw_rules = []
    for i, raw in enumerate(raw_rules):
        rule = _rule(r, raw, f"policy.rules[{i}]", levels, deps, builtin=builtin)
        if rule is not None:
            rules.append(rule)
    capabilities = None
    if "capabilities" in body:
        caps = r.mapping(body["capabilities"], "policy.capabilities", list(levels))
        capabilities = {lv: r.value(tuple[str, ...], v, f"policy.capabilities.{lv}") or () for lv, v in caps.items()}
    if builtin:
        notes.append("policy: the built-in default policy (policies/default.yaml) is used")
    referenced = {n for rule in rules for c in rule.when for n in c.dependencies}
    unused = [n for n in deps if n not in referenced]
    if unused:
        notes.append(f"policy: no rule mentions {', '.join(unused)}; they are probed and published only")
    policy = Policy(levels=levels, rules=tuple(rules), recover_after=recover_after or 0.0, capabilities=capabilities)
    return policy, notes


def _rule(
    r: _Reader, raw: Any, path: str, levels: tuple[str, ...], deps: Mapping[str, Dependency], *, builtin: bool
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
            if name not in deps:
                known = ", ".join(deps) or "none defined"
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
    lines.extend(f"note: {n}" for n in config.notes)
    return [config.redactor()(line) for line in lines]

