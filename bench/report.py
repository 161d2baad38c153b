"""The bench report: JSON (every figure) and Markdown (the same, for people). Pure."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# every top-level field a complete report has (the smoke test checks them)
REPORT_FIELDS = (
    "schema",
    "startedAt",
    "seconds",
    "command",
    "quick",
    "machine",
    "versions",
    "settings",
    "engine",
    "throughput",
    "detection",
    "startup",
    "bigState",
    "catchUp",
    "agent",
    "massOutage",
    "goals",
    "notes",
)


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        if abs(v) >= 100:
            return f"{v:,.0f}{unit}"
        return f"{v:,.3g}{unit}"
    if isinstance(v, int):
        return f"{v:,}{unit}"
    return f"{v}{unit}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [_fmt(c) if not isinstance(c, str) else c for c in r]
        out.append(
            "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"
        )
    return out


def _summary_row(name: str, s: dict[str, Any] | None) -> list[Any]:
    s = s or {}
    return [name, s.get("count"), s.get("p50"), s.get("p99"), s.get("max"), s.get("mean")]


def _pressure(p: dict[str, float] | None) -> str:
    if not p:
        return "—"
    return " / ".join(f"{p.get(k, 0):.0%}" for k in ("avg10", "avg60", "avg300"))


def _pressure_line(ph: dict[str, Any]) -> list[str]:
    return [
        "",
        f"Phase: {_fmt(ph.get('phaseSeconds'))} s; CPU pressure of the machine at its end "
        f"(10 s / 60 s / 300 s): {_pressure(ph.get('cpuPressureAtEnd'))}.",
    ]


def _mib(kib: Any) -> str:
    return f"{_fmt((kib or 0) / 1024)} MiB"


def _phase_problem(r: dict[str, Any], name: str, title: str) -> list[str]:
    """A section for a phase that failed or was skipped (empty when it ran)."""
    ph = r.get(name)
    if not isinstance(ph, dict):
        return []
    if ph.get("error"):
        return ["", f"## {title}", "", f"Phase failed: `{ph['error']}`"]
    if ph.get("skipped"):
        return ["", f"## {title}", "", "Not run (left out by --phases)."]
    return []


def render_markdown(r: dict[str, Any]) -> str:
    m, v = r.get("machine", {}), r.get("versions", {})
    lines = [
        "# arcbeat bench report",
        "",
        f"Generated at {r.get('startedAt')} in {_fmt(r.get('seconds'))} s"
        + (" (quick variant)" if r.get("quick") else "")
        + " by:",
        "",
        "```",
        str(r.get("command")),
        "```",
        "",
        "## Machine and versions",
        "",
    ]
    lines += _table(
        ["", ""],
        [
            ["CPU", f"{m.get('nproc')} x {m.get('cpuModel')}"],
            ["memory", f"{_fmt(m.get('memoryMiB'))} MiB"],
            ["kernel", m.get("kernel", "")],
            [
                "load average at start / end",
                f"{m.get('loadAverage')} / {m.get('loadAverageEnd')} (shared machine)",
            ],
            [
                "CPU pressure at start / end (share of time runnable tasks waited for a CPU, "
                "10 s / 60 s / 300 s)",
                f"{_pressure(m.get('cpuPressure'))} / {_pressure(m.get('cpuPressureEnd'))}",
            ],
            *[[k, str(val)] for k, val in v.items()],
        ],
    )
    lines += ["", "## Performance goals", ""]
    goal_rows = []
    for g in r.get("goals", []):
        verdict = {True: "met", False: "**missed**", None: "not measured"}[g.get("met")]
        goal_rows.append(
            [
                g["what"],
                g["goal"],
                _fmt(g.get("measured"), g.get("unit", "")),
                verdict,
                g.get("missedBy") or "",
                g.get("why") or "",
            ]
        )
    lines += _table(["what", "goal", "measured", "verdict", "missed by", "why"], goal_rows)
    lines += _engine(r)
    lines += _throughput(r)
    lines += _detection(r)
    lines += _startup(r)
    lines += _bigstate(r)
    lines += _catchup(r)
    lines += _agent(r)
    lines += _massoutage(r)
    lines += ["", "## Settings", "", "```json", json.dumps(r.get("settings", {}), indent=2), "```"]
    notes = r.get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _profile_table(rows: list[dict[str, Any]]) -> list[str]:
    return _table(
        ["function", "calls", "own time", "us per record", "cumulative"],
        [
            [
                p["function"],
                p["calls"],
                f"{p['selfShare']:.1%}",
                p["selfMicrosecondsPerRecord"],
                f"{p['cumulativeShare']:.1%}",
            ]
            for p in rows
        ],
    )


def _engine(r: dict[str, Any]) -> list[str]:
    title = "Engine only (in process, no Kafka)"
    eng = r.get("engine") or {}
    if not eng.get("rate"):
        return _phase_problem(r, "engine", title)
    fast = eng.get("fastPath") or {}
    ck = eng.get("checkpoint") or {}
    lines = [
        "",
        f"## {title}",
        "",
        f"`Engine.handle_message` over {_fmt(eng.get('records'))} pre-encoded records of "
        f"{_fmt(eng.get('machines'))} machines (same mix as the throughput run): "
        f"**{_fmt(eng.get('rate'))}/s**, {_fmt(eng.get('microsecondsPerRecord'))} us per "
        f"record. Fast path (one more heartbeat of every Connected machine): "
        f"**{_fmt(fast.get('rate'))}/s**, {_fmt(fast.get('microsecondsPerRecord'))} us per "
        f"record; the same heartbeats through the general path: "
        f"{_fmt(fast.get('generalPathMicrosecondsPerRecord'))} us.",
        "",
        f"Fast path with early warning's delivery-delay bookkeeping / without, the engine "
        f"alone (not the goal fastPathKept, which is the worker's: see Throughput): "
        f"{_fmt((fast.get('earlyWarning') or {}).get('kept'))} "
        f"({(fast.get('earlyWarning') or {}).get('how')}).",
        "",
        f"Memory: key + slot + record {_fmt(eng.get('slotBytesPerMachine'))} B per machine by "
        f"size; {_fmt(eng.get('engineBytesPerMachine'))} B allocated per machine when the state "
        f"is built by processing (indexes included).",
        "",
        f"Checkpoints: {_fmt(ck.get('bytesPerMachine'))} B per machine; encode "
        f"{_fmt(ck.get('encodeMicrosecondsPerMachine'))} us, decode "
        f"{_fmt(ck.get('decodeMicrosecondsPerMachine'))} us, restore (indexes rebuilt) "
        f"{_fmt(ck.get('restoreMicrosecondsPerMachine'))} us per machine. A tick over a "
        f"partition of {_fmt(ck.get('machinesPerPartition'))} machines "
        f"({_fmt(ck.get('countKeysPerPartition'))} count keys): "
        f"{_fmt(ck.get('tickMicroseconds'))} us.",
        "",
        "cProfile of the mix, by own time:",
        "",
    ]
    lines += _profile_table(eng.get("profile", []))
    if eng.get("fastPathProfile"):
        lines += ["", "cProfile of the fast path, by own time:", ""]
        lines += _profile_table(eng["fastPathProfile"])
    return lines


def _delay_cost(dc: dict[str, Any]) -> list[str]:
    """The goal fastPathKept: workers with early warning's delay bookkeeping and without."""
    if not dc.get("pairs"):
        return []
    lines = [
        "",
        f"Early warning's delivery-delay bookkeeping (goal fastPathKept): steady state "
        f"**{_fmt(dc.get('rateWith'))}/s** with it, {_fmt(dc.get('rateWithout'))}/s without, "
        f"kept **{_fmt(dc.get('kept'))}**. Method: {dc.get('how')}.",
        "",
    ]
    return lines + _table(
        ["pair", "first", "with /s", "without /s", "kept", "CPU us/record with", "without"],
        [
            [
                i + 1,
                p.get("first"),
                p.get("rateWith"),
                p.get("rateWithout"),
                p.get("kept"),
                p.get("cpuMicrosecondsPerRecordWith"),
                p.get("cpuMicrosecondsPerRecordWithout"),
            ]
            for i, p in enumerate(dc["pairs"])
        ],
    )


