"""Prometheus alert rules: promtool checks them and runs their unit tests; the contract holds.

Needs promtool (Debian package prometheus); fails, never skips, when it is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.paths import REPO

PROM_DIR = REPO / "deploy" / "prometheus"
RULE_FILES = sorted((PROM_DIR / "rules").glob("*.yml"))
TEST_FILES = sorted((PROM_DIR / "tests").glob("*.yml"))

# The alert names other parts of arcbeat (Alertmanager, dashboards, README) rely on.
CONTRACT_ALERTS = {
    "ArcMachineOffline",
    "ArcMachineOfflineInMaintenance",
    "ArcLocationOfflineRatio",
    "ArcFleetOfflineRatio",
    "ArcScopeSilent",
    "ArcLocationDeliveryDegraded",
    "ArcPipelineStalled",
    "ArcPipelineLagging",
    "ArcDlqRateHigh",
    "ArcCapacityWarning",
    "ArcCapacityCritical",
}
SEVERITIES = {"page", "ticket", "info"}
# Labels Alertmanager groups and inhibits machine alerts by.
MACHINE_LABELS = {"subscription", "resource_group", "location"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found on PATH: install it (Debian: apt-get install prometheus) "
            "to check and unit-test deploy/prometheus/rules"
        )
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for f in RULE_FILES:
        for group in load_yaml(f)["groups"]:
            rules.extend(r for r in group["rules"] if "alert" in r)
    return rules


def test_rule_and_test_files_exist() -> None:
    assert RULE_FILES, f"no rule files under {PROM_DIR / 'rules'}"
    assert TEST_FILES, f"no promtool unit tests under {PROM_DIR / 'tests'}"


def test_promtool_check_rules() -> None:
    result = run("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests(test_file: Path) -> None:
    result = run("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_contract_alert_names_are_defined() -> None:
    names = {r["alert"] for r in alert_rules()}
    missing = CONTRACT_ALERTS - names
    assert not missing, f"alerts missing from {[f.name for f in RULE_FILES]}: {sorted(missing)}"


def test_every_alert_has_severity_and_annotations() -> None:
    for rule in alert_rules():
        where = f"alert {rule['alert']}"
        assert rule.get("labels", {}).get("severity") in SEVERITIES, (
            f"{where}: severity label must be one of {sorted(SEVERITIES)}"
        )
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook"):
            assert annotations.get(key), f"{where}: annotation {key!r} is missing"


def test_every_alert_has_firing_and_quiet_unit_tests() -> None:
    """Each alert has a promtool case where it fires and one where it does not."""
    firing: set[str] = set()
    quiet: set[str] = set()
    machine_labels_tested = False
    for f in TEST_FILES:
        for case in load_yaml(f).get("tests", []):
            for check in case.get("alert_rule_test", []):
                name = check["alertname"]
                expected = check.get("exp_alerts") or []
                (firing if expected else quiet).add(name)
                if name == "ArcMachineOffline":
                    for alert in expected:
                        assert set(alert["exp_labels"]) >= MACHINE_LABELS, (
                            f"{f.name}: ArcMachineOffline expectation lacks {MACHINE_LABELS}"
                        )
                        machine_labels_tested = True
    names = {r["alert"] for r in alert_rules()}
    assert not names - firing, f"alerts never tested firing: {sorted(names - firing)}"
    assert not names - quiet, f"alerts never tested not firing: {sorted(names - quiet)}"
    assert machine_labels_tested


def test_scope_silent_exposes_location_for_inhibition() -> None:
    [rule] = [r for r in alert_rules() if r["alert"] == "ArcScopeSilent"]
    assert "max by (scope)" in rule["expr"], "every worker exports the verdict: use max by"
    assert "label_replace(" in rule["expr"] and '"location"' in rule["expr"]


def test_maintenance_windows_stay_off_the_ticket_and_page_paths() -> None:
    """Machines in a maintenance window: ArcMachineOffline leaves them out (its by () keeps
    the label, so entering or leaving a window is another series), a quiet info alert carries
    the window id, and the ratio pages subtract them from the offline count."""
    rules = {r["alert"]: r for r in alert_rules()}
    offline, planned = rules["ArcMachineOffline"], rules["ArcMachineOfflineInMaintenance"]
    assert 'arcbeat_machine_offline{maintenance=""}' in offline["expr"]
    assert 'arcbeat_machine_offline{maintenance!=""}' in planned["expr"]
    for rule in (offline, planned):
        assert "location, maintenance)" in rule["expr"]
    assert planned["labels"]["severity"] == "info"
    records = {
        r["record"]: r["expr"]
        for f in RULE_FILES
        for group in load_yaml(f)["groups"]
        for r in group["rules"]
        if "record" in r
    }
    for scope in ("location", "fleet"):
        assert (
            "arcbeat_machines_offline_in_maintenance"
            in records[f"{scope}:arcbeat_offline_unplanned:sum"]
        )
        assert f"{scope}:arcbeat_offline_unplanned:sum" in records[f"{scope}:arcbeat_offline:ratio"]
