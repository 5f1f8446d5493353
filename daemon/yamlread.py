"""Reading typed values out of parsed YAML, with the YAML path of every problem.

``Reader`` walks a tree, expands ``${VAR}`` / ``${VAR:-default}``, converts values to the types that config
dataclasses declare (durations, percentages, choices, lists, maps, nested dataclasses), collects every error
with its path, and remembers the secrets it sees so that they can be masked. ``StrictLoader`` is PyYAML's safe
loader that refuses duplicate keys (now :class:`failsoft.daemon.safeyaml.BoundedLoader`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin

from failsoft.daemon.limits import CONFIG_MAX_ERRORS, CONFIG_MAX_STRING, MAX_DURATION_CHARS
from failsoft.daemon.redact import url_password
from failsoft.daemon.safeyaml import BoundedLoader
from failsoft.probes.options import DURATION, SECRET

_ENV_RE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SENSITIVE_HEADER = re.compile(r"auth|key|token|secret|cookie|session", re.I)


def parse_duration(value: Any) -> float:
    """Seconds from ``250ms``, ``2s``, ``1m30s``, ``5m`` or a plain number of seconds; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int of 400 digits
            raise ValueError from None
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > MAX_DURATION_CHARS:  # the unit regex backtracks over long digit runs: refuse them first
            raise ValueError
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


class Reader:
    """Walks the YAML tree, collects errors with their paths, and remembers secrets it sees."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.errors: list[str] = []
        self.secrets: set[str] = set()
        self.dropped = 0  # problems beyond CONFIG_MAX_ERRORS: counted, not listed
        self._paths: set[str] = set()  # paths with an error (a set: 20,000 unknown keys were quadratic)

    def error(self, path: str, message: str) -> None:
        """Record one problem; only the first per path, since later ones follow from it."""
        if path and path in self._paths:
            return
        self._paths.add(path)
        if len(self.errors) >= CONFIG_MAX_ERRORS:
            self.dropped += 1
            return
        self.errors.append((f"{path}: " if path else "") + message)

    # -- ${VAR} substitution, applied to every string before it is read -----------------------------------

    def expand(self, node: Any, path: str) -> Any:
        if isinstance(node, str):
            return self._expand_str(node, path)
        if isinstance(node, list):
            return [self.expand(v, f"{path}[{i}]") for i, v in enumerate(node)]
        if isinstance(node, dict):
            return {k: self.expand(v, join(path, str(k))) for k, v in node.items()}
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
            if _holds_secret(path, name):  # never invite a secret's value into the file as a default
                self.error(path, f"environment variable {name} is not set (set it in the daemon's environment, "
                                 "e.g. from a Kubernetes Secret; a secret has no default in the file)")
            else:
                self.error(path, f"environment variable {name} is not set (set it, or write ${{{name}:-default}})")
            return ""

        text = _ENV_RE.sub(sub, text)
        if len(text) > CONFIG_MAX_STRING:  # a 10 MB admin_token would be copied and scanned by every redaction
            self.error(path, f"is {len(text)} characters long; at most {CONFIG_MAX_STRING} are allowed")
            return ""
        return text

    # -- typed values -------------------------------------------------------------------------------------

    def mapping(self, node: Any, path: str, allowed: list[str] | None = None) -> dict[str, Any]:
        """``node`` as a mapping with string keys; keys outside ``allowed`` (when given) are errors."""
        if node is None:
            return {}
        if not isinstance(node, dict):
            self.error(path, f"expected a mapping of keys to values, got {type_name(node)}")
            return {}
        if allowed is not None:
            allowed = list(allowed)
            for key in node:
                if key not in allowed:
                    self.error(join(path, str(key)), unknown_key(str(key), allowed))
        return {str(k): v for k, v in node.items()}

    def value(self, hint: Any, node: Any, path: str, *, secret: bool = False) -> Any:
        """Convert ``node`` to ``hint``; on failure record an error and return None."""
        shown = "(hidden)" if secret else show(node)
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
            return {k: str(self.value(str, v, join(path, k))) for k, v in m.items()}
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
            fpath = join(path, f.name)
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
            if value is None and (raw is not None or not optional(hints[f.name])):
                if raw is None and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    self.error(fpath, "is required")
                continue  # error recorded; keep going to find more
            values[f.name] = value
        try:
            return cls(**values)
        except TypeError:
            return None  # a required field was missing or invalid; already reported


# Fields that carry credentials (DSNs and URLs may hold a password), and variable names that say they hold one.
_SECRET_FIELDS = frozenset({"api_key", "admin_token", "report_token", "token", "password", "dsn", "url"})
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|DSN|DATABASE_URL|REDIS_URL", re.I)


def _holds_secret(path: str, variable: str) -> bool:
    """Whether ``${variable}`` at ``path`` is (or may be) a secret."""
    parts = re.sub(r"\[\d+\]", "", path).split(".")
    return parts[-1] in _SECRET_FIELDS or "headers" in parts[:-1] or bool(_SECRET_NAME.search(variable))


def optional(hint: Any) -> bool:
    return get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint)


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.$*-]{1,64}")


def join(path: str, key: str) -> str:
    """``path.key``; a key that is not a plain name is shown quoted and cut, so no error line quotes a long or
    strange text from the file (a policy file that is really /etc/shadow)."""
    if not _PLAIN_KEY.fullmatch(key):
        key = repr(key[:32] + ("..." if len(key) > 32 else ""))
    return f"{path}.{key}" if path else key


def type_name(node: Any) -> str:
    if node is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(type(node), "a number")


def show(node: Any) -> str:
    if isinstance(node, dict | list) or node is None:
        return type_name(node)
    text = repr(node[:60] if isinstance(node, str) else node)
    return text if len(text) <= 60 else text[:57] + "...'"


def unknown_key(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key[:64], allowed, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown key{hint} (expected one of: {', '.join(sorted(allowed))})"


# The loader config files are read with; kept under its old name for callers of this module.
StrictLoader = BoundedLoader
