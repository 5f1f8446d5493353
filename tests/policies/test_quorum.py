"""failsoft.policies.quorum: the fleet's level by majority (ties to the worse) and confirm_down counting."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from failsoft.policies.quorum import down_confirmed, fleet_level

ORDER = ("full", "degraded", "limited", "cache_only")


def test_the_most_common_level_wins() -> None:
    """Three pods at full and one at cache_only publish full."""
    assert fleet_level(["full", "full", "cache_only", "full"], ORDER) == "full"


def test_a_tie_goes_to_the_worse_level() -> None:
    """Two and two: the worse of the two levels."""
    assert fleet_level(["full", "limited", "limited", "full"], ORDER) == "limited"
    assert fleet_level(["degraded", "full"], ORDER) == "degraded"


def test_unknown_and_foreign_levels_do_not_count() -> None:
    """A pod still starting (unknown) or with a level this policy lacks is not counted; none left: None."""
    assert fleet_level(["unknown", "unknown", "full"], ORDER) == "full"
    assert fleet_level(["unknown", "weird"], ORDER) is None
    assert fleet_level([], ORDER) is None


@given(st.lists(st.sampled_from([*ORDER, "unknown"]), max_size=30))
def test_the_fleet_level_is_a_most_common_level_and_no_worse_level_is_as_common(levels: list[str]) -> None:
    """The answer is one of the most common known levels, and the worst among them."""
    got = fleet_level(levels, ORDER)
    counts = Counter(level for level in levels if level in ORDER)
    if not counts:
        assert got is None
        return
    assert got is not None and counts[got] == max(counts.values())
    assert all(counts[level] < counts[got] for level in ORDER[ORDER.index(got) + 1:])


def test_down_is_confirmed_by_k_failures_or_by_everyone_who_answered() -> None:
    """K failures confirm at once; fewer confirm only when the window is over and no pod saw it up."""
    assert down_confirmed(2, 0, 2, window_over=False)
    assert not down_confirmed(1, 0, 2, window_over=False)
    assert down_confirmed(1, 0, 2, window_over=True)  # a fleet of one pod
    assert not down_confirmed(1, 1, 2, window_over=True)  # another pod reaches it: not down for the fleet
    assert down_confirmed(3, 1, 3, window_over=False)
