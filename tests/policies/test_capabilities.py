"""The capabilities rule: a level without its own list inherits the nearest better level's; check-config says so;
the documented example policy (docs/configuration.md) and the level table (docs/how-it-works.md) agree."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from hypothesis import given
from hypothesis import strategies as st

from failsoft.daemon.config import parse_config
from failsoft.policies.rules import Policy

ROOT = Path(__file__).resolve().parents[2]
LEVELS = ("full", "degraded", "limited", "cache_only")


def test_a_level_without_a_list_inherits_the_nearest_better_one() -> None:
    """degraded takes full's list, limited its own, cache_only the one above it that has a list (limited)."""
    policy = Policy(levels=LEVELS, capabilities={"full": ("chat", "charge"), "limited": ("charge",)})
    assert policy.capabilities_for("full") == ("chat", "charge")
    assert policy.capabilities_for("degraded") == ("chat", "charge")
    assert policy.capabilities_for("limited") == ("charge",)
    assert policy.capabilities_for("cache_only") == ("charge",)


def test_an_empty_list_is_a_list_and_nothing_above_means_nothing() -> None:
    """``cache_only: []`` allows nothing (it is its own list); a level with no list at or above it allows nothing;
    a policy without capabilities says nothing (None)."""
    policy = Policy(levels=LEVELS, capabilities={"degraded": ("search",), "cache_only": ()})
    assert policy.capabilities_for("full") == ()
    assert policy.capabilities_for("limited") == ("search",)
    assert policy.capabilities_for("cache_only") == ()
    assert Policy(levels=LEVELS).capabilities_for("degraded") is None


@given(st.dictionaries(st.sampled_from(LEVELS), st.lists(st.sampled_from(["a", "b", "c"]), unique=True).map(tuple)))
def test_every_level_gets_the_list_of_the_nearest_level_at_or_above_it(lists: dict[str, tuple[str, ...]]) -> None:
    """For any set of lists: a level's capabilities are its own list, else those of the closest better level
    with one, else nothing."""
    policy = Policy(levels=LEVELS, capabilities=lists)
    for i, level in enumerate(LEVELS):
        above = [lists[lv] for lv in reversed(LEVELS[: i + 1]) if lv in lists]
        assert policy.capabilities_for(level) == (above[0] if above else ())


def test_check_config_says_what_each_level_without_a_list_gets() -> None:
    """The summary of a valid config notes the inherited lists, and a level that allows nothing because no level
    at or above it has a list."""
    config = parse_config("""
dependencies: {db: {kind: tcp, address: "127.0.0.1:1"}}
policy:
  rules: [{level: cache_only, when: {any_down: [db]}}]
  capabilities: {degraded: [chat, charge], cache_only: [search]}
""", {})
    assert "policy.capabilities: limited has no list: it inherits degraded's [chat, charge]" in config.notes
    assert "policy.capabilities: full has no list and no better level has one: it allows nothing" in config.notes


def test_the_documented_example_policy_and_the_level_table_agree() -> None:
    """The configuration example in docs/configuration.md gives each level exactly the capabilities the level table
    in docs/how-it-works.md says."""
    config_page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    levels_page = (ROOT / "docs" / "how-it-works.md").read_text(encoding="utf-8")
    block = re.search(r"# Configuration.*?```yaml\n(.*?)```", config_page, re.S)
    assert block, "no configuration example in docs/configuration.md"
    policy_yaml = yaml.safe_load(block[1])["policy"]
    policy = Policy(levels=tuple(policy_yaml["levels"]),
                    capabilities={k: tuple(v) for k, v in policy_yaml["capabilities"].items()})
    table = re.search(r"## Service levels.*?\n(\| level .*?)\n\n", levels_page, re.S)
    assert table, "no level table in docs/how-it-works.md"
    documented = {}
    for row in table[1].splitlines()[2:]:
        level, meaning = (c.strip() for c in row.strip("|").split("|", 1))
        documented[level.strip("`")] = meaning
    assert list(documented) == list(policy.levels)
    for level, meaning in documented.items():
        caps = policy.capabilities_for(level)
        assert caps is not None
        listed = re.findall(r"`(\w+)`", meaning.rpartition(":")[2]) if "`" in meaning.rpartition(":")[2] else None
        if "same capabilities" in meaning:
            better = policy.levels[policy.levels.index(level) - 1]
            assert caps == policy.capabilities_for(better), level
        else:
            assert listed is not None and tuple(listed) == caps, (level, listed, caps)


def test_a_policy_without_capabilities_gets_no_capability_notes() -> None:
    """No ``capabilities`` at all: nothing is inherited and check-config says nothing about capabilities."""
    config = parse_config('dependencies: {db: {kind: tcp, address: "127.0.0.1:1"}}\n'
                          "policy: {rules: [{level: cache_only, when: {any_down: [db]}}]}", {})
    assert not [n for n in config.notes if n.startswith("policy.capabilities")]
    assert config.policy.capabilities_for("degraded") is None
