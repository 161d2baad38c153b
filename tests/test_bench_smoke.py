"""A tiny `arcbeat bench` run: every phase runs against the local stack and the report has every
field. No timing is asserted (figures are benchmark results, never test outcomes)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from arcbeat.bench.goals import GOALS, verdict
from arcbeat.bench.pyspy import summarize
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


def test_pyspy_summary_groups_by_component() -> None:
    raw = (
        "run (deploy/cli.py:1);process (streams/worker.py:9);handle_message "
        "(streams/engine.py:3) 30\n"
        "run (deploy/cli.py:1);send (aiokafka/producer/producer.py:5) 70\n"
    )
    p = summarize(raw)
    assert p.samples == 100
    shares = dict(p.components)
    assert shares["engine (decode, status machine, state JSON)"] == 0.3
    assert shares["producer (aiokafka: batches, produce requests)"] == 0.7


@pytest.mark.services
def test_tiny_bench_writes_a_complete_report(stack: object, tmp_path: Path) -> None:
    code = main(
        [
            "bench",
            "--quick",
            "--machines",
            "2000",
            "--big",
            "4000",
            "--throughput-window",
            "8",
            "--detect-window",
            "30",
            "--no-variants",
            "--no-profile",
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

    d = report["detection"]
    assert d["detectionDelay"]["count"] > 0
    assert d["connectedVisible"]["count"] > 0
    assert d["falseDisconnected"] == 0
    assert d["silentNotDeclared"] == 0

    big = report["bigState"]
    assert big["fleetAfterRestart"] == {"Connected": 4000 - 200, "Disconnected": 200}
    assert big["memory"]["bytesPerMachine"] is not None
    assert big["restartSeconds"] > 0
    assert big["scrape"]["offlineSeries"] == 200

    e = report["engine"]
    assert e["rate"] > 0 and e["profile"]

    keys = {g["key"] for g in report["goals"]}
    assert {g.key for g in GOALS} <= keys
    for g in report["goals"]:
        if g["met"] is False:
            assert g["missedBy"] and g["why"], g

    md = (tmp_path / "latest.md").read_text()
    assert md == render_markdown(report)
    for heading in ("## SPEC §8 goals", "## Throughput", "## Detection", "## Engine only"):
        assert heading in md
