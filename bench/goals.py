"""The performance goals next to the measured figures: met or missed, by how much, and why. Pure."""

from __future__ import annotations

import dataclasses
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
        "sustained heartbeats per second, one worker, default settings (exactly-once), "
        "fleet in steady state (onboarding rate reported beside it)",
        ">= 20,000/s (stretch 50,000)",
        20_000,
        True,
        "/s",
    ),
    Goal(
        "throughputRatio",
        "sustained worker rate / raw aiokafka consume rate of the same records, same run",
        ">= 0.5",
        0.5,
        True,
        "",
    ),
    Goal(
        "fastPathKept",
        "worker's steady rate, early warning's delay bookkeeping on / off",
        ">= 0.9",
        0.9,
        True,
        "",
    ),
    Goal(
        "restart",
        "restart to caught-up (/readyz 200) with the big fleet in state and one "
        "checkpoint_interval of its load to replay (the most a restart replays)",
        "<= 30 s",
        30.0,
        False,
        "s",
    ),
    Goal(
        "restartAfterWeek",
        "restart to caught-up after a week of uptime (estimated from the measured restart)",
        "<= 30 s",
        30.0,
        False,
        "s",
    ),
    Goal(
        "readyAfterStart",
        "worker with 1,000 machines in state: ready (/readyz 200) after its process starts",
        "<= 10 s",
        10.0,
        False,
        "s",
    ),
    Goal(
        "readyAfterKill",
        "worker killed (SIGKILL) and started again at once: ready (/readyz 200)",
        "<= 15 s",
        15.0,
        False,
        "s",
    ),
    Goal(
        "catchUp",
        "big fleet, worker stopped for 10 minutes of heartbeats (2 per machine waiting): "
        "caught up (/readyz 200) after start",
        "<= 120 s",
        120.0,
        False,
        "s",
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
    Goal(
        "memory",
        "worker memory per machine in state (VmRSS growth / machines)",
        "<= 1 KiB",
        1024.0,
        False,
        " B",
    ),
    Goal(
        "replayRate",
        "`arcbeat replay`: heartbeats replayed per second (both cores, partitions in "
        "parallel processes), wall time",
        ">= 100,000/s",
        100_000,
        True,
        "/s",
    ),
    Goal(
        "replayDay",
        "`arcbeat replay` of a day of a 100,000-machine fleet (28.8 M heartbeats), "
        "at the measured replayRate",
        "<= 300 s",
        300.0,
        False,
        "s",
    ),
    Goal(
        "heldIdleCpu",
        "mass outage: the worker's CPU share while the whole fleet is held and nothing but "
        "ticks arrives",
        "<= 5 % of a core",
        0.05,
        False,
        "",
    ),
    Goal(
        "tickP99",
        "mass outage: time to handle one partition's tick, p99 (holds and releases included)",
        "<= 50 ms",
        0.05,
        False,
        "s",
    ),
    Goal(
        "loopLagMax",
        "mass outage: the worker's event loop lag, max (the longest synchronous step)",
        "<= 250 ms",
        0.25,
        False,
        "s",
    ),
    Goal(
        "readyFlaps",
        "mass outage: /readyz probes (1 s) not ready while the fleet is held, restarts aside",
        "0",
        0.0,
        False,
        "",
    ),
    Goal(
        "restartHeld",
        "mass outage: restart (kill -9) to /readyz 200 with a location held, slowest of a "
        "crash loop",
        "<= 30 s at 1,000,000 machines (<= 10 s at 100,000)",
        30.0,
        False,
        "s",
    ),
    Goal(
        "releaseDelay",
        "mass outage: the hold ends with machines still silent: the last one declared, after "
        "its hold's end",
        "<= check_interval + 1 s",
        2.0,
        False,
        "s",
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
        "throughput": _get(report, "throughput", "sustainedRate"),
        "throughputRatio": _get(report, "throughput", "ratioWorkerToAiokafka"),
        "fastPathKept": _get(report, "throughput", "delayCost", "kept"),
        "restart": _get(report, "bigState", "restartSeconds"),
        "restartAfterWeek": _get(report, "bigState", "restartAfterWeek", "seconds"),
        "readyAfterStart": _get(report, "startup", "afterStop", "max"),
        "readyAfterKill": _get(report, "startup", "afterKill", "max"),
        "catchUp": _get(report, "catchUp", "seconds"),
        "detectionP99": _get(report, "detection", "detectionDelay", "p99"),
        "detectionMax": _get(report, "detection", "detectionDelay", "max"),
        "connectedP99": _get(report, "detection", "connectedVisible", "p99"),
        "memory": _get(report, "bigState", "memory", "bytesPerMachine"),
        "falseDisconnected": _get(report, "detection", "falseDisconnected"),
        "replayRate": _get(report, "replay", "rate"),
        "replayDay": _get(report, "replay", "dayOf100kSeconds"),
        "heldIdleCpu": _get(report, "massOutage", "heldIdleCpu"),
        "tickP99": _get(report, "massOutage", "tickP99"),
        "loopLagMax": _get(report, "massOutage", "loopLagMax"),
        "readyFlaps": _get(report, "massOutage", "readyFlaps"),
        "restartHeld": _get(report, "massOutage", "restartHeld"),
        "releaseDelay": _get(report, "massOutage", "releaseDelay"),
    }


def goal_for(goal: Goal, report: dict[str, Any]) -> Goal:
    """A goal whose target follows the run: a restart with a location held is due in 10 s at
    the quick variant's 100,000 machines (30 s at 1,000,000); a release in check_interval +
    1 s."""
    if goal.key == "restartHeld":
        machines = _get(report, "massOutage", "machines") or 0
        if machines and machines <= 100_000:
            return dataclasses.replace(goal, target=10.0, goal="<= 10 s at 100,000 machines")
        return dataclasses.replace(goal, goal="<= 30 s at 1,000,000 machines")
    if goal.key == "releaseDelay":
        check = _get(report, "massOutage", "timing", "checkInterval")
        if check:
            return dataclasses.replace(
                goal, target=check + 1.0, goal=f"<= check_interval + 1 s ({check + 1.0:g} s)"
            )
    return goal


def _pct(x: float) -> str:
    return f"{x:.0%}"


def _n(x: Any) -> str:
    return f"{x:,.0f}" if isinstance(x, int | float) else "?"


def _recovery(rows: list[dict[str, Any]] | None) -> str:
    if not rows:
        return "no recovery line in the worker's log"
    secs = max(r["seconds"] for r in rows)
    machines = sum(r["machines"] for r in rows)
    return f"the checkpoints of {_n(machines)} machines were read and restored in {secs:.1f}s"


def _throughput_why(report: dict[str, Any]) -> str:
    t = report.get("throughput") or {}
    w = t.get("worker") or {}
    eng = report.get("engine") or {}
    parts = []
    if w:
        text = (
            f"the worker used {_pct(w.get('cpuUtilisation', 0))} of a core at "
            f"{w.get('cpuMicrosecondsPerRecord')} us of CPU per record"
        )
        if w.get("runQueueShare") is not None:
            text += (
                f", and was ready to run but waited for a CPU {_pct(w['runQueueShare'])} of "
                "the time (other processes on the shared machine); the rest of the time it "
                "waited on Kafka"
            )
        pressure = _get(t, "cpuPressureAtEnd", "avg60")
        if pressure is not None:
            text += f" (CPU pressure of the machine over the last minute: {_pct(pressure)})"
        parts.append(text)
    if eng:
        fast = eng.get("fastPath") or {}
        parts.append(
            f"the engine alone needs {eng.get('microsecondsPerRecord')} us per record of this "
            f"mix ({_n(eng.get('rate'))}/s in one process) and "
            f"{fast.get('microsecondsPerRecord')} us on the fast path"
        )
    if (w.get("longestStallSeconds") or 0) >= 3:
        parts.append(
            f"processing stopped for {w['longestStallSeconds']}s inside the window "
            f"(best 10 s: {_n(w.get('peakRate10s'))}/s)"
        )
    spy = w.get("pyspy") or {}
    if spy.get("available"):
        top = ", ".join(f"{c['component']} {_pct(c['share'])}" for c in spy["components"][:6])
        parts.append(f"py-spy on the worker (idle samples included): {top}")
    variants = t.get("variants") or {}
    if variants:
        parts.append(
            "same records with one setting changed: "
            + ", ".join(f"{k} {_n(v.get('rate'))}/s" for k, v in variants.items())
        )
    if t.get("aiokafka"):
        parts.append(f"raw aiokafka reads {_n(t['aiokafka']['rate'])}/s")
    return "; ".join(parts)


def why(key: str, report: dict[str, Any]) -> str:
    """The reasons a figure is what it is, from what this run measured."""
    det = report.get("detection") or {}
    big = report.get("bigState") or {}
    eng = report.get("engine") or {}
    if key in ("throughput", "throughputRatio"):
        return _throughput_why(report)
    if key == "fastPathKept":
        dc = _get(report, "throughput", "delayCost") or {}
        ew = _get(eng, "fastPath", "earlyWarning") or {}
        pairs = ", ".join(str(p.get("kept")) for p in dc.get("pairs") or [])
        text = (
            f"a worker's steady rate {_n(dc.get('rateWith'))}/s with the delivery-delay "
            f"bookkeeping (clock-offset baseline, one counter list per location and "
            f"subscription) against {_n(dc.get('rateWithout'))}/s without (medians; pairs' "
            f"ratios {pairs}): {dc.get('how')}"
        )
        if ew.get("kept") is not None:
            text += (
                f"; not the goal's figure: the engine alone, where the bookkeeping is a larger "
                f"share of a record's cost, keeps {ew['kept']} "
                f"({_n(ew.get('rateWithEarlyWarning'))}/s against "
                f"{_n(ew.get('rateWithoutEarlyWarning'))}/s, {ew.get('how')})"
            )
        return text
    if key in ("replayRate", "replayDay"):
        rp = report.get("replay") or {}
        return (
            f"{_n(rp.get('heartbeats'))} heartbeats and {_n(rp.get('ticks'))} ticks of the "
            f"throughput phase's log in {rp.get('seconds')}s by {rp.get('processes')} "
            "processes (start and Kafka reads included); the machine's other load shares "
            f"the cores: {_n(rp.get('ratePerCpuSecond'))} heartbeats per CPU-second of a "
            f"process, {_n(rp.get('rateOnFreeCores'))}/s on {rp.get('processes')} free cores"
        )
    if key in ("detectionP99", "detectionMax"):
        return (
            f"decisions are taken when a tick (every {det.get('checkInterval')}s) is read back; "
            f"live load {_n(det.get('liveRate'))}/s against a measured capacity of "
            f"{_n(det.get('rateHint'))}/s (worker CPU {_pct(det.get('workerCpuUtilisation') or 0)}"
            f" of a core); the status record is visible after the transaction commit "
            f"(commit_interval {det.get('commitInterval')}s): consumer-side p99 "
            f"{_get(det, 'detectionDelayVisible', 'p99')}s"
        )
    if key == "connectedP99":
        return (
            f"decided {_get(det, 'connectedDecision', 'p99')}s (p99) after arrival, record "
            f"produced at {_get(det, 'connectedRecord', 'p99')}s; the rest is the transaction "
            f"commit cadence (commit_interval {det.get('commitInterval')}s, producer linger "
            f"{det.get('producerLinger')}s)"
        )
    if key == "memory":
        mem = big.get("memory") or {}
        parts = [
            f"state built by processing {_n(_get(big, 'load', 'heartbeats'))} heartbeats: "
            f"{mem.get('bytesPerMachine')} B per machine (VmRSS "
            f"{(mem.get('rssKiB') or 0) / 1024:,.0f} MiB - empty "
            f"{(mem.get('rssIdleKiB') or 0) / 1024:,.0f} MiB, peak "
            f"{(mem.get('hwmKiB') or 0) / 1024:,.0f} MiB); after a restart from the "
            f"checkpoints {mem.get('bytesPerMachineRestored')} B per machine (what processing "
            "the backlog left allocated, fetch buffers and the allocator's free memory, counts "
            "in the first figure: at small fleets it dominates)"
        ]
        if eng:
            parts.append(
                f"engine-only: key + slot + record {eng.get('slotBytesPerMachine')} B per "
                f"machine by size, {eng.get('engineBytesPerMachine')} B allocated per machine "
                "when the state is built by processing (indexes included)"
            )
        return "; ".join(parts)
    if key in ("restart", "restartAfterWeek"):
        rp = big.get("replay") or {}
        week = big.get("restartAfterWeek") or {}
        quick = big.get("restartAfterCheckpoint") or {}
        text = (
            f"{_recovery(big.get('recovery'))}; then {_n(rp.get('replayRecords'))} records "
            f"after the checkpoints were replayed (one checkpoint_interval of the fleet's own "
            f"load: {_n(_get(big, 'liveLoad', 'heartbeats'))} heartbeats); the "
            f"{_n(rp.get('recordsBeforeCheckpoints'))} records before them (a day of ticks "
            "and the heartbeats that built the state) were not read; right after the "
            f"checkpoints (nothing but ticks to replay) the restart took {quick.get('seconds')}s"
        )
        ck = eng.get("checkpoint") or {}
        if ck:
            text += (
                f"; in-process, decoding and restoring a checkpoint costs "
                f"{(ck.get('decodeMicrosecondsPerMachine') or 0) + (ck.get('restoreMicrosecondsPerMachine') or 0):.1f}"  # noqa: E501
                " us per machine"
            )
        if key == "restartAfterWeek" and week.get("how"):
            text += f"; {week['how']}"
        return text
    if key in ("readyAfterStart", "readyAfterKill"):
        st = report.get("startup") or {}
        which = st.get("afterStop" if key == "readyAfterStart" else "afterKill") or {}
        return (
            f"{_n(st.get('machines'))} machines; runs {which.get('seconds')} s (median "
            f"{which.get('median')}); an empty worker was ready "
            f"{st.get('emptyWorkerReadySeconds')}s after its start (process start-up, Kafka "
            "connections, group join, one tick for the lag)"
        )
    if key == "catchUp":
        cu = report.get("catchUp") or {}
        return (
            f"{_recovery(cu.get('recovery'))}; then {_n(cu.get('recordsBehind'))} records "
            f"waiting and {_n(_get(cu, 'replay', 'replayRecords'))} replayed after the "
            f"checkpoints: {_n(cu.get('recordsPerSecond'))} records/s overall, start included"
        )
    if key == "falseDisconnected":
        return "Disconnected records for machines that kept sending heartbeats"
    if key in MASS_OUTAGE_KEYS:
        return _outage_why(key, report)
    return ""


MASS_OUTAGE_KEYS = ("heldIdleCpu", "tickP99", "loopLagMax", "readyFlaps", "restartHeld",
                    "releaseDelay")  # fmt: skip


def _outage_why(key: str, report: dict[str, Any]) -> str:
    mo = report.get("massOutage") or {}
    t = mo.get("timing") or {}
    fleet = f"{_n(mo.get('machines'))} machines held"
    if key == "heldIdleCpu":
        return (
            f"{fleet}, {_n(mo.get('idleWindowSeconds'))} s measured; a tick looks only at "
            "machines due (the held ones are indexed by the scope that holds them)"
        )
    if key == "tickP99":
        return (
            f"{_n(mo.get('ticks'))} ticks of the last worker process, which looked at "
            f"{_n(mo.get('tickLooks'))} machines in all (restore, holds and releases); idle "
            f"held ticks p99 <= {mo.get('tickP99Idle')} s"
        )
    if key == "loopLagMax":
        return (
            "the lateness of a 100 ms timer in the last worker process (its recovery with a "
            "location held, the fleet's hold and release); long work yields every 50 ms"
        )
    if key == "readyFlaps":
        reasons = ", ".join(mo.get("flapReasons") or []) or "none"
        return f"{_n(mo.get('readyProbes'))} probes while held; reasons when not ready: {reasons}"
    if key == "restartHeld":
        runs = mo.get("restarts") or []
        return (
            "kill -9 and start at once, each run shorter than checkpoint_interval "
            f"({t.get('checkpointInterval')} s): "
            + "; ".join(
                f"{r['seconds']} s ({_n(r['replayRecords'])} records replayed)" for r in runs
            )
            + " (a replayed partition is checkpointed at once, so the replay does not grow)"
        )
    if key == "releaseDelay":
        rel = mo.get("releases") or {}
        text = (
            f"{_n(rel.get('released'))} machines declared with massOutage at their hold's end "
            f"(outage_hold {t.get('outageHold')} s; p99 {rel.get('delayP99')} s); a hold ends "
            "outage_hold after the first tick at or after the machine's deadline, and is "
            "released at the first tick after that (ticks every check_interval)"
        )
        if rel.get("tickAfterHoldEndMax") is not None:
            text += (
                f"; the releasing tick came at most {rel['tickAfterHoldEndMax']} s after the "
                f"hold's end, and the worker decided up to {rel.get('processedAfterTickMax')} s "
                f"after that tick's broker time (p99 {rel.get('processedAfterTickP99')} s)"
            )
        return text
    return ""


# the report section each goal is measured in
PHASE_OF = {
    "throughput": "throughput",
    "throughputRatio": "throughput",
    "restart": "bigState",
    "restartAfterWeek": "bigState",
    "readyAfterStart": "startup",
    "readyAfterKill": "startup",
    "catchUp": "catchUp",
    "detectionP99": "detection",
    "detectionMax": "detection",
    "connectedP99": "detection",
    "memory": "bigState",
    "falseDisconnected": "detection",
    "fastPathKept": "throughput",
    "replayRate": "replay",
    "replayDay": "replay",
    "heldIdleCpu": "massOutage",
    "tickP99": "massOutage",
    "loopLagMax": "massOutage",
    "readyFlaps": "massOutage",
    "restartHeld": "massOutage",
    "releaseDelay": "massOutage",
}


def not_measured(key: str, report: dict[str, Any]) -> str:
    phase = PHASE_OF.get(key, "")
    ph = report.get(phase)
    if not isinstance(ph, dict):
        return f"the {phase} phase did not run"
    if ph.get("error"):
        return f"the {phase} phase failed: {ph['error']}"
    if ph.get("skipped"):
        return f"the {phase} phase was left out (--phases)"
    if key == "restartAfterWeek":
        return str(_get(ph, "restartAfterWeek", "how") or "not estimated")
    return "no sample"


def evaluate(report: dict[str, Any]) -> list[dict[str, Any]]:
    values = measured_values(report)
    rows = []
    for g in GOALS:
        g = goal_for(g, report)
        v = values.get(g.key)
        row = {"key": g.key, "what": g.what, "goal": g.goal, "measured": v, "unit": g.unit}
        row.update(verdict(g, v))
        row["why"] = why(g.key, report) if row["met"] is not None else not_measured(g.key, report)
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
