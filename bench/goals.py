"""The performance goals next to the measured figures: met or missed, by how much, and why. Pure."""

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
    }


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
    "replayRate": "replay",
    "replayDay": "replay",
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
