"""Lease decisions for fleet mode: pure, no IO, no clock reads (the caller passes ``now``).

A lease is a Redis key holding its holder's token (``<pod>/<boot>``) with a TTL. Redis alone decides who holds it
(``SET NX PX`` and check-and-set scripts); this module decides, from what Redis answered and when the request was
*sent*, what this pod does next and until when it may act as the holder.

Safety, without trusting any wall clock: the key's TTL starts when Redis receives the request, which is after the
pod sent it. So ``sent_at + ttl`` on the pod's own monotonic clock is no earlier than the key's expiry, as long
as both clocks tick at the same rate. A holder acts only until ``sent_at + ttl * (1 - SAFETY)``: the margin
absorbs clock *rate* differences of up to ``SAFETY`` (far more than NTP-slewed clocks ever drift) and the time
it takes to notice. A holder that cannot renew (Redis away) therefore stops acting before its lease can have
expired elsewhere, and another pod can only acquire it after that expiry.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

SAFETY = 0.1  # a holder stops acting this fraction of the TTL before the key can have expired
RENEW_EVERY = 1 / 3  # renew three times per TTL: two renewals may fail before the holder must step down
RETRY = 1 / 6  # after an unreachable Redis, try again this fraction of the TTL later
SPREAD = 0.1  # acquisition attempts are spread over this fraction of the TTL (no stampede of N pods)


class Action(StrEnum):
    """What to do with a lease now."""

    ACQUIRE = "acquire"  # not held by us: try SET NX (the script also reports the current holder)
    RENEW = "renew"  # held by us: extend it with the check-and-set script
    STEP_DOWN = "step_down"  # held by us, but we could not renew in time: stop acting now
    WAIT = "wait"  # nothing is due before ``Lease.next_try``


class ReplyKind(StrEnum):
    """What Redis answered to an ACQUIRE or a RENEW (or that it did not answer)."""

    ACQUIRED = "acquired"  # SET NX succeeded, or RENEW extended our own key
    HELD_BY = "held_by"  # someone else holds it (``holder``, ``pttl_ms`` left)
    LOST = "lost"  # RENEW found the key gone or not ours any more
    UNREACHABLE = "unreachable"  # no answer: error, timeout, connection refused


@dataclass(frozen=True, slots=True)
class Reply:
    """Redis' answer to one lease request."""

    kind: ReplyKind
    holder: str | None = None
    pttl_ms: int | None = None


class Change(StrEnum):
    """A change of role worth one log line and a metric."""

    ACQUIRED = "acquired"  # we hold it now
    LOST = "lost"  # Redis says it is not ours any more
    STEPPED_DOWN = "stepped_down"  # we could not renew in time and stopped acting as holder
    FOLLOWING = "following"  # someone else holds it (a new holder, or the first one we see)
    UNKNOWN = "unknown"  # we no longer know who holds it (Redis unreachable)


@dataclass(frozen=True, slots=True)
class Lease:
    """This pod's view of one lease. ``held_until`` (monotonic) is set while this pod is the holder."""

    holder: str | None = None  # the holder's token as last seen (ours while held); None: free or unknown
    held_until: float | None = None
    next_try: float = 0.0

    def holding(self, now: float) -> bool:
        """Whether this pod may act as the holder at ``now``."""
        return self.held_until is not None and now < self.held_until


def start(now: float, ttl: float, spread: float) -> Lease:
    """A lease never tried: the first attempt comes after a random part (``spread`` in [0, 1)) of SPREAD * ttl."""
    return Lease(next_try=now + spread * SPREAD * ttl)


def decide(lease: Lease, now: float) -> Action:
    """What to do at ``now``: step down once the held time is over, renew or acquire when due, else wait."""
    if lease.held_until is not None:
        if now >= lease.held_until:
            return Action.STEP_DOWN
        return Action.RENEW if now >= lease.next_try else Action.WAIT
    return Action.ACQUIRE if now >= lease.next_try else Action.WAIT


def step_down(lease: Lease, now: float, ttl: float, spread: float) -> tuple[Lease, Change]:
    """Stop acting as holder (``decide`` said STEP_DOWN); try to acquire again soon."""
    return Lease(holder=None, held_until=None, next_try=now + RETRY * ttl * (1 + spread)), Change.STEPPED_DOWN


def observe(
    lease: Lease, me: str, reply: Reply, *, sent_at: float, now: float, ttl: float, spread: float
) -> tuple[Lease, Change | None]:
    """Take Redis' ``reply`` to a request sent at ``sent_at`` (monotonic, seconds; ``ttl`` in seconds too).

    ``spread`` is a random number in [0, 1) that spreads the next acquisition attempts of many pods.
    Returns the new lease and the change of role, if any.
    """
    was_holding = lease.holding(now)
    if reply.kind is ReplyKind.ACQUIRED:
        held = Lease(holder=me, held_until=sent_at + ttl * (1 - SAFETY), next_try=sent_at + RENEW_EVERY * ttl)
        if held.held_until is not None and held.held_until <= now:
            # The answer came back so late that the lease may already be over: do not act on it.
            return Lease(next_try=now), (Change.STEPPED_DOWN if was_holding else None)
        return held, (None if was_holding else Change.ACQUIRED)
    if reply.kind is ReplyKind.HELD_BY:
        if reply.holder == me:
            # Our own token reported as someone else's: the acquire script renews our own key instead, so this
            # is a confused server or a copied token. Not trusted; ask again a little later.
            return Lease(next_try=now + RETRY * ttl), (Change.LOST if was_holding else None)
        left = (reply.pttl_ms / 1000) if reply.pttl_ms is not None and reply.pttl_ms > 0 else RENEW_EVERY * ttl
        # Try right after it would expire if its holder stopped renewing (never later than one TTL from now).
        after = min(left, ttl) + spread * SPREAD * ttl
        followed = Lease(holder=reply.holder, held_until=None, next_try=now + after)
        if was_holding:
            return followed, Change.LOST
        return followed, (Change.FOLLOWING if reply.holder != lease.holder else None)
    if reply.kind is ReplyKind.LOST:
        return Lease(holder=None, held_until=None, next_try=now + spread * SPREAD * ttl), (
            Change.LOST if was_holding else None)
    # Unreachable: keep what we had until it runs out (decide() then says STEP_DOWN); retry soon, spread.
    retry = now + RETRY * ttl * (1 + spread)
    if was_holding:
        return replace(lease, next_try=min(retry, lease.held_until or retry)), None
    if lease.held_until is not None:  # held, but its time is over
        return Lease(next_try=retry), Change.STEPPED_DOWN
    return Lease(holder=None, next_try=retry), (Change.UNKNOWN if lease.holder is not None else None)
