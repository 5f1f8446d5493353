"""``failsoft fleet [--url URL]``: the daemon's ``GET /fleet`` as a table."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any

EXIT_OK, EXIT_NOT_AVAILABLE, EXIT_UNREACHABLE = 0, 1, 3


def format_fleet(fleet: dict[str, Any]) -> str:
    """The leader, the probers and a table of live pods."""
    lines = [f"{fleet.get('service')}: leader {fleet.get('leader') or '(none)'}"]
    for dep, pod in sorted((fleet.get("probers") or {}).items()):
        lines.append(f"  prober of {dep}: {pod or '(none: every pod probes it)'}")
    rows = [("POD", "LEVEL", "SEQ", "BOOT", "UPDATED")]
    for p in fleet.get("pods") or []:
        mark = " *" if p.get("pod") == fleet.get("leader") else ""
        rows.append((f"{p.get('pod')}{mark}", str(p.get("level")), str(p.get("seq")), str(p.get("boot")),
                     str(p.get("updated_at"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines.append("")
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append(f"  ({len(rows) - 1} live pods; * = leader)")
    return "\n".join(lines)


def show_fleet(url: str) -> int:
    """Print the fleet; 0 when shown, 1 when the daemon answers without one (fleet off, Redis away), 3 unreachable."""
    if not url.startswith(("http://", "https://")):
        print(f"failsoft: --url must start with http:// or https://, got {url!r}", file=sys.stderr)
        return EXIT_UNREACHABLE
    request = urllib.request.Request(url.rstrip("/") + "/fleet", headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - http(s) only, checked above
            body = json.load(resp)
    except urllib.error.HTTPError as exc:
        try:
            message = json.load(exc)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {exc.code}"
        print(f"failsoft: {message}", file=sys.stderr)
        return EXIT_NOT_AVAILABLE
    except (OSError, ValueError):
        print(f"failsoft: cannot reach the daemon at {url}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(format_fleet(body))
    return EXIT_OK
