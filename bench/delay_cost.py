"""What early warning's delivery-delay bookkeeping costs a real worker (the goal
``fastPathKept``): the throughput phase's records, already loaded, read by workers with
``delivery_delays`` on and off, alternating in pairs (which one goes first alternates too, so
that neither always meets a warmer page cache or a quieter machine). Each worker reads the
whole log from the start under its own consumer group; its steady-state rate (the known
machines' heartbeats: the fast path) is compared. The figure is the median of the pairs'
ratios: one pair's ratio is as noisy as the shared machine.
"""

from __future__ import annotations

from collections.abc import Callable
from statistics import median
from typing import Any

from arcbeat.deploy.settings import Settings

PAIRS = 3  # the default of `arcbeat bench --delay-pairs`

# a worker of these settings, named so, timed over the loaded records (its figures)
Measure = Callable[[Settings, str], dict[str, Any]]


def _steady(w: dict[str, Any]) -> float:
    # a run too short to rate its steady part apart (bench smoke) is rated whole
    return float(w.get("steadyStateRate") or w.get("rate") or 0.0)


def run_delay_cost(
    measure: Measure, s: Settings, total: int, pairs: int, say: Callable[[str], None]
) -> dict[str, Any]:
    """Steady rates of ``pairs`` pairs of workers, delivery delays kept and not."""
    rows: list[dict[str, Any]] = []
    for j in range(pairs):
        got: dict[bool, dict[str, Any]] = {}
        for on in (True, False) if j % 2 == 0 else (False, True):
            name = f"tput-delays-{'on' if on else 'off'}-{j + 1}"
            ws = s.replace(app_id=f"{s.kafka.app_id}-{name}", delivery_delays=on)
            got[on] = measure(ws, name)
        with_rate, without_rate = _steady(got[True]), _steady(got[False])
        rows.append(
            {
                "first": "with" if j % 2 == 0 else "without",
                "rateWith": round(with_rate, 1),
                "rateWithout": round(without_rate, 1),
                "kept": round(with_rate / without_rate, 3) if without_rate else None,
                "cpuMicrosecondsPerRecordWith": got[True].get("cpuMicrosecondsPerRecord"),
                "cpuMicrosecondsPerRecordWithout": got[False].get("cpuMicrosecondsPerRecord"),
                "runQueueShareWith": got[True].get("runQueueShare"),
                "runQueueShareWithout": got[False].get("runQueueShare"),
            }
        )
        say(f"delivery delays: pair {j + 1}/{pairs}: kept {rows[-1]['kept']}")
    ratios = [r["kept"] for r in rows if r["kept"] is not None]
    return {
        "pairs": rows,
        "rateWith": round(median(r["rateWith"] for r in rows), 1),
        "rateWithout": round(median(r["rateWithout"] for r in rows), 1),
        "kept": round(median(ratios), 3) if ratios else None,
        "how": f"{pairs} pairs of workers over the same {total:,} loaded records, "
        "delivery_delays=true against delivery_delays=false, the first of each pair "
        "alternating; each worker's steady-state rate (the known machines' heartbeats, the "
        "fast path, after the onboarding part), the median of the pairs' ratios",
    }