def _throughput(r: dict[str, Any]) -> list[str]:
    title = "Throughput: one worker against raw consumers, same records"
    t = r.get("throughput") or {}
    if not t.get("worker"):
        return _phase_problem(r, "throughput", title)
    w = t.get("worker") or {}
    lines = [
        "",
        f"## {title}",
        "",
        f"{_fmt(t.get('records'))} records ({_fmt(t.get('machines'))} machines x "
        f"({t.get('rounds')} + {t.get('steadyRounds')}) rounds, "
        f"{_fmt(t.get('recordBytes'))} B each; {t.get('mix')}), "
        f"loaded at {_fmt(t.get('load', {}).get('rate'))}/s before any consumer started. "
        f"The worker is timed from its first record, for at most {_fmt(t.get('window'))} s.",
        "",
    ]

    def row(name: str, x: dict[str, Any]) -> list[Any]:
        return [
            name,
            x.get("records"),
            x.get("seconds"),
            x.get("rate"),
            x.get("onboardingRate"),
            x.get("steadyStateRate"),
            x.get("cpuUtilisation"),
            x.get("runQueueShare"),
            x.get("cpuMicrosecondsPerRecord"),
        ]

    rows = [row("arcbeat worker (default settings)", w)]
    for name, vw in (t.get("variants") or {}).items():
        rows.append(row(f"worker, {name}", vw))
    for key in ("aiokafka", "kcat"):
        c = t.get(key)
        if c:
            rows.append(
                [
                    f"{c['tool']} ({c.get('detail', '')})",
                    c["records"],
                    c["seconds"],
                    c["rate"],
                    None,
                    None,
                    None,
                    None,
                    None,
                ]
            )
    lines += _table(
        [
            "consumer",
            "records",
            "seconds",
            "records/s",
            "onboarding /s",
            "steady state /s",
            "CPU (cores)",
            "waiting for a CPU",
            "CPU us/record",
        ],
        rows,
    )
    lines += [
        "",
        "CPU (cores): CPU time / wall time; waiting for a CPU: time the worker was ready to run "
        "but every core was busy (run queue, /proc/<pid>/schedstat), i.e. time other processes "
        f"took; CPU pressure of the machine at the end of the phase: "
        f"{_pressure(t.get('cpuPressureAtEnd'))} (10 s / 60 s / 300 s).",
        "",
        "records/s: the whole run; onboarding: the part where a third of the records are "
        "first heartbeats; steady state: the part where every machine is known (the "
        "sustained rate).",
        "",
        f"Sustained (steady state) worker / aiokafka: "
        f"**{_fmt(t.get('ratioWorkerToAiokafka'))}**. Best 10 s of the "
        f"worker: {_fmt(w.get('peakRate10s'))}/s; longest spell without progress: "
        f"{_fmt(w.get('longestStallSeconds'))} s. Worker start-up to first record: "
        f"{_fmt(w.get('startupSeconds'))} s. VmRSS grew "
        f"{_fmt((w.get('rssGrowthKiB') or 0) / 1024)} MiB over the run "
        f"({_fmt(w.get('machinesOnboarded'))} machines onboarded).",
    ]
    lines += _delay_cost(t.get("delayCost") or {})
    spy = w.get("pyspy") or {}
    if spy.get("available"):
        lines += [
            "",
            f"Where the worker's time goes (py-spy, {spy['samples']} samples of its event "
            "loop, idle ones included):",
            "",
        ]
        lines += _table(
            ["component", "share"],
            [[c["component"], f"{c['share']:.1%}"] for c in spy["components"]],
        )
        lines += ["", "Hottest functions (innermost frame):", ""]
        lines += _table(
            ["function", "share"], [[f["frame"], f"{f['share']:.1%}"] for f in spy["topSelf"]]
        )
    elif spy:
        lines += ["", f"py-spy: {spy.get('why')}"]
    return lines


