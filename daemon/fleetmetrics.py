"""Fleet mode's metrics, on the daemon's own meter: leases held, lease changes, shared results, fallbacks.

Every label value is bounded: lease names are ``leader`` or a dependency name from the config; changes come from
``policies.lease.Change``.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.metrics import CallbackOptions, Observation

from failsoft.daemon.fleet import LEADER, Fleet
from failsoft.daemon.metrics import Metrics
from failsoft.policies.lease import Change


class FleetMetrics:
    """Instruments fed by the ``Fleet``'s callbacks."""

    def __init__(self, metrics: Metrics, fleet: Fleet) -> None:
        self.fleet = fleet
        m = metrics.meter()
        self._changes = m.create_counter("failsoft_fleet_lease_changes_total",
                                         description="Lease changes of this pod, by lease and change.")
        self._applied = m.create_counter("failsoft_fleet_shared_results_applied_total",
                                         description="Probe results of another pod applied here, by dependency.")
        self._fallbacks = m.create_counter(
            "failsoft_fleet_fallbacks_total",
            description="Times the fleet Redis became unreachable and this pod went back to probing everything.")
        m.create_observable_gauge("failsoft_fleet_leases_held", callbacks=[self._held],
                                  description="1 for each lease this pod holds now (leader, shared dependencies).")
        m.create_observable_gauge("failsoft_fleet_redis_up", callbacks=[self._up],
                                  description="1 while the fleet Redis answers, 0 while this pod probes alone.")
        self._fallbacks.add(0)
        for name in [LEADER, *(t.label for t in fleet.targets.values())]:
            for change in (Change.ACQUIRED, Change.LOST, Change.STEPPED_DOWN):
                self._changes.add(0, {"lease": name, "change": str(change)})
        for name in fleet.by_dependency:
            self._applied.add(0, {"dependency": name})
        fleet.on_lease_change.append(self._changed)
        fleet.on_result_applied = self._result_applied
        fleet.on_fallback = self._fallback

    def _changed(self, lease: str, change: Change, _holder: str | None) -> None:
        self._changes.add(1, {"lease": lease, "change": str(change)})

    def _result_applied(self, dependency: str) -> None:
        self._applied.add(1, {"dependency": dependency})

    def _fallback(self) -> None:
        self._fallbacks.add(1)

    def _held(self, _: CallbackOptions) -> Iterable[Observation]:
        now = self.fleet.clock.monotonic()
        out = [Observation(int(self.fleet.leader.holding(now)), {"lease": LEADER})]
        out += [Observation(int(t.lease.holding(now)), {"lease": t.label}) for t in self.fleet.targets.values()]
        return out

    def _up(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(int(self.fleet.redis_ok is True))]
