"""Deploy-time settings from the environment, over the file: FAILSOFT_LISTEN, FAILSOFT_SERVICE, FAILSOFT_POD.

One ConfigMap serves every pod and every workload kind, while the address to bind, the app's name and the pod's
name are known only where it is deployed (the Kubernetes component sets them, the service from the app's label
through the downward API). So these variables win over the file. Each is checked here, with an error that names
the variable, not a YAML path the user never wrote. An empty variable counts as unset (``value: ""``).
"""

from __future__ import annotations

import re
from collections.abc import Container, Mapping
from typing import Any

from failsoft.daemon.yamlread import parse_listen

# variable -> (YAML path it overrides, what it must look like)
OVERRIDES: Mapping[str, tuple[tuple[str, ...], str]] = {
    "FAILSOFT_LISTEN": (("http", "listen"), "host:port like 0.0.0.0:8765 or [::]:8765 (port 0 picks a free one)"),
    "FAILSOFT_SERVICE": (("service",), "a name without spaces, at most 200 characters, like checkout-api"),
    "FAILSOFT_POD": (("pod",), "a name without spaces, at most 253 characters, like checkout-api-7d9f-x2v4q"),
}
_NAME = re.compile(r"^[^\s\x00-\x1f\x7f]{1,253}$")


def _valid(variable: str, value: str) -> bool:
    if variable == "FAILSOFT_LISTEN":
        try:
            parse_listen(value)
        except ValueError:
            return False
        return True
    limit = 200 if variable == "FAILSOFT_SERVICE" else 253
    return bool(_NAME.match(value)) and len(value) <= limit


def apply_env_overrides(data: Any, env: Mapping[str, str], top_keys: Container[str]) -> tuple[list[str], list[str]]:
    """Write each set variable into ``data`` (the parsed YAML, changed in place) at its path.

    Returns (notes, errors): a note for each value taken from the environment (check-config prints it), and an
    error for each unusable value, as ``VARIABLE: expected ..., got '...'``. A variable whose setting this
    version does not have (``pod`` without fleet mode) is ignored.
    """
    notes: list[str] = []
    errors: list[str] = []
    if not isinstance(data, dict):
        return notes, errors
    for variable, (path, expected) in OVERRIDES.items():
        value = env.get(variable, "")
        if not value or path[0] not in top_keys:
            continue
        if not _valid(variable, value):
            errors.append(f"{variable}: expected {expected}, got {value!r}")
            continue
        node = data
        for key in path[:-1]:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                break  # the file's own error (not a mapping) is reported at its path
            node = child
        else:
            before = node.get(path[-1])
            node[path[-1]] = value
            was = f" (the file says {before})" if before not in (None, value) else ""
            notes.append(f"{'.'.join(path)}: {value} from {variable}{was}")
    return notes, errors