def _detection(r: dict[str, Any]) -> list[str]:
    d = r.get("detection") or {}
    title = "Detection delay and Connected latency"
    if not d.get("detectionDelay"):
        return _phase_problem(r, "detection", title)
    send = d.get("send") or {}
    lines = [
        "",
        f"## {title}, {_fmt(d.get('machines'))} machines",
        "",
        f"The fleet is put in state by its own heartbeats, processed by a real worker: every "
        f"machine connects within the first interval and sends a heartbeat every "
        f"{_fmt(d.get('interval'))} s (disconnect_after {_fmt(d.get('disconnectAfter'))} s; "
        f"time is compressed so that deadlines come within minutes): a live load of "
        f"{_fmt(d.get('liveRate'))}/s, {d.get('utilisationTarget', 0):.0%} of the worker's "
        + ("measured" if d.get("rateHintMeasured", True) else "assumed (not measured)")
        + f" {_fmt(d.get('rateHint'))}/s. After {_fmt(d.get('warmupSeconds'))} s of it, "
        f"{_fmt(d.get('silent'))} machines reach their deadline over a "
        f"{_fmt(d.get('window'))} s window and resume 5 s after it. "
        f"{_fmt(send.get('sent'))} messages sent (lateness p99 "
        f"{_fmt((send.get('sendLateness') or {}).get('p99'))} s); the worker used "
        f"{d.get('workerCpuUtilisation') or 0:.0%} of a core; "
        f"{_fmt(d.get('excludedBeforeReady'))} deadlines fell before it was ready and are "
        "left out.",
        "",
    ]
    lines += _table(
        ["seconds", "n", "p50", "p99", "max", "mean"],
        [
            _summary_row("detection delay (detectionDelaySeconds)", d.get("detectionDelay")),
            _summary_row(
                "detection, seen by a read_committed consumer", d.get("detectionDelayVisible")
            ),
            _summary_row("Connected: changedAt - heartbeat arrival", d.get("connectedDecision")),
            _summary_row("Connected: status record timestamp - arrival", d.get("connectedRecord")),
            _summary_row(
                "Connected: seen by a read_committed consumer - arrival",
                d.get("connectedVisible"),
            ),
        ],
    )
    lines += [
        "",
        f"Status records: {d.get('statusRecords')}; false Disconnected: "
        f"{d.get('falseDisconnected')}; silent machines never declared: "
        f"{d.get('silentNotDeclared')}; scope events: {d.get('scopeEvents')}.",
    ]
    return lines + _pressure_line(d)


