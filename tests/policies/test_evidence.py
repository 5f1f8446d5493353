"""failsoft.policies.evidence: which failures, after a dropped kept connection, prove a crash."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from failsoft.policies.evidence import CONCLUSIVE_AFTER_DROP, Evidence
from failsoft.policies.model import OK, Outcome, Verdict, degraded

REFUSED = Outcome(Verdict.FAILURE, "connection_refused")
REASONS = st.sampled_from(["connection_refused", "connection_reset", "connection_closed", "timeout", "dns", "tls",
                           "http_5xx", None])
OUTCOMES = st.builds(Outcome, st.sampled_from(list(Verdict)), REASONS)


def test_nothing_is_conclusive_without_a_dropped_connection() -> None:
    """A refused connect alone proves nothing: fresh evidence is empty."""
    assert not Evidence().conclusive(REFUSED)


def test_a_refusal_after_a_drop_is_conclusive() -> None:
    """A dropped connection, then a refused connect: conclusive."""
    assert Evidence().lost().conclusive(REFUSED)


@given(OUTCOMES)
def test_only_a_refused_failure_is_conclusive(outcome: Outcome) -> None:
    """After a drop, exactly the FAILURE outcomes whose reason is a refusal are conclusive: never a timeout, a
    reset, an answer or a fatal error (those have their own paths)."""
    expected = outcome.verdict is Verdict.FAILURE and outcome.reason in CONCLUSIVE_AFTER_DROP
    assert Evidence().lost().conclusive(outcome) is expected


@given(st.lists(OUTCOMES, max_size=8))
def test_an_answer_clears_the_evidence_and_a_failure_keeps_it(outcomes: list[Outcome]) -> None:
    """The evidence is "dropped since the last answer": it survives failures and ends at any OK or DEGRADED."""
    evidence = Evidence().lost()
    for outcome in outcomes:
        evidence = evidence.after(outcome)
    answered = any(o.verdict in (Verdict.OK, Verdict.DEGRADED) for o in outcomes)
    assert evidence.connection_lost is not answered


def test_an_answer_ends_it() -> None:
    """OK and DEGRADED both mean the server is there."""
    assert not Evidence().lost().after(OK).connection_lost
    assert not Evidence().lost().after(degraded("slow")).connection_lost
