"""Hysteresis: a worse level is published at once, a better one only after it has held for ``recover_after``.

Levels are handled as severities (0 = best). For every severity ``i`` better than the published one the
machine remembers since when the target has been at least as good as ``i`` without a break. Severity ``i``
may be published once that has lasted ``recover_after``; the best such ``i`` wins. This keeps two promises:
the published level is never better than the target, and input that flaps within ``recover_after`` never
produces an upgrade.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class LevelMachine:
    """The published severity (None before the first target) and the hold timers for better ones."""

    recover_after: float
    published: int | None = None
    target: int | None = None
    good_since: tuple[float | None, ...] = ()

    def step(self, target: int, now: float) -> LevelMachine:
        """Take the current target severity at time ``now`` (monotonic seconds)."""
        if self.published is None or target >= self.published:
            # Worse (or the same): publish at once, nothing better is pending any more.
            return replace(self, published=target, target=target, good_since=(None,) * (target + 1))
        since = tuple(
            (self.good_since[i] if self.good_since[i] is not None else now) if i >= target else None
            for i in range(self.published)
        )
        return replace(self, target=target, good_since=since).advance(now)

    def advance(self, now: float) -> LevelMachine:
        """Publish the best better severity whose hold has lasted ``recover_after`` by ``now``."""
        if self.published is None:
            return self
        for i, since in enumerate(self.good_since[: self.published]):
            if since is not None and now - since >= self.recover_after:
                return replace(self, published=i, good_since=(*self.good_since[:i], None))
        return self

    def deadline(self) -> float | None:
        """When ``advance`` may next publish something better, or None when nothing is pending."""
        if self.published is None:
            return None
        pending = [s for s in self.good_since[: self.published] if s is not None]
        return min(pending) + self.recover_after if pending else None
