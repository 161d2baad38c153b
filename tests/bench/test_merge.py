"""A run of some phases keeps the figures of the others from the report it is written over
(bench/merge.py), and the README's table says where they came from (bench/readme.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from arcbeat.bench import merge as merge_module
from arcbeat.bench.merge import merge, merge_file
from arcbeat.bench.readme import block
from arcbeat.bench.runner import PHASES

FULL = "arcbeat bench"
QUICK = "arcbeat bench --quick --phases massOutage"


def _report(command: str, started: str, ran: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"command": command, "startedAt": started, "notes": ["shared machine"]}
    for phase in PHASES:
        out[phase] = ran.get(phase, {"skipped": True})
    return out


def test_the_phases_left_out_keep_their_figures() -> None:
    earlier = _report(
        FULL,
        "2026-12-01T10:00:00Z",
        {"startup": {"seconds": 1.5}, "massOutage": {"heldIdleCpu": 0.0556}},
    )
    run = _report(QUICK, "2026-12-07T18:00:00Z", {"massOutage": {"heldIdleCpu": 0.04}})
    run["machine"] = {"loadAverage": [7.6, 5.3, 3.1]}
    out = merge(run, earlier, PHASES)
    assert out["startup"] == {"seconds": 1.5}  # kept
    assert out["massOutage"] == {"heldIdleCpu": 0.04}  # this run's
    assert out["engine"] == {"skipped": True}  # neither ran it
    assert out["command"] == FULL  # the frame stays the earlier report's
    assert out["mergedPhases"] == {
        "massOutage": {
            "startedAt": "2026-12-07T18:00:00Z",
            "command": QUICK,
            "quick": None,
            "machine": {"loadAverage": [7.6, 5.3, 3.1]},
        }
    }
    assert any("massOutage" in n for n in out["notes"])
    assert earlier["massOutage"] == {"heldIdleCpu": 0.0556}  # neither input is changed
    assert "; massOutage of 2026-12-07):" in block(out)
    # merged again with a later run of startup: both provenances stay, one note
    later = _report(FULL, "2026-12-08T09:00:00Z", {"startup": {"seconds": 1.2}})
    again = merge(later, out, PHASES)
    assert again["startup"] == {"seconds": 1.2}
    assert again["massOutage"] == {"heldIdleCpu": 0.04}
    assert sorted(again["mergedPhases"]) == ["massOutage", "startup"]
    assert sum(n.startswith("Figures of ") for n in again["notes"]) == 1


def test_a_failed_phase_is_reported_failed() -> None:
    earlier = _report(FULL, "2026-12-01T10:00:00Z", {"massOutage": {"heldIdleCpu": 0.05}})
    run = _report(QUICK, "2026-12-07T18:00:00Z", {"massOutage": {"error": "worker died"}})
    assert merge(run, earlier, PHASES)["massOutage"] == {"error": "worker died"}


def test_merge_file_without_or_with_a_bad_earlier_report(tmp_path: Path) -> None:
    run = _report(QUICK, "2026-12-07T18:00:00Z", {"massOutage": {"heldIdleCpu": 0.04}})
    assert merge_file(run, tmp_path / "latest.json", PHASES) is run
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SystemExit, match="cannot read the earlier report"):
        merge_file(run, bad, PHASES)


def test_the_command_line_merges_into_a_report(tmp_path: Path) -> None:
    earlier = _report(FULL, "2026-12-01T10:00:00Z", {"startup": {"seconds": 1.5}})
    into = tmp_path / "latest.json"
    into.write_text(json.dumps(earlier))
    run_path = tmp_path / "run.json"
    run_path.write_text(
        json.dumps(_report(QUICK, "2026-12-07T18:00:00Z", {"massOutage": {"heldIdleCpu": 0.04}}))
    )
    assert merge_module.main([str(run_path), str(into)]) == 0
    written = json.loads(into.read_text())
    assert written["startup"] == {"seconds": 1.5}
    assert written["massOutage"] == {"heldIdleCpu": 0.04}
    assert (tmp_path / "latest.md").exists()
    assert merge_module.main([str(tmp_path / "missing.json"), str(into)]) == 2
