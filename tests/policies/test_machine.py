"""failsoft.policies.machine.LevelMachine: worse at once, better only after it held for ``recover_after``.

Examples first, then property tests against a small reference model of the promise in the module docstring.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from failsoft.policies.machine import LevelMachine

R = 5.0  # recover_after used by the examples


def run(machine: LevelMachine, inputs: list[tuple[float, int]]) -> list[int]:
    """Step through (time, target) inputs; the published severity after each."""
    out = []
    for now, target in inputs:
        machine = machine.step(target, now)
        assert machine.published is not None
        out.append(machine.published)
    return out


def test_the_first_target_is_published_at_once() -> None:
    """Before the first target nothing is published; the first one is taken as it is, good or bad."""
    assert LevelMachine(R).published is None
    assert LevelMachine(R).step(0, 0.0).published == 0
    assert LevelMachine(R).step(3, 0.0).published == 3


def test_worse_is_immediate() -> None:
    """A worse target is published in the same step, with no hold."""
    m = LevelMachine(R).step(0, 0.0).step(3, 0.001)
    assert m.published == 3


def test_better_waits_for_recover_after_then_is_published() -> None:
    """A better target is held back until it has lasted recover_after, then published by advance()."""
    m = LevelMachine(R).step(3, 0.0).step(0, 10.0)
    assert m.published == 3
    assert m.deadline() == 15.0
    assert m.advance(14.999).published == 3
    assert m.advance(15.0).published == 0
    assert m.advance(15.0).deadline() is None


def test_a_break_in_the_better_target_restarts_the_hold() -> None:
    """Going back to the bad target resets the timer: the hold must be unbroken."""
    m = LevelMachine(R).step(3, 0.0).step(0, 1.0).step(3, 4.0).step(0, 5.0)
    assert m.advance(6.5).published == 3  # 5.5 s since the first good sample, but broken at 4.0
    assert m.advance(10.0).published == 0


def test_the_best_level_that_has_held_is_published() -> None:
    """From cache_only to limited (held) to full (not yet held): limited is published first, then full."""
    m = LevelMachine(R).step(3, 0.0).step(2, 1.0).step(0, 4.0)
    assert m.advance(5.9).published == 3
    m = m.advance(6.0)
    assert m.published == 2  # the target has been at least as good as limited since 1.0
    assert m.deadline() == 9.0
    assert m.advance(9.0).published == 0


def test_an_intermediate_level_keeps_its_hold_while_the_target_improves() -> None:
    """Target 2 at t=1 then 1 at t=3: level 2 has held since t=1 (the target stayed at least that good)."""
    m = LevelMachine(R).step(3, 0.0).step(2, 1.0).step(1, 3.0)
    assert m.advance(6.0).published == 2
    assert m.advance(8.0).published == 1


def test_recover_after_zero_publishes_better_at_once() -> None:
    """With no hysteresis configured, better is as immediate as worse."""
    assert LevelMachine(0.0).step(3, 0.0).step(0, 0.0).published == 0


def test_the_same_target_again_changes_nothing() -> None:
    """Repeating the published target keeps it and has nothing pending."""
    m = LevelMachine(R).step(2, 0.0).step(2, 100.0)
    assert m.published == 2
    assert m.deadline() is None


# -- properties ------------------------------------------------------------------------------------------

LEVELS = 4
targets = st.integers(min_value=0, max_value=LEVELS - 1)
gaps = st.floats(min_value=0.0, max_value=3 * R, allow_nan=False)
timelines = st.lists(st.tuples(gaps, targets), min_size=1, max_size=40)


def timeline(steps: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """(gap, target) pairs to (absolute time, target)."""
    t, out = 0.0, []
    for gap, target in steps:
        t += gap
        out.append((t, target))
    return out


def reference(inputs: list[tuple[float, int]], recover_after: float) -> list[int]:
    """The promise written out plainly: worse at once; better level i once the target has been <= i at every
    input for an unbroken run that started at least recover_after ago; the best such i wins."""
    published: list[int] = []
    for k, (now, target) in enumerate(inputs):
        if not published or target >= published[-1]:
            published.append(target)
            continue
        current = published[-1]
        choice = current
        for i in range(target, current):
            start = k
            while start > 0 and inputs[start - 1][1] <= i and published[start - 1] > i:
                start -= 1
            if now - inputs[start][0] >= recover_after:
                choice = i
                break
        published.append(choice)
    return published


@settings(max_examples=300)
@given(timelines)
def test_published_is_never_better_than_the_target(steps: list[tuple[float, int]]) -> None:
    """Whatever the input, the published severity is at least the target's after every step and advance."""
    m = LevelMachine(R)
    for now, target in timeline(steps):
        m = m.step(target, now)
        assert m.published is not None
        assert m.published >= target
        later = m.advance(now + 100 * R)
        assert later.published is not None
        assert later.published >= target