def _startup(r: dict[str, Any]) -> list[str]:
    st = r.get("startup") or {}
    title = "Start, restart and kill -9 of a small deployment's worker"
    if not st.get("afterStop"):
        return _phase_problem(r, "startup", title)
    stop, kill = st.get("afterStop") or {}, st.get("afterKill") or {}
    lines = [
        "",
        f"## {title}",
        "",
        f"{_fmt(st.get('machines'))} machines in state ({_fmt(st.get('machinesInState'))} "
        f"held; {_fmt(st.get('machinesAfterRestarts'))} after the restarts, "
        f"{_fmt(st.get('machinesAfterKills'))} after the kills). {st.get('method')}.",
        "",
    ]
    lines += _table(
        ["", "runs (s)", "median", "max"],
        [
            ["empty worker, first start", st.get("emptyWorkerReadySeconds"), None, None],
            ["stopped (SIGTERM), started again", str(stop.get("seconds")), stop.get("median"),
             stop.get("max")],
            ["killed (SIGKILL), started again at once", str(kill.get("seconds")),
             kill.get("median"), kill.get("max")],
        ],
    )  # fmt: skip
    return lines + _pressure_line(st)


def _bigstate(r: dict[str, Any]) -> list[str]:
    big = r.get("bigState") or {}
    title = "Big state: memory, /metrics, restart"
    if not big.get("memory"):
        return _phase_problem(r, "bigState", title)
    mem, sc = big.get("memory") or {}, big.get("scrape") or {}
    load, build = big.get("load") or {}, big.get("build") or {}
    rp, live = big.get("replay") or {}, big.get("liveLoad") or {}
    week = big.get("restartAfterWeek") or {}
    rec = big.get("recovery") or []
    quick = big.get("restartAfterCheckpoint") or {}
    quick_replay = quick.get("replay") or {}
    lines = [
        "",
        f"## {_fmt(big.get('machines'))} machines in state: memory, /metrics, restart",
        "",
        f"Built through the live path: {_fmt(load.get('ticks'))} ticks "
        f"({_fmt(load.get('tickHours'))} h of every partition) then "
        f"{_fmt(load.get('heartbeats'))} heartbeats (3 per machine), produced at "
        f"{_fmt(load.get('rate'))}/s while one worker processed them: "
        f"{_fmt(big.get('machinesInState'))} machines in state "
        f"{_fmt(build.get('seconds'))} s after the first record "
        f"({_fmt(build.get('heartbeatsPerSecond'))} heartbeats/s, "
        f"{_fmt(build.get('recordsPerSecond'))} records/s with the ticks).",
        "",
    ]
    lines += _table(
        ["figure", "value"],
        [
            ["VmRSS empty worker", _mib(mem.get("rssIdleKiB"))],
            ["VmRSS with the state", _mib(mem.get("rssKiB"))],
            ["VmHWM (peak)", _mib(mem.get("hwmKiB"))],
            ["memory per machine (built by processing)", f"{_fmt(mem.get('bytesPerMachine'))} B"],
            [
                "memory per machine (after a restart from the checkpoints)",
                f"{_fmt(mem.get('bytesPerMachineRestored'))} B",
            ],
            ["/metrics scrape (each)", f"{sc.get('seconds')} s"],
            ["/metrics size", f"{_fmt(sc.get('bytes'))} B"],
            [
                "series exposed (all / arcbeat_*)",
                f"{_fmt(sc.get('series'))} / {_fmt(sc.get('arcbeatSeries'))}",
            ],
            [
                "arcbeat_machine_offline series vs cap",
                f"{_fmt(sc.get('offlineSeries'))} / {_fmt(sc.get('offlineCap'))} "
                f"(overflow gauge {_fmt(sc.get('overflow'))})",
            ],
            ["wait for a checkpoint of the whole state",
             f"{_fmt(big.get('checkpointWaitSeconds'))} s"],
            [
                "fleet load processed after the checkpoints",
                f"{_fmt(live.get('heartbeats'))} heartbeats (one checkpoint_interval of the "
                f"fleet at {_fmt(live.get('fleetHeartbeatInterval'))} s)",
            ],
            [
                "records replayed by the restart / before the checkpoints (not read)",
                f"{_fmt(rp.get('replayRecords'))} / {_fmt(rp.get('recordsBeforeCheckpoints'))}",
            ],
            [
                "restart right after the checkpoints (restore only)",
                f"{_fmt(quick.get('seconds'))} s ({_fmt(quick_replay.get('replayRecords'))} "
                "records replayed)",
            ],
            ["worker stop (SIGTERM)", f"{_fmt(big.get('stopSeconds'))} s"],
            [
                "**restart to /readyz 200** (a checkpoint interval of load to replay)",
                f"**{_fmt(big.get('restartSeconds'))} s**",
            ],
            [
                "checkpoint restore inside it (worker log)",
                "; ".join(f"{x['seconds']} s, {x['machines']:,} machines" for x in rec) or "—",
            ],
            ["machines after the restart", _fmt(big.get("machinesAfterRestart"))],
            ["restart after a week (estimate)", f"{_fmt(week.get('seconds'))} s"],
        ],
    )  # fmt: skip
    lines += ["", f"Restart method: {big.get('restartMethod')}."]
    if week.get("how"):
        lines += ["", f"After a week: {week['how']}."]
    return lines + _pressure_line(big)


