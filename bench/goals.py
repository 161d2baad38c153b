"""SPEC §8 goals next to the measured figures: met or missed, by how much, and why. Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Goal:
    key: str
    what: str
    goal: str
    target: float
    higher_is_better: bool
    unit: str


GOALS: tuple[Goal, ...] = (
    Goal(
        "throughput",
        "sustained heartbeats per second, one worker",
        ">= 20,000/s (stretch 50,000)",
        20_000,
        True,
        "/s",
    ),
    Goal(
        "throughputRatio",
        "worker rate / raw aiokafka consume rate of the same records",
        ">= 0.5",
        0.5,
        True,
        "",
    ),
    Goal("detectionP99", "detection delay after the deadline, p99", "<= 2 s", 2.0, False, "s"),
    Goal("detectionMax", "detection delay after the deadline, max", "<= 5 s", 5.0, False, "s"),
    Goal(
        "connectedP99",
        "Connected after the heartbeat's arrival, p99 (as a read_committed consumer sees it)",
        "<= 1 s",
        1.0,
        False,
        "s",
    ),
    Goal("memory", "worker memory per tracked machine", "<= 1 KiB", 1024.0, False, " B"),
    Goal(
        "restart", "restart to caught-up with the big fleet in state", "<= 60 s", 60.0, False, "s"
    ),
    Goal(
        "falseDisconnected",
        "false Disconnected (detection run: live load, restart-free)",
        "0",
        0.0,
        False,
        "",
    ),
)


def verdict(goal: Goal, measured: float | None) -> dict[str, Any]:
    """``{"met": bool|None, "missedBy": str|None}``; None when not measured."""
    if measured is None or (isinstance(measured, float) and math.isnan(measured)):
        return {"met": None, "missedBy": None}
    if goal.higher_is_better:
        met = measured >= goal.target
        missed = (
            None
            if met
            else (f"{goal.target / measured:,.1f}x below" if measured > 0 else "nothing measured")
        )
    else:
        met = measured <= goal.target
        if met:
            missed = None
        elif goal.target == 0:
            missed = f"{measured:g} instead of 0"
        else:
            missed = (
                f"{measured / goal.target:,.1f}x over (+{measured - goal.target:,.3g}{goal.unit})"
            )
    return {"met": met, "missedBy": missed}


def _get(data: dict[str, Any], *path: str) -> Any:
    cur: Any = data
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return cur


def measured_values(report: dict[str, Any]) -> dict[str, float | None]:
    return {
        "throughput": _get(report, "throughput", "worker", "rate"),
        "throughputRatio": _get(report, "throughput", "ratioWorkerToAiokafka"),
        "detectionP99": _get(report, "detection", "detectionDelay", "p99"),
        "detectionMax": _get(report, "detection", "detectionDelay", "max"),
        "connectedP99": _get(report, "detection", "connectedVisible", "p99"),
        "memory": _get(report, "bigState", "memory", "bytesPerMachine"),
        "restart": _get(report, "bigState", "restartSeconds"),
        "falseDisconnected": _get(report, "detection", "falseDisconnected"),
    }


def _pct(x: float) -> str:
    return f"{x:.0%}"


def why(key: str, report: dict[str, Any]) -> str:
    """The reasons a figure is what it is, from what this run measured."""
    t = report.get("throughput") or {}
    w = t.get("worker") or {}
    eng = report.get("engine") or {}
    det = report.get("detection") or {}
    big = report.get("bigState") or {}
    if key in ("throughput", "throughputRatio"):
        parts = []
        if w:
            parts.append(
                f"the worker used {_pct(w.get('cpuUtilisation', 0))} of a core at "
                f"{w.get('cpuMicrosecondsPerRecord')} us of CPU per record"
            )
        if eng:
            parts.append(
                f"the engine alone needs {eng.get('microsecondsPerRecord')} us per record "
                f"({eng.get('rate', 0):,.0f}/s in one process), so most of the worker's time is "
                "spent outside the decision logic"
            )
        if (w.get("longestStallSeconds") or 0) >= 3:
            stall = (
                f"processing stopped for {w['longestStallSeconds']}s inside the window "
                f"(best 10 s: {w.get('peakRate10s', 0):,.0f}/s)"
            )
            if w.get("producerBufferFullWarnings"):
                stall += (
                    f"; faust logged 'producer buffer full' ({w['producerBufferFullWarnings']}x): "
                    "the agent waits while queued table writes are sent one at a time"
                )
            parts.append(stall)
        spy = w.get("pyspy") or {}
        if spy.get("available"):
            top = ", ".join(f"{c['component']} {_pct(c['share'])}" for c in spy["components"][:5])
            parts.append(f"py-spy on the worker: {top}")
        variants = t.get("variants") or {}
        if variants:
            parts.append(
                "same records with one knob changed: "
                + ", ".join(f"{k} {v.get('rate', 0):,.0f}/s" for k, v in variants.items())
            )
        if t.get("aiokafka"):
            parts.append(f"raw aiokafka reads {t['aiokafka']['rate']:,.0f}/s")
        return "; ".join(parts)
    if key in ("detectionP99", "detectionMax"):
        return (
            f"decisions are taken when a tick (every {det.get('checkInterval')}s) is read back; "
            f"live load {det.get('liveRate')}/s against a measured capacity of "
            f"{det.get('rateHint')}/s; the status record is visible after the EOS commit "
            f"(commit_interval {det.get('commitInterval')}s): consumer-side p99 "
            f"{_get(det, 'detectionDelayVisible', 'p99')}s"
        )
    if key == "connectedP99":
        return (
            f"decided {_get(det, 'connectedDecision', 'p99')}s (p99) after arrival, record "
            f"produced at {_get(det, 'connectedRecord', 'p99')}s; the rest is the transaction "
            f"commit cadence (commit_interval {det.get('commitInterval')}s, "
            f"{det.get('processingGuarantee')})"
        )
    if key == "memory":
        mem = big.get("memory") or {}
        parts = [
            f"state recovered from the changelogs: {mem.get('bytesPerMachine')} B per machine "
            f"(VmRSS {mem.get('rssKiB', 0) / 1024:,.0f} MiB - idle "
            f"{mem.get('rssIdleKiB', 0) / 1024:,.0f} MiB)"
        ]
        if eng:
            parts.append(
                f"engine-only: table keys+values {eng.get('tableBytesPerMachine')} B per "
                f"machine by size, {eng.get('engineBytesPerMachine')} B allocated per machine "
                "when the state is built by processing"
            )
            orj = eng.get("storedValueAllocationBytes")
            if orj and orj > 2 * (eng.get("storedValueBytes") or orj):
                parts.append(
                    f"each stored value is an orjson.dumps() result that keeps a {orj:,.0f} B "
                    f"allocation for {eng.get('storedValueBytes')} B of JSON"
                )
        tput_growth = w.get("rssGrowthKiB")
        if tput_growth is not None and w.get("machinesOnboarded"):
            parts.append(
                f"throughput run: VmRSS grew {tput_growth / 1024:,.1f} MiB for "
                f"{w['machinesOnboarded']:,} new machines and {w.get('records', 0):,} records"
            )
        return "; ".join(parts)
    if key == "restart":
        records = _get(big, "seeded", "records") or 0
        secs = big.get("restartSeconds") or 0
        rate = records / secs if secs else 0
        return (
            f"the memory store replays the whole changelog on start ({records:,} records: "
            f"{rate:,.0f} records/s overall, start-up included) and the engine then re-indexes "
            "every machine (decoding each table value) before the worker is ready"
        )
    if key == "falseDisconnected":
        return "Disconnected records for machines that kept sending heartbeats"
    return ""


def evaluate(report: dict[str, Any]) -> list[dict[str, Any]]:
    values = measured_values(report)
    rows = []
    for g in GOALS:
        v = values.get(g.key)
        row = {"key": g.key, "what": g.what, "goal": g.goal, "measured": v, "unit": g.unit}
        row.update(verdict(g, v))
        row["why"] = why(g.key, report) if row["met"] is not True else ""
        rows.append(row)
    rows.append(
        {
            "key": "lostOrDuplicated",
            "what": "lost or duplicated transitions across a worker kill -9",
            "goal": "0",
            "measured": None,
            "unit": "",
            "met": None,
            "missedBy": None,
            "why": "not measured by the bench: a correctness property, checked by the "
            "worker's kill -9 tests",
        }
    )
    return rows