@settings(max_examples=300)
@given(timelines)
def test_worse_is_always_immediate(steps: list[tuple[float, int]]) -> None:
    """A target worse than the published level is published in the very same step."""
    m = LevelMachine(R)
    for now, target in timeline(steps):
        before = m.published
        m = m.step(target, now)
        if before is None or target > before:
            assert m.published == target


@settings(max_examples=300)
@given(timelines)
def test_matches_the_reference_model(steps: list[tuple[float, int]]) -> None:
    """Every published level, step by step, is what the plain statement of the promise says."""
    inputs = timeline(steps)
    assert run(LevelMachine(R), inputs) == reference(inputs, R)


@st.composite
def flapping(draw: st.DrawFn) -> list[tuple[float, int]]:
    """Bad samples at the worst level, and between them bursts of better samples that span less than R."""
    worst = LEVELS - 1
    t, inputs = 0.0, [(0.0, worst)]
    for _ in range(draw(st.integers(1, 8))):
        start = t + draw(st.floats(min_value=0.0, max_value=R, allow_nan=False))
        offsets = sorted(draw(st.lists(st.floats(min_value=0.0, max_value=0.99 * R), min_size=1, max_size=6)))
        burst = [(start + o, draw(st.integers(0, worst - 1))) for o in offsets]
        inputs += burst
        t = burst[-1][0] + draw(st.floats(min_value=0.0, max_value=3 * R, allow_nan=False))
        inputs.append((t, worst))
    return inputs


@settings(max_examples=300)
@given(flapping())
def test_flapping_within_recover_after_never_upgrades(inputs: list[tuple[float, int]]) -> None:
    """Input that is better only for stretches shorter than recover_after never publishes anything better."""
    assert set(run(LevelMachine(R), inputs)) == {LEVELS - 1}


@settings(max_examples=300)
@given(timelines, st.floats(min_value=0.0, max_value=3 * R, allow_nan=False))
def test_an_upgrade_only_after_the_target_held_for_recover_after(steps: list[tuple[float, int]], r: float) -> None:
    """Each time the published level gets better, the target was at least that good over the last recover_after."""
    inputs = timeline(steps)
    published = run(LevelMachine(r), inputs)
    for k in range(1, len(inputs)):
        if published[k] < published[k - 1]:
            now, level = inputs[k][0], published[k]
            # The input in force at now - r (the last one at least r old), and every input since. "At least r old"
            # is measured as the machine measures it (now - t >= r): `t <= now - r` rounds differently for some
            # floats (hypothesis found since = 1.1e-308), which is float arithmetic, not a broken promise.
            in_force = [j for j in range(k + 1) if now - inputs[j][0] >= r]
            assert in_force, "an upgrade needs an input at least recover_after old"
            assert all(target <= level for _, target in inputs[in_force[-1]: k + 1])


@settings(max_examples=200)
@given(timelines)
def test_deadline_is_exactly_when_advance_first_publishes_better(steps: list[tuple[float, int]]) -> None:
    """advance() changes nothing before deadline() and something at it: a timer set there is never early or late."""
    m = LevelMachine(R)
    for now, target in timeline(steps):
        m = m.step(target, now)
    deadline = m.deadline()
    if deadline is None:
        assert m.advance(1e9).published == m.published
    else:  # (a nanosecond of slack for float rounding of since + recover_after)
        assert m.advance(deadline - 1e-6).published == m.published
        assert m.advance(deadline + 1e-9).published != m.published