def _agent(r: dict[str, Any]) -> list[str]:
    ag = r.get("agent") or {}
    title = "The machine agent (arcbeat-agent)"
    if not ag.get("installed"):
        return _phase_problem(r, "agent", title)
    lines = ["", f"## {title}", "", f"{ag.get('method')}.", ""]
    lines += _table(
        ["figure", "value"],
        [
            ["**installed size**", f"**{_fmt(_get(ag, 'installed', 'totalMiB'))} MiB**"],
            [
                "by package (KiB)",
                ", ".join(
                    f"{k} {v}" for k, v in (_get(ag, "installed", "byPackageKiB") or {}).items()
                ),
            ],
            ["**idle RSS**", f"**{_fmt(ag.get('idleRssMiB'))} MiB**"],
            ["idle CPU", f"{_fmt(ag.get('idleCpuPercent'))} %"],
            ["**CPU per heartbeat**", f"**{_fmt(ag.get('cpuMillisecondsPerHeartbeat'))} ms**"],
            [
                "heartbeats measured",
                f"{_fmt(ag.get('heartbeatsMeasured'))} "
                f"({_fmt(ag.get('heartbeatsPerSecondMeasured'))} per s)",
            ],
        ],
    )
    return lines


def _catchup(r: dict[str, Any]) -> list[str]:
    cu = r.get("catchUp") or {}
    title = "Catch-up after the workers were stopped"
    if not cu.get("seconds"):
        return _phase_problem(r, "catchUp", title)
    rec = cu.get("recovery") or []
    lines = [
        "",
        f"## {title}",
        "",
        f"{_fmt(cu.get('machines'))} machines in state; {_fmt(cu.get('heartbeatsWaiting'))} "
        f"heartbeats produced while the worker was stopped ({_fmt(cu.get('recordsBehind'))} "
        f"records behind its committed offsets, {_fmt(_get(cu, 'replay', 'replayRecords'))} "
        f"more to replay after its checkpoints). {cu.get('method')}.",
        "",
    ]
    lines += _table(
        ["figure", "value"],
        [
            ["**caught up (/readyz 200) after start**", f"**{_fmt(cu.get('seconds'))} s**"],
            [
                "checkpoint restore inside it (worker log)",
                "; ".join(f"{x['seconds']} s, {x['machines']:,} machines" for x in rec) or "—",
            ],
            ["records per second overall (start included)", _fmt(cu.get("recordsPerSecond"))],
            ["worker CPU", f"{_fmt(cu.get('workerCpuSeconds'))} s"],
            ["machines after", _fmt(cu.get("machinesAfter"))],
            ["VmRSS after", _mib(cu.get("rssKiB"))],
        ],
    )
    return lines + _pressure_line(cu)


