"""A tiny `arcbeat bench` run: every phase runs against the local stack and the report has every
field. No timing is asserted (figures are benchmark results, never test outcomes)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from arcbeat.bench.goals import GOALS, evaluate, verdict
from arcbeat.bench.pyspy import WAITING, summarize
from arcbeat.bench.report import REPORT_FIELDS, render_markdown
from arcbeat.bench.stats import percentile, summary
from arcbeat.deploy.cli import main


def test_percentile_and_summary() -> None:
    values = sorted(float(i) for i in range(1, 101))
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert math.isnan(percentile([], 50))
    assert summary([]) == {"count": 0, "p50": None, "p99": None, "max": None, "mean": None}
    assert summary([2.0, 1.0])["max"] == 2.0


def test_verdicts_say_by_how_much() -> None:
    by_key = {g.key: g for g in GOALS}
    assert verdict(by_key["throughput"], 25_000)["met"] is True
    missed = verdict(by_key["throughput"], 2_000)
    assert missed["met"] is False and missed["missedBy"] == "10.0x below"
    assert verdict(by_key["detectionP99"], 3.0)["missedBy"].startswith("1.5x over")
    assert verdict(by_key["falseDisconnected"], 0)["met"] is True
    assert verdict(by_key["restart"], None) == {"met": None, "missedBy": None}


def test_mass_outage_goals_follow_the_fleet_and_the_check_interval() -> None:
    def rows(machines: int) -> dict[str, dict[str, object]]:
        report = {
            "massOutage": {
                "machines": machines,
                "timing": {"checkInterval": 0.5},
                "restartHeld": 12.0,
                "releaseDelay": 1.4,
                "readyFlaps": 0,
            }
        }
        return {r["key"]: r for r in evaluate(report)}

    quick, full = rows(100_000), rows(1_000_000)
    assert quick["restartHeld"]["met"] is False and full["restartHeld"]["met"] is True
    assert quick["releaseDelay"]["goal"] == "<= check_interval + 1 s (1.5 s)"
    assert quick["releaseDelay"]["met"] is True and quick["readyFlaps"]["met"] is True
    assert quick["heldIdleCpu"]["met"] is None  # not measured


def test_pyspy_summary_groups_by_component() -> None:
    raw = (
        "run (deploy/cli.py:1);process (streams/kafka/pipeline.py:9);handle_message "
        "(streams/decide/engine.py:3) 30\n"
        "run (deploy/cli.py:1);send (aiokafka/producer/producer.py:5) 70\n"
    )
    p = summarize(raw)
    assert p.samples == 100
    shares = dict(p.components)
    assert shares["engine (decode, status machine, slots, status records)"] == 0.3
    assert shares["producer (aiokafka: batches, produce requests)"] == 0.7


def test_pyspy_summary_counts_the_idle_event_loop_as_waiting() -> None:
    raw = (
        "run (deploy/cli.py:1);run_forever (asyncio/base_events.py:607);_run_once "
        "(asyncio/base_events.py:1922);EpollSelector.select (selectors.py:468) 60\n"
        "run (deploy/cli.py:1);HeartbeatLoop.run (streams/kafka/batch.py:195) 40\n"
        "Thread._bootstrap (threading.py:1002);_worker (concurrent/futures/thread.py:81) 50\n"
    )
    p = summarize(raw)
    assert p.samples == 100  # helper threads left out
    shares = dict(p.components)
    assert shares[WAITING] == 0.6
    assert shares["batch loop glue (streams/kafka/batch.py)"] == 0.4


@pytest.mark.services
@pytest.mark.heavy
def test_tiny_bench_writes_a_complete_report(stack: object, tmp_path: Path) -> None:
    """Every phase at its smallest meaningful size: the detection window holds the silent
    machines' deadlines (10-11 s into it) and their return; the agent is measured for 4 s
    idle and 2 s busy. The report's completeness is checked, never its figures."""
    code = main(
        [
            "bench",
            "--quick",
            "--machines",
            "2000",
            "--big",
            "4000",
            "--start-machines",
            "200",
            "--restarts",
            "1",
            "--tick-hours",
            "0.1",
            "--checkpoint-interval",
            "10",
            "--throughput-window",
            "8",
            "--detect-window",
            "20",
            "--agent-window",
            "4",
            "--no-variants",
            "--delay-pairs",
            "1",
            "--no-profile",
            "--outage-machines",
            "600",
            "--outage-interval",
            "3",
            "--outage-hold",
            "45",
            "--outage-restarts",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    report = json.loads((tmp_path / "latest.json").read_text())
    errors = {k: v.get("error") for k, v in report.items() if isinstance(v, dict) and "error" in v}
    assert code == 0, f"phases failed: {errors}"
    for name in REPORT_FIELDS:
        assert name in report, f"report has no {name!r}"
    for name in ("nproc", "memoryMiB", "cpuModel"):
        assert report["machine"][name], name
    for name in ("python", "faust-streaming", "aiokafka", "kafka", "orjson"):
        assert report["versions"][name], name

    t = report["throughput"]
    for name in ("rate", "steadyRate", "cpuUtilisation", "records", "startupSeconds"):
        assert t["worker"][name] is not None, name
    assert t["worker"]["records"] > 0
    assert t["aiokafka"]["records"] == t["records"]
    assert t["kcat"]["records"] == t["records"]
    assert t["ratioWorkerToAiokafka"] > 0
    assert len(t["delayCost"]["pairs"]) == 1 and t["delayCost"]["kept"] > 0

    rp = report["replay"]
    assert 0 < rp["heartbeats"] <= t["records"]  # what the worker had committed
    assert rp["ticks"] > 0 and rp["rate"] > 0 and rp["processes"] >= 1
    assert rp["cpuSeconds"] > 0 and rp["rateOnFreeCores"] >= rp["ratePerCpuSecond"] > 0

    d = report["detection"]
    assert d["detectionDelay"]["count"] > 0
    assert d["connectedVisible"]["count"] > 0
    assert d["falseDisconnected"] == 0
    assert d["silentNotDeclared"] == 0

    st = report["startup"]
    assert st["machinesInState"] == st["machinesAfterRestarts"] == st["machinesAfterKills"] == 200
    assert st["afterStop"]["max"] > 0 and st["afterKill"]["max"] > 0

    big = report["bigState"]
    assert big["machinesInState"] == big["machinesAfterRestart"] == 4000
    assert big["memory"]["bytesPerMachine"] is not None
    assert big["restartSeconds"] > 0
    assert big["restartAfterCheckpoint"]["seconds"] > 0
    assert big["replay"]["replayRecords"] >= big["liveLoad"]["heartbeats"]
    assert big["scrape"]["series"] > 0

    cu = report["catchUp"]
    assert cu["machinesAfter"] == 4000
    assert cu["recordsBehind"] >= cu["heartbeatsWaiting"] == 8000
    assert cu["seconds"] > 0

    ag = report["agent"]
    assert ag["installed"]["totalMiB"] > 0 and ag["idleRssMiB"] > 0
    assert ag["cpuMillisecondsPerHeartbeat"] > 0 and ag["exitCodes"] == [0, 0]
    mo = report["massOutage"]
    assert mo["releases"]["released"] == 600 and mo["heldAtEnd"] == 0
    assert mo["releases"]["otherDisconnected"] == 0  # every silent machine held, then released
    assert mo["heldAfterRestart"] == mo["silentFirst"]["machines"]
    for key in ("heldIdleCpu", "tickP99", "loopLagMax", "readyFlaps", "restartHeld"):
        assert mo[key] is not None, key

    e = report["engine"]
    assert e["rate"] > 0 and e["profile"] and e["fastPathProfile"]
    assert e["fastPath"]["rate"] > 0 and e["checkpoint"]["bytesPerMachine"] > 0

    keys = {g["key"] for g in report["goals"]}
    assert {g.key for g in GOALS} <= keys
    for g in report["goals"]:
        if g["met"] is False:
            assert g["missedBy"] and g["why"], g

    md = (tmp_path / "latest.md").read_text()
    assert md == render_markdown(report)
    assert report["command"].startswith("arcbeat bench --machines 2000") and (
        report["command"] in md
    )
    for heading in (
        "## Performance goals",
        "## Throughput",
        "## Detection",
        "## Engine only",
        "## Start, restart and kill -9",
        "machines in state: memory, /metrics, restart",
        "## Catch-up",
        "## The machine agent",
        "## Mass outage",
    ):
        assert heading in md
    for g in report["goals"]:
        assert g["what"] in md
