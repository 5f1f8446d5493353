"""What the bench modules share: the figures they add, the table and the JSON they become, small helpers."""

from __future__ import annotations

import socket
import statistics
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Figure:
    """One row: a headline ``value`` in ``unit``, the samples behind it, and a note (a ratio to an anchor)."""

    what: str
    value: float | None
    unit: str
    samples: list[float] = field(default_factory=list)
    note: str = ""
    key: str = ""
    p99: float | None = None
    max: float | None = None

    def cells(self) -> tuple[str, str, str, str, str, str]:
        """The table's cells."""
        def fmt(x: float | None) -> str:
            if x is None:
                return ""
            return f"{x:,.0f} {self.unit}" if abs(x) >= 1000 else f"{x:.3g} {self.unit}"

        return (self.what, str(len(self.samples) or 1), fmt(self.value), fmt(self.p99), fmt(self.max), self.note)


class Rows:
    """The figures of one bench run, in the order they were measured, and the rows that had to be skipped."""

    def __init__(self) -> None:
        self.figures: list[Figure] = []
        self.skipped: list[tuple[str, str]] = []

    def add(self, figure: Figure) -> Figure:
        """Add a figure."""
        self.figures.append(figure)
        return figure

    def latency(self, what: str, seconds: list[float], key: str, *, note: str = "", unit: str = "ms",
                scale: float = 1000.0) -> Figure:
        """A row of p50 / p99 / max over latency samples given in seconds."""
        s = sorted(x * scale for x in seconds)
        p99 = s[min(len(s) - 1, int(len(s) * 0.99))]
        return self.add(Figure(what, statistics.median(s), unit, s, note, key, p99, s[-1]))

    def note(self, what: str, text: str) -> None:
        """A row with one figure given as text (e.g. ``"1,234 reports/s"``)."""
        self.add(Figure(what, None, "", note=text, key=what))

    def skip(self, what: str, why: str) -> None:
        """A row that could not be measured here, and why (printed under the table)."""
        self.skipped.append((what, why))

    def table(self) -> str:
        """A Markdown table (it pastes into docs/performance.md as it is)."""
        header = ("measurement", "n", "p50 / value", "p99", "max", "vs anchor")
        body = [f.cells() for f in self.figures]
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in [header]]
        lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in body]
        lines += [f"\nnot measured: {what}: {why}" for what, why in self.skipped]
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        """Every figure by key (``BENCH_JSON``)."""
        return {
            "figures": {f.key or f.what: {"what": f.what, "value": f.value, "unit": f.unit, "p99": f.p99,
                                          "max": f.max, "n": len(f.samples) or 1, "samples": f.samples,
                                          "note": f.note} for f in self.figures},
            "skipped": [{"what": w, "why": y} for w, y in self.skipped],
        }


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0) -> None:
    """Wait until ``url`` answers at all (any HTTP status)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def median(xs: list[float]) -> float:
    """The median."""
    return statistics.median(xs)


