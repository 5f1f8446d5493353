"""Deprecated configuration keys: accepted with a warning for one minor version, then removed.

The promise (docs/releases.md): within a major version the config changes only by addition. A key that is renamed
or retired is listed here in the release that deprecates it; it keeps working (its value moves to the new key)
and every load warns with the YAML path and what to write instead. The next minor release removes the entry, and
then the old key is an unknown key like any other.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Deprecation:
    """``old`` (a dotted YAML path; ``*`` matches any one key, e.g. ``dependencies.*.probe_timeout``) is read as
    ``new`` (a key name in the same mapping), or is simply ignored when ``new`` is None."""

    old: str
    new: str | None
    since: str  # the release that deprecated it ("0.2")
    removed_in: str  # the next minor release ("0.3"): from then on the key is an error
    note: str = ""


# Nothing is deprecated yet. Add an entry in the release that deprecates a key, remove it one minor later.
DEPRECATIONS: tuple[Deprecation, ...] = ()


def _matches(node: Any, parts: list[str], path: str) -> Iterator[tuple[dict[str, Any], str, str]]:
    """(mapping, key, full path) for every place ``parts`` names in ``node``."""
    if not isinstance(node, dict) or not parts:
        return
    head, rest = parts[0], parts[1:]
    keys = [k for k in node if isinstance(k, str)] if head == "*" else [head]
    for key in keys:
        if key not in node:
            continue
        here = f"{path}.{key}" if path else key
        if rest:
            yield from _matches(node[key], rest, here)
        else:
            yield node, key, here


def apply_deprecations(data: Any, table: Sequence[Deprecation] = DEPRECATIONS) -> tuple[list[str], list[str]]:
    """Rewrite deprecated keys in ``data`` (the parsed YAML, changed in place) to their replacements.

    Returns (warnings, errors): one warning per deprecated key found, and an error where both the old and the new
    key are set (which one was meant cannot be known).
    """
    warnings: list[str] = []
    errors: list[str] = []
    for d in table:
        for mapping, key, path in list(_matches(data, d.old.split("."), "")):
            parent = path.rpartition(".")[0]
            new_path = f"{parent}.{d.new}" if parent and d.new else (d.new or "")
            if d.new is not None and d.new in mapping:
                errors.append(f"{path}: deprecated and replaced by {new_path}, which is also set; remove {path}")
                continue
            value = mapping.pop(key)
            if d.new is not None:
                mapping[d.new] = value
                what = f"write {new_path} instead"
            else:
                what = "it has no effect; remove it"
            extra = f" ({d.note})" if d.note else ""
            warnings.append(f"{path}: deprecated since {d.since} and removed in {d.removed_in}; {what}{extra}")
    return warnings, errors
