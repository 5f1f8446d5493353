"""What a terminal shows of the State: the level line and the dependency table (`failsoft status`, the demo)."""

from __future__ import annotations

from typing import Any


def format_status(state: dict[str, Any]) -> str:
    """The level line and a table of dependencies, as ``failsoft status`` prints them."""
    lines = [f"{state.get('service')}: {state.get('level')} (seq {state.get('seq')}, since {state.get('since')})"]
    if state.get("reason"):
        lines.append(f"  reason: {state['reason']}")
    if state.get("active_llm"):
        lines.append(f"  active LLM: {state['active_llm']}")
    if state.get("override"):
        o = state["override"]
        lines.append(f"  override: {o.get('level')} until {o.get('until')} ({o.get('reason')})")
    rows = [("DEPENDENCY", "KIND", "STATE", "BREAKER", "LATENCY", "REASON")]
    for name, d in (state.get("dependencies") or {}).items():
        latency = f"{d['latency_ms']:.1f}ms" if d.get("latency_ms") is not None else "-"
        rows.append((name, d.get("kind", ""), d.get("state", ""), d.get("breaker", ""), latency,
                     d.get("reason") or ""))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines.append("")
    lines += ["  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)
