"""When one failed probe is already conclusive: a crashed server, proven by the kernel, not guessed from a count.

Thresholds (``unhealthy_threshold`` consecutive failures) exist because one failure is usually ambiguous: a
timeout can be a lost packet, a refused connect can be a restart the next probe no longer sees, a reset can be a
middlebox dropping an idle connection. A crash of the server process on a live host is different. The kernel
closes its sockets the moment the process dies, so a connection we keep open ends (FIN or RST), and a connect right
after it is refused (RST to the SYN: nothing listens on the port any more). Those two together are not a sample
of a flaky path, they are the operating system saying the process is gone; counting two more of them at
``fast_interval`` only delays the news by ``2 x fast_interval``. HAProxy (``on-error mark-down`` /
``sudden-death``) and Envoy (consecutive local-origin failures) treat such errors as conclusive for the same
reason.

What stays ambiguous, and so still goes through the thresholds:

- a refused connect *without* a dropped kept connection (the dependency has no kept connection, e.g. ``kind:
  tcp``, or ours is still up: a port briefly closed during a restart, a listener backlog full);
- a dropped connection followed by anything but a refusal: a timeout, a reset, ``connection_closed``. A reset is
  excluded on purpose: a NAT, a load balancer or a firewall that times out an idle connection resets it while the
  server is fine, so a reset says something about the path, not about the server.

A success in between ends the evidence (``Evidence.after``): the connection was lost, but the server is there.
"""

from __future__ import annotations

from dataclasses import dataclass

from failsoft.policies.model import Outcome, Verdict

# Reasons that, right after a kept connection was lost, prove the server process is gone.
CONCLUSIVE_AFTER_DROP = frozenset({"connection_refused"})


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the probes of one dependency have seen since its last success: whether a kept connection dropped."""

    connection_lost: bool = False

    def lost(self) -> Evidence:
        """A kept connection dropped (a probe's ``connection_lost`` hook fired)."""
        return Evidence(connection_lost=True)

    def after(self, outcome: Outcome) -> Evidence:
        """The evidence that remains once ``outcome`` is recorded: an answer clears it, a failure keeps it."""
        if outcome.verdict in (Verdict.OK, Verdict.DEGRADED):
            return Evidence()
        return self

    def conclusive(self, outcome: Outcome) -> bool:
        """True when ``outcome`` proves a crash given this evidence: it is down now, no threshold to wait for."""
        return (
            self.connection_lost
            and outcome.verdict is Verdict.FAILURE
            and outcome.reason in CONCLUSIVE_AFTER_DROP
        )
