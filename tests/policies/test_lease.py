"""failsoft.policies.lease: acquire / renew / follow / step down, driven by a manual clock.

Examples first, then a property test: pods with drifting clocks race for one lease held by a simulated Redis (a
key with a TTL on the server's own clock), with requests delayed and replies lost at random; two pods never act
as holder at the same moment, and a holder that cannot renew steps down before its key can expire.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from failsoft.policies.lease import (
    RENEW_EVERY,
    SAFETY,
    Action,
    Change,
    Lease,
    Reply,
    ReplyKind,
    decide,
    observe,
    start,
    step_down,
)

TTL = 3.0
T = TTL
ME, OTHER = "web-1/aaaaaa", "web-2/bbbbbb"
ACQUIRED = Reply(ReplyKind.ACQUIRED)
UNREACHABLE = Reply(ReplyKind.UNREACHABLE)


def test_a_new_lease_is_tried_after_a_spread_part_of_the_ttl() -> None:
    """The first attempt is spread over a tenth of the TTL, so N pods starting together do not stampede."""
    assert start(100.0, TTL, 0.0).next_try == 100.0
    assert 100.0 < start(100.0, TTL, 0.99).next_try < 100.0 + 0.1 * TTL
    assert decide(start(100.0, TTL, 0.5), 100.0) is Action.WAIT
    assert decide(start(100.0, TTL, 0.5), 100.2) is Action.ACQUIRE


def test_acquired_means_holding_until_before_the_ttl_counted_from_the_send() -> None:
    """The held time counts from when the request was sent, minus the safety margin; renewal comes a third in."""
    lease, change = observe(Lease(), ME, ACQUIRED, sent_at=10.0, now=10.2, ttl=TTL, spread=0.0)
    assert change is Change.ACQUIRED
    assert lease.holder == ME
    assert lease.held_until == 10.0 + TTL * (1 - SAFETY)
    assert lease.holding(10.2) and not lease.holding(10.0 + TTL)
    assert decide(lease, 10.5) is Action.WAIT
    assert decide(lease, 10.0 + RENEW_EVERY * TTL) is Action.RENEW


def test_a_renewal_is_not_news_and_moves_the_held_time() -> None:
    """Renewing what we hold changes nothing visible but the deadline."""
    lease, _ = observe(Lease(), ME, ACQUIRED, sent_at=10.0, now=10.0, ttl=TTL, spread=0.0)
    renewed, change = observe(lease, ME, ACQUIRED, sent_at=11.0, now=11.1, ttl=TTL, spread=0.0)
    assert change is None
    assert renewed.held_until == 11.0 + TTL * (1 - SAFETY)


def test_a_holder_that_cannot_renew_steps_down_before_its_key_can_expire() -> None:
    """Redis unreachable: the holder keeps acting only until its held time, then decide() says step down."""
    lease, _ = observe(Lease(), ME, ACQUIRED, sent_at=10.0, now=10.0, ttl=TTL, spread=0.0)
    t = 11.0
    while decide(lease, t) is not Action.STEP_DOWN:
        if decide(lease, t) is Action.RENEW:
            lease, change = observe(lease, ME, UNREACHABLE, sent_at=t, now=t + 0.01, ttl=TTL, spread=0.5)
            assert change is None
        t += 0.01
    assert t < 10.0 + TTL  # before the key (set at or after 10.0) can have expired in Redis
    assert lease.holding(t - 0.02) and not lease.holding(t)
    down, change = step_down(lease, t, TTL, 0.0)
    assert change is Change.STEPPED_DOWN and not down.holding(t)
    assert decide(down, t) is Action.WAIT and decide(down, down.next_try) is Action.ACQUIRE


def test_an_answer_arriving_after_the_held_time_is_not_acted_on() -> None:
    """A reply delayed past the whole lease grants nothing."""
    lease, change = observe(Lease(), ME, ACQUIRED, sent_at=10.0, now=10.0 + TTL, ttl=TTL, spread=0.0)
    assert change is None and not lease.holding(10.0 + TTL)


def test_held_by_another_pod_means_following_and_trying_right_after_its_expiry() -> None:
    """Someone else holds it: follow them; the next attempt comes when their key would expire, plus a spread."""
    held_by = Reply(ReplyKind.HELD_BY, OTHER, 1200)
    lease, change = observe(Lease(), ME, held_by, sent_at=10.0, now=10.1, ttl=T, spread=0.0)
    assert change is Change.FOLLOWING and lease.holder == OTHER and not lease.holding(10.1)
    assert lease.next_try == 10.1 + 1.2
    again, change = observe(lease, ME, Reply(ReplyKind.HELD_BY, OTHER, 2900), sent_at=11.3, now=11.3, ttl=T,
                            spread=0.5)
    assert change is None  # the same holder: not news
    assert again.next_try == 11.3 + 2.9 + 0.5 * 0.1 * TTL


def test_a_key_without_a_ttl_does_not_postpone_the_next_attempt_forever() -> None:
    """PTTL -1 (a key written by hand) or missing: the next attempt is at most a TTL away."""
    lease, _ = observe(Lease(), ME, Reply(ReplyKind.HELD_BY, "garbage", -1), sent_at=10.0, now=10.0, ttl=T, spread=0.0)
    assert lease.next_try <= 10.0 + TTL


def test_a_holder_told_its_key_is_gone_or_taken_stops_at_once() -> None:
    """LOST (the renew script found another token or nothing) and HELD_BY another both end the holding now."""
    held, _ = observe(Lease(), ME, ACQUIRED, sent_at=10.0, now=10.0, ttl=TTL, spread=0.0)
    lost, change = observe(held, ME, Reply(ReplyKind.LOST), sent_at=11.0, now=11.0, ttl=TTL, spread=0.0)
    assert change is Change.LOST and not lost.holding(11.0)
    taken, change = observe(held, ME, Reply(ReplyKind.HELD_BY, OTHER, 3000), sent_at=11.0, now=11.0, ttl=T, spread=0.0)
    assert change is Change.LOST and taken.holder == OTHER and not taken.holding(11.0)


def test_a_follower_that_loses_redis_no_longer_claims_to_know_the_holder() -> None:
    """Unreachable while following: the holder is unknown (the pod then probes everything itself)."""
    held_by = Reply(ReplyKind.HELD_BY, OTHER, 3000)
    following, _ = observe(Lease(), ME, held_by, sent_at=10.0, now=10.0, ttl=T, spread=0.0)
    lost, change = observe(following, ME, UNREACHABLE, sent_at=12.0, now=12.0, ttl=TTL, spread=0.0)
    assert change is Change.UNKNOWN and lost.holder is None
    again, change = observe(lost, ME, UNREACHABLE, sent_at=13.0, now=13.0, ttl=TTL, spread=0.0)
    assert change is None and again.next_try > 13.0


def test_our_own_token_reported_as_held_by_is_not_trusted() -> None:
    """The acquire script renews our own key instead; a HELD_BY with our token grants nothing."""
    lease, _ = observe(Lease(), ME, Reply(ReplyKind.HELD_BY, ME, 3000), sent_at=10.0, now=10.0, ttl=TTL, spread=0.0)
    assert not lease.holding(10.0) and lease.next_try > 10.0


# --- the property ---------------------------------------------------------------------------------------


@dataclass
class Server:
    """A Redis key with a TTL, on the server's clock (real time)."""

    value: str | None = None
    expires: float = 0.0

    def get(self, now: float) -> str | None:
        """The value if not expired."""
        return self.value if self.value is not None and now < self.expires else None

    def acquire(self, token: str, now: float) -> Reply:
        """The acquire script: SET NX PX, or renew our own key, or report the holder."""
        held = self.get(now)
        if held is None or held == token:
            self.value, self.expires = token, now + TTL
            return ACQUIRED
        return Reply(ReplyKind.HELD_BY, held, round((self.expires - now) * 1000))

    def renew(self, token: str, now: float) -> Reply:
        """The renew script: extend only our own key."""
        if self.get(now) == token:
            self.expires = now + TTL
            return ACQUIRED
        return Reply(ReplyKind.LOST)


