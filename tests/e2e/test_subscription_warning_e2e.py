"""Early warning for a subscription, live and short: a worker, and the simulator's
"subscription degrades" scenario in compressed time (1 s heartbeats, Disconnected after 4 s).
One subscription's machines, spread over every location, see their delays grow and then miss
heartbeats; the subscription's ScopeDegraded reaches the status topic before its first
Disconnected, and no location warns (the subscription is under 2 % of each location, the late
share's floor, and far under a tenth, so no location's delay p90 moves). About 30 s on the
2-core machine.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from arcbeat.deploy.agents.scenarios import Fleet, FleetSpec, fleet_locations
from arcbeat.deploy.stack import Stack
from arcbeat.streams.decide.degradation import MIN_LATE_SHARE
from arcbeat.streams.decide.timestamps import parse_rfc3339
from tests.support.deployment import Deployment
from tests.support.kafka import read_topic
from tests.support.progress import say
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.services, pytest.mark.slow]

MACHINES, SUBSCRIPTIONS, SEED = 600, 60, 0
MIN_MACHINES = 6  # degraded_min_machines: a subscription here has about ten machines


def _small_subscription(fleet: Fleet) -> str:
    """The subscription with the smallest share of any location, among those with enough
    machines to be judged (at least MIN_MACHINES + 2: it must stay judged while a few are
    late)."""
    n = len(fleet)
    per_location = Counter(fleet.location(m) for m in range(n))
    parts = Counter((fleet.names(m)[1], fleet.location(m)) for m in range(n))
    sizes = Counter(fleet.names(m)[1] for m in range(n))

    def worst_share(sub: str) -> float:
        return max(parts[(sub, loc)] / per_location[loc] for loc in per_location)

    candidates = [s for s in fleet.subscription_ids if sizes[s] >= MIN_MACHINES + 2]
    sub = min(candidates, key=worst_share)
    assert worst_share(sub) < MIN_LATE_SHARE, (sub, worst_share(sub))
    assert all(parts[(sub, loc)] for loc in per_location)  # spread over every location
    return sub


def test_a_degrading_subscription_warns_as_a_subscription_before_its_machines_disconnect(
    stack: Stack, tmp_path: Path
) -> None:
    # mass silence left out (it would hold the Disconnected this test measures against)
    dep = Deployment(
        tmp_path,
        f"early-sub-{int(time.time())}",
        outage_min_machines="1000",
        degraded_min_machines=str(MIN_MACHINES),
    )
    try:
        fleet = Fleet(
            FleetSpec(
                machines=MACHINES,
                seed=SEED,
                subscriptions=SUBSCRIPTIONS,
                locations=fleet_locations(dep.settings),
            )
        )
        sub = _small_subscription(fleet).lower()
        w = dep.start_worker(0)
        w.wait_ready()
        sim = dep.simulate(
            "-n", str(MACHINES), "--seed", str(SEED), "--subscriptions", str(SUBSCRIPTIONS),
            "--duration", "22", "--scenario", "subscription-degrades",
            "--degrade-subscription", sub,
        )  # fmt: skip
        sim.wait(90)
        time.sleep(2)

        def records() -> list[dict[str, object]]:
            out = []
            for r in read_topic(dep.settings.kafka.bootstrap, dep.settings.topics.status):
                if r.value:
                    out.append(orjson.loads(r.value))
            return out

        def disconnected(recs: list[dict[str, object]]) -> list[float]:
            return [
                parse_rfc3339(str(r["decidedAt"]))
                for r in recs
                if r["type"] == "StatusChanged"
                and str(r["subscriptionId"]).lower() == sub
                and r["reason"] == "heartbeat_timeout"
            ]

        def settled() -> list[dict[str, object]] | None:
            recs = records()
            return recs if disconnected(recs) else None

        recs = wait_for("the subscription's first Disconnected", settled, timeout=20)
        warnings = [r for r in recs if r["type"] == "ScopeDegraded"]
        say(f"early warning: {[(r['scope'], r['signal'], r['at']) for r in warnings]}")
        mine = [r for r in warnings if r["scope"] == f"subscription={sub}"]
        assert mine, warnings
        assert not [r for r in warnings if str(r["scope"]).startswith("location=")], warnings
        lead = min(disconnected(recs)) - parse_rfc3339(str(mine[0]["at"]))
        say(f"early warning: subscription {sub} warned {lead:.1f}s before its first Disconnected")
        assert lead >= dep.settings.timing.heartbeat_interval  # five production minutes
    finally:
        dep.close()
