"""docs/schema loaded for jsonschema: every file registered under its file:// URI, so the relative ``$ref``s
between them (``../state.json#/$defs/time``) resolve as an editor resolves them."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "docs" / "schema"
EVENT_TYPES = tuple(sorted(p.stem for p in (SCHEMA_DIR / "events").glob("*.json")))


@cache
def _registry() -> Registry:
    resources = []
    for path in SCHEMA_DIR.rglob("*.json"):
        contents = {**json.loads(path.read_text(encoding="utf-8")), "$id": path.as_uri()}
        resources.append((path.as_uri(), Resource.from_contents(contents)))
    return Registry().with_resources(resources)


def validator(name: str) -> Draft202012Validator:
    """A validator for ``docs/schema/<name>`` (e.g. ``state.json``, ``events/resync.json``)."""
    uri = (SCHEMA_DIR / name).as_uri()
    schema = _registry().contents(uri)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator({"$ref": uri}, registry=_registry())


def problems(name: str, instance: Any) -> list[str]:
    """Every way ``instance`` breaks the schema ``name``, as ``path: message`` (empty when it conforms)."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator(name).iter_errors(instance)]