@dataclass
class Pod:
    """A pod whose monotonic clock runs at ``rate`` times real time."""

    token: str
    rate: float
    lease: Lease = field(default_factory=Lease)
    acting: list[tuple[float, float]] = field(default_factory=list)  # real-time intervals it acted as holder

    def clock(self, real: float) -> float:
        """This pod's monotonic reading at real time ``real``."""
        return real * self.rate

    def real(self, local: float) -> float:
        """The real time at which this pod's clock reads ``local``."""
        return local / self.rate


op = st.tuples(
    st.integers(0, 2),  # which pod acts
    st.floats(0.0, 2.0),  # real time before it acts
    st.floats(0.0, 0.5),  # request delay (to the server)
    st.floats(0.0, 0.5),  # reply delay (back to the pod)
    st.booleans(),  # the request never reaches the server
    st.booleans(),  # the reply is lost
    st.floats(0.0, 0.999),  # spread
)


Op = tuple[int, float, float, float, bool, bool, float]


def simulate(ops: list[Op], rates: list[float]) -> list[tuple[float, float, int]]:
    """Run the pods against the server; the real-time (start, end, pod) intervals in which pods acted as holder.

    Checks on the way that each holding ends before the key it relies on expires in the server.
    """
    server = Server()
    pods = [Pod(f"web-{i}/{i:06d}", rates[i]) for i in range(3)]
    real = 0.0
    for who, gap, d_req, d_rep, req_lost, rep_lost, spread in ops:
        real += gap
        pod = pods[who]
        now = pod.clock(real)
        action = decide(pod.lease, now)
        if action is Action.WAIT:
            continue
        if action is Action.STEP_DOWN:
            pod.lease, _ = step_down(pod.lease, now, TTL, spread)
            continue
        sent_local = now
        reply = UNREACHABLE
        key_expiry: float | None = None
        if not req_lost:
            at_server = real + d_req
            reply = server.acquire(pod.token, at_server) if action is Action.ACQUIRE else server.renew(
                pod.token, at_server)
            key_expiry = server.expires if reply.kind is ReplyKind.ACQUIRED else None
        if rep_lost or req_lost:
            reply = UNREACHABLE
            key_expiry = None
        real_seen = real + d_req + d_rep
        before = pod.lease
        pod.lease, _ = observe(pod.lease, pod.token, reply, sent_at=sent_local, now=pod.clock(real_seen), ttl=TTL,
                               spread=spread)
        if pod.lease.held_until is not None and pod.lease.held_until != before.held_until:
            end = pod.real(pod.lease.held_until)
            assert key_expiry is not None and end < key_expiry  # acts only while its key surely lives
            # Recorded whole, even if the pod learns earlier that it lost the key: a stronger check.
            pod.acting.append((real_seen, end))
        real = real_seen
    return [(s, e, i) for i, p in enumerate(pods) for s, e in p.acting if e > s]


