"""The OpenAPI 3.1 description of the HTTP API, merged from one fragment per area and served at ``/openapi.json``.

Each area of the API describes its endpoints in its own file, ``daemon/openapi/<area>.yaml`` (package data), so
that the people adding endpoints never edit the same lines. ``core.yaml`` holds the document's head (``openapi``,
``info``, ``tags``) and the core endpoints; every other fragment adds ``paths`` and ``components`` (and may add
``tags``). The same path, component or tag defined twice is an error naming both files: a merge never silently
picks one. ``python -m failsoft.daemon.openapi`` prints the merged document (``docs/openapi.json`` is that output).

Some values depend on the daemon's config: a schema marked ``x-failsoft-enum: levels`` (or ``dependencies``) gets
an ``enum`` of the running policy's levels (or the configured dependency names), so the description a daemon
serves says exactly what that daemon accepts. ``docs/openapi.json`` is rendered for the built-in policy's levels
and the dependencies ``db`` and ``cache``.
"""

from __future__ import annotations

import copy
import functools
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web

FRAGMENTS = Path(__file__).resolve().parent / "openapi"
CORE = "core.yaml"
# What a fragment other than core.yaml may hold: its own endpoints and components. ``openapi`` and ``info`` are
# allowed so that a fragment can be a valid document on its own; they must agree with core's / are ignored.
FRAGMENT_KEYS = frozenset({"openapi", "info", "paths", "components", "tags"})
DEFAULT_LEVELS = ("full", "degraded", "limited", "cache_only")
DEFAULT_DEPENDENCIES = ("db", "cache")
ENUM_MARK = "x-failsoft-enum"


class OpenApiError(Exception):
    """A fragment is unreadable, or two fragments define the same thing; the message names the files."""


def _load(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise OpenApiError(f"{path.name}: cannot read the OpenAPI fragment: {exc}") from None
    if not isinstance(data, dict):
        raise OpenApiError(f"{path.name}: an OpenAPI fragment must be a mapping, got {type(data).__name__}")
    return data


def merge(fragments: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """One document from ``(name, fragment)`` pairs, the first being the core (which gives the head).

    ``paths``, each ``components`` section and ``tags`` (by name) are united; a key present in two fragments
    raises :class:`OpenApiError` naming both.
    """
    if not fragments:
        raise OpenApiError("no OpenAPI fragment to merge")
    core_name, core = fragments[0]
    doc = copy.deepcopy(core)
    doc.setdefault("paths", {})
    owner: dict[tuple[str, ...], str] = {("paths", p): core_name for p in doc["paths"]}
    for section, items in doc.get("components", {}).items():
        owner.update({("components", section, k): core_name for k in items})
    owner.update({("tags", t["name"]): core_name for t in doc.get("tags", [])})
    for name, fragment in fragments[1:]:
        unknown = sorted(set(fragment) - FRAGMENT_KEYS)
        if unknown:
            raise OpenApiError(f"{name}: unexpected top-level key(s) {', '.join(unknown)}; a fragment holds "
                               f"{', '.join(sorted(FRAGMENT_KEYS))}")
        if "openapi" in fragment and fragment["openapi"] != core.get("openapi"):
            raise OpenApiError(f"{name}: openapi {fragment['openapi']!r} differs from {core_name}'s "
                               f"{core.get('openapi')!r}")
        for path, item in (fragment.get("paths") or {}).items():
            _claim(owner, ("paths", path), name)
            doc["paths"][path] = item
        for section, items in (fragment.get("components") or {}).items():
            target = doc.setdefault("components", {}).setdefault(section, {})
            for key, value in (items or {}).items():
                _claim(owner, ("components", section, key), name)
                target[key] = value
        for tag in fragment.get("tags") or []:
            _claim(owner, ("tags", tag["name"]), name)
            doc.setdefault("tags", []).append(tag)
    return doc


def _claim(owner: dict[tuple[str, ...], str], key: tuple[str, ...], name: str) -> None:
    if key in owner:
        raise OpenApiError(f"{name}: {'.'.join(key)} is already defined in {owner[key]}; "
                           "each path, component and tag belongs to one fragment")
    owner[key] = name


def fragment_files(directory: Path = FRAGMENTS) -> list[Path]:
    """The fragments: ``core.yaml`` first, then the others by name."""
    files = sorted(directory.glob("*.yaml"))
    core = [f for f in files if f.name == CORE]
    if not core:
        raise OpenApiError(f"{directory}: {CORE} is missing")
    return core + [f for f in files if f.name != CORE]


@functools.cache
def _base_document() -> dict[str, Any]:
    return merge([(f.name, _load(f)) for f in fragment_files()])


def document(levels: Iterable[str] = DEFAULT_LEVELS,
             dependencies: Iterable[str] = DEFAULT_DEPENDENCIES) -> dict[str, Any]:
    """The merged document for a daemon whose policy has ``levels`` and whose config names ``dependencies``."""
    doc = copy.deepcopy(_base_document())
    _fill_enums(doc, {"levels": list(levels), "dependencies": list(dependencies)})
    return doc


def _fill_enums(node: Any, values: dict[str, list[str]]) -> None:
    """Give every schema marked ``x-failsoft-enum: <name>`` the ``enum`` of that name's values."""
    if isinstance(node, dict):
        mark = node.get(ENUM_MARK)
        if mark is not None:
            if mark not in values:
                raise OpenApiError(f"{ENUM_MARK}: {mark!r} is not one of {', '.join(sorted(values))}")
            node["enum"] = values[mark]
        for value in node.values():
            _fill_enums(value, values)
    elif isinstance(node, list):
        for value in node:
            _fill_enums(value, values)


def render(levels: Iterable[str] = DEFAULT_LEVELS, dependencies: Iterable[str] = DEFAULT_DEPENDENCIES) -> bytes:
    """The document as ``GET /openapi.json`` serves it (indented JSON, a final newline)."""
    return orjson.dumps(document(levels, dependencies), option=orjson.OPT_INDENT_2) + b"\n"


def routes(levels: Iterable[str] = DEFAULT_LEVELS,
           dependencies: Iterable[str] = DEFAULT_DEPENDENCIES) -> list[web.RouteDef]:
    """``GET /openapi.json`` (and HEAD): rendered once, when the routes are built."""
    body = render(levels, dependencies)

    async def openapi_json(_: web.Request) -> web.Response:
        """``GET /openapi.json``: the OpenAPI 3.1 description of this daemon's HTTP API."""
        return web.Response(body=body, content_type="application/json", headers={"Cache-Control": "no-cache"})

    return [web.get("/openapi.json", openapi_json)]


def main(argv: Sequence[str] | None = None) -> int:
    """Print the merged document (for ``docs/openapi.json``); exit 2 with the reason when fragments clash."""
    del argv
    try:
        sys.stdout.buffer.write(render())
    except OpenApiError as exc:
        print(f"openapi: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