def _massoutage(r: dict[str, Any]) -> list[str]:
    mo = r.get("massOutage") or {}
    title = "Mass outage: a held fleet"
    if mo.get("heldIdleCpu") is None:
        return _phase_problem(r, "massOutage", title)
    t = mo.get("timing") or {}
    first = mo.get("silentFirst") or {}
    rel = mo.get("releases") or {}
    lines = [
        "",
        f"## {title}",
        "",
        f"{_fmt(mo.get('machines'))} machines in state; heartbeat interval "
        f"{_fmt(t.get('heartbeatInterval'))} s, deadline {_fmt(t.get('disconnectAfter'))} s, "
        f"outage_hold {_fmt(t.get('outageHold'))} s. First {first.get('location')} "
        f"({_fmt(first.get('machines'))} machines) silent and held, then the whole fleet. "
        f"{mo.get('method')}",
        "",
    ]
    lines += _table(
        ["figure", "value"],
        [
            ["**CPU while held and idle**", f"**{_fmt((mo.get('heldIdleCpu') or 0) * 100)} %** "
             f"of a core ({_fmt(mo.get('idleWindowSeconds'))} s)"],
            ["**tick p99** (all ticks of the last process) / idle held ticks",
             f"**{_fmt(mo.get('tickP99'))} s** / {_fmt(mo.get('tickP99Idle'))} s"],
            ["ticks / machines looked at", f"{_fmt(mo.get('ticks'))} / "
             f"{_fmt(mo.get('tickLooks'))}"],
            ["**event loop lag, max**", f"**{_fmt(mo.get('loopLagMax'))} s**"],
            ["**/readyz not ready while held**", f"**{_fmt(mo.get('readyFlaps'))}** of "
             f"{_fmt(mo.get('readyProbes'))} probes"],
            ["**restart with the location held** (slowest)",
             f"**{_fmt(mo.get('restartHeld'))} s**"],
            ["restarts (kill -9, runs shorter than checkpoint_interval)", "; ".join(
                f"{x['seconds']} s, {_fmt(x['replayRecords'])} records replayed"
                for x in mo.get("restarts") or []) or "—"],
            ["**release after the hold's end**, max / p99",
             f"**{_fmt(mo.get('releaseDelay'))} s** / {_fmt(rel.get('delayP99'))} s"],
            ["released (massOutage) / other Disconnected",
             f"{_fmt(rel.get('released'))} / {_fmt(rel.get('otherDisconnected'))}"],
            ["held at the end", _fmt(mo.get("heldAtEnd"))],
            ["worker CPU (last process)", f"{_fmt(mo.get('workerCpuSeconds'))} s"],
        ],
    )  # fmt: skip
    return lines + _pressure_line(mo)


def _get(data: dict[str, Any], *path: str) -> Any:
    cur: Any = data
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return cur


def write_report(report: dict[str, Any], out_dir: Path, name: str = "latest") -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md = out_dir / f"{name}.json", out_dir / f"{name}.md"
    js.write_text(json.dumps(report, indent=2, sort_keys=False, default=str) + "\n")
    md.write_text(render_markdown(report))
    return md, js
