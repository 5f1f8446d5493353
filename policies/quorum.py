"""Fleet-wide decisions over what several pods report: pure, no IO.

- ``fleet_level``: the level the fleet publishes is the level of the most live pods; a tie goes to the worse one.
- ``down_confirmed``: with ``confirm_down: K``, a shared dependency is down for everyone once K pods' own probes
  failed, or every pod that answered when fewer than K could.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence


def fleet_level(levels: Iterable[str], order: Sequence[str]) -> str | None:
    """The most common of ``levels`` (ties: the worse, later in ``order``); None when no pod has a known level.

    Levels not in ``order`` (``unknown``, a level from a pod running another policy) are not counted.
    """
    counts = Counter(level for level in levels if level in order)
    if not counts:
        return None
    most = max(counts.values())
    return max((level for level, n in counts.items() if n == most), key=order.index)


def down_confirmed(failed: int, succeeded: int, wanted: int, window_over: bool) -> bool:
    """Whether a shared dependency is confirmed down.

    ``failed`` pods' own probes failed (the prober's included), ``succeeded`` pods' own probes succeeded, ``wanted``
    is ``confirm_down``. Confirmed as soon as ``failed >= wanted``; once the answering window is over, also when no
    pod disagreed (fewer live pods than ``wanted`` must not keep a dead dependency up forever).
    """
    if failed >= wanted:
        return True
    return window_over and succeeded == 0 and failed >= 1
