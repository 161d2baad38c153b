"""``arcbeat demo --scenario uplink-degrades``: one location's uplink degrades.

The simulated fleet sends steady heartbeats while the early-warning baselines are learnt; then
the heartbeats of one location take longer every interval, start to go missing, and stop. The
demo prints the ``ScopeDegraded`` warning as it is committed, then the location's first
Disconnected, and the warning's head start in production minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arcbeat.deploy.demo_report import Tally, clock, fleet_line, parse_time, record_time

DEGRADE_LOCATION = "westasia"
DEGRADE_AFTER = 10  # heartbeat intervals of baseline before the uplink degrades
# after the slowdown starts: heartbeats go missing after four intervals, stop after six
# (the simulator's scenario), then Disconnected after disconnect_after, or a held silence
DEGRADE_SPAN = 6


@dataclass(frozen=True)
class UplinkPlan:
    """When the uplink degrades, as an offset from the fleet's start."""

    machines: int
    duration: float
    interval: float  # heartbeat interval
    disconnect_after: float

    @property
    def degrade_at(self) -> float:
        return DEGRADE_AFTER * self.interval

    @property
    def min_duration(self) -> float:
        """Long enough for the location's first Disconnected and a few seconds to spare."""
        return self.degrade_at + DEGRADE_SPAN * self.interval + self.disconnect_after + 5.0

    def simulate_args(self, groundtruth: Path) -> list[str]:
        return [
            "simulate",
            "-n",
            str(self.machines),
            "--scenario",
            "steady,uplink-degrades",
            "--degrade-location",
            DEGRADE_LOCATION,
            "--degrade-at",
            f"{self.degrade_at:g}",
            "--groundtruth",
            str(groundtruth),
        ]

    def describe(self) -> list[str]:
        return [
            fleet_line(self.machines, self.interval, self.disconnect_after),
            f"Steady for {self.degrade_at:g} s (early warning learns each location's baseline);",
            f"then the uplink of {DEGRADE_LOCATION} degrades: its heartbeats take longer every "
            f"interval, go missing after {4 * self.interval:g} s and stop after "
            f"{DEGRADE_SPAN * self.interval:g} s.",
        ]


def first_disconnected(tally: Tally, location: str, after: float) -> float | None:
    """When the location's first machine was declared Disconnected (or the location silent),
    at or after ``after``."""
    times = [
        record_time(e)
        for e in tally.scope_events
        if e.get("type") == "ScopeSilent" and e.get("scope") in ("fleet", f"location={location}")
    ]
    times += tally.disconnected_at.get(location, [])
    later = [t for t in times if t >= after]
    return min(later) if later else None


def early_warning_lines(tally: Tally) -> list[str]:
    """Each location's ScopeDegraded, the first Disconnected after it, and the head start."""
    out: list[str] = []
    warnings: list[dict[str, Any]] = [
        e
        for e in tally.scope_events
        if e.get("type") == "ScopeDegraded" and str(e.get("scope", "")).startswith("location=")
    ]
    for e in warnings:
        location = str(e["scope"]).removeprefix("location=")
        at = parse_time(e["at"])
        head = f"{clock(at, ms=False)}  ScopeDegraded {e['scope']} ({e.get('signal')})"
        off = first_disconnected(tally, location, at)
        if off is None:
            out.append(f"{head}; no Disconnected there yet")
            continue
        lead = off - at
        out.append(
            f"{head}; first Disconnected (or ScopeSilent) there {clock(off, ms=False)}: "
            f"{lead:.1f} s later, {lead * tally.scale / 60:.0f} production minutes of warning"
        )
    return out