def test_the_simulation_hands_the_lease_over_when_its_holder_goes_silent() -> None:
    """Not vacuous: pod 0 acquires, falls silent (its requests are lost), and pod 1 takes the lease over."""
    ops: list[Op] = [(0, 0.0, 0.01, 0.01, False, False, 0.0), (1, 0.1, 0.01, 0.01, False, False, 0.0)]
    ops += [(0, 0.5, 0.0, 0.0, True, False, 0.0), (1, 0.5, 0.01, 0.01, False, False, 0.0)] * 8
    intervals = simulate(ops, [1.0, 1.0, 1.0])
    assert {p for _, _, p in intervals} == {0, 1}


@settings(max_examples=300, deadline=None)
@given(st.lists(op, min_size=1, max_size=60), st.lists(st.floats(0.95, 1.05), min_size=3, max_size=3))
def test_never_two_holders_at_once_whatever_the_delays_losses_and_clock_rates(
    ops: list[Op], rates: list[float]
) -> None:
    """However requests are delayed or lost and however the pods' clocks drift (±5 %), the real-time intervals
    in which pods act as holder never overlap, and each ends before the server-side key it relies on expires."""
    intervals = simulate(ops, rates)
    for s1, e1, p1 in intervals:
        for s2, e2, p2 in intervals:
            if p1 != p2:
                assert e1 <= s2 or e2 <= s1, f"pod {p1} acts in [{s1}, {e1}], pod {p2} in [{s2}, {e2}]"
