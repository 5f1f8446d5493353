"""What a terminal shows of the State: the level line and the dependency table (`failsoft status`, the demo)."""

from __future__ import annotations

from typing import Any

LAST_ERROR_WIDTH = 100  # a terminal row stays readable; `curl /service-level` has the whole text


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
    if state.get("starting"):
        lines.append("  starting: some dependencies have not answered yet (startup_grace)")
    rows = [("DEPENDENCY", "KIND", "STATE", "BREAKER", "LATENCY", "REASON", "LAST ERROR")]
    for name, d in (state.get("dependencies") or {}).items():
        latency = f"{d['latency_ms']:.1f}ms" if d.get("latency_ms") is not None else "-"
        rows.append((name, d.get("kind", ""), d.get("state", ""), d.get("breaker", ""), latency,
                     d.get("reason") or "", _short(d.get("last_error"))))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines.append("")
    lines += ["  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _short(text: Any, width: int = LAST_ERROR_WIDTH) -> str:
    """One line of at most ``width`` characters (the State holds the whole text)."""
    if not text:
        return ""
    line = " ".join(str(text).split())
    return line if len(line) <= width else line[: width - 3] + "..."
