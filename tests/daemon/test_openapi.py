"""failsoft.daemon.openapi: merging the per-area fragments into one document, and refusing clashes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from failsoft.daemon import openapi


def _fragments(tmp: Path, **files: dict[str, Any]) -> Path:
    for name, data in files.items():
        (tmp / f"{name}.yaml").write_text(yaml.safe_dump(data))
    return tmp


CORE = {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "tags": [{"name": "level"}],
        "paths": {"/a": {"get": {"responses": {"200": {"description": "ok"}}}}},
        "components": {"schemas": {"Error": {"type": "object"}}}}


def test_fragments_merge_paths_components_and_tags(tmp_path: Path) -> None:
    """core.yaml first, then each fragment: their paths, components and tags are united."""
    d = _fragments(tmp_path, core=CORE, fleet={
        "openapi": "3.1.0", "paths": {"/fleet": {"get": {"responses": {"200": {"description": "ok"}}}}},
        "components": {"schemas": {"Fleet": {"type": "object"}}, "parameters": {"P": {"name": "p", "in": "query"}}},
        "tags": [{"name": "fleet"}]})
    files = openapi.fragment_files(d)
    assert [f.name for f in files] == ["core.yaml", "fleet.yaml"]
    doc = openapi.merge([(f.name, yaml.safe_load(f.read_text())) for f in files])
    assert set(doc["paths"]) == {"/a", "/fleet"}
    assert set(doc["components"]["schemas"]) == {"Error", "Fleet"}
    assert doc["components"]["parameters"]["P"]["name"] == "p"
    assert [t["name"] for t in doc["tags"]] == ["level", "fleet"]


@pytest.mark.parametrize(("fragment", "words"), [
    ({"paths": {"/a": {}}}, "x.yaml: paths./a is already defined in core.yaml"),
    ({"components": {"schemas": {"Error": {}}}}, "x.yaml: components.schemas.Error is already defined in core.yaml"),
    ({"tags": [{"name": "level"}]}, "x.yaml: tags.level is already defined in core.yaml"),
    ({"servers": []}, "x.yaml: unexpected top-level key(s) servers"),
    ({"openapi": "3.0.3"}, "x.yaml: openapi '3.0.3' differs from core.yaml's '3.1.0'"),
])
def test_a_clash_between_fragments_fails_loudly(fragment: dict[str, Any], words: str) -> None:
    """The same path, component or tag in two fragments (or a key a fragment may not hold) is an error naming
    both files, never a silent pick."""
    with pytest.raises(openapi.OpenApiError) as exc:
        openapi.merge([("core.yaml", CORE), ("x.yaml", fragment)])
    assert words in str(exc.value)


def test_a_missing_core_fragment_is_an_error(tmp_path: Path) -> None:
    """Without core.yaml there is no document head: an error naming the directory and the file."""
    _fragments(tmp_path, fleet={"paths": {}})
    with pytest.raises(openapi.OpenApiError, match=r"core\.yaml is missing"):
        openapi.fragment_files(tmp_path)


def test_the_module_prints_the_served_document() -> None:
    """``python -m failsoft.daemon.openapi`` prints the document (what ``make openapi`` writes to docs/)."""
    result = subprocess.run([sys.executable, "-m", "failsoft.daemon.openapi"], capture_output=True, check=False,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == openapi.render()


def test_marked_schemas_get_the_configs_values() -> None:
    """``x-failsoft-enum: levels`` / ``dependencies`` become the given lists; an unknown mark is an error."""
    doc = openapi.document(levels=["up", "down"], dependencies=["pg"])
    assert doc["components"]["schemas"]["OverrideRequest"]["properties"]["level"]["enum"] == ["up", "down"]
    node = {"a": [{"type": "string", "x-failsoft-enum": "dependencies"}]}
    openapi._fill_enums(node, {"dependencies": ["pg", "cache"]})
    assert node["a"][0]["enum"] == ["pg", "cache"]
    with pytest.raises(openapi.OpenApiError, match="'colours' is not one of"):
        openapi._fill_enums({"x-failsoft-enum": "colours"}, {"levels": []})
