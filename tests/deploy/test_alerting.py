"""Alerting in production (docs/alerting.md): every alert links its runbook, every runbook
exists, and the production Alertmanager example passes amtool with the local file's routes.

Needs amtool (Debian package prometheus-alertmanager); fails, never skips, when it is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.deploy.test_alert_rules import alert_rules
from tests.support.paths import REPO
from tests.test_docs import anchors

ALERTING = REPO / "docs" / "alerting.md"
ALERTMANAGER = REPO / "deploy" / "alertmanager"
PRODUCTION = ALERTMANAGER / "production.example.yml"


def _load(name: str) -> Any:
    return yaml.safe_load((ALERTMANAGER / name).read_text())


def test_every_alert_has_a_runbook_url_to_its_section() -> None:
    sections = anchors(ALERTING)
    names = set()
    for rule in alert_rules():
        name = rule["alert"]
        names.add(name)
        url = rule.get("annotations", {}).get("runbook_url")
        assert url == f"docs/alerting.md#{name.lower()}", (name, url)
        assert name.lower() in sections, f"docs/alerting.md has no runbook section {name}"
    assert {"ArcHistoryExporterDown", "ArcHistoryInfluxWritesFailing"} <= names


def test_no_runbook_without_an_alert() -> None:
    text = ALERTING.read_text()
    runbooks = text[text.index("## Runbooks") :]
    documented = {line[4:].strip() for line in runbooks.splitlines() if line.startswith("### ")}
    assert documented == {r["alert"] for r in alert_rules()}


def test_the_production_example_passes_amtool() -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.fail("amtool not found: bash deploy/install.sh installs prometheus-alertmanager")
    done = subprocess.run(
        [amtool, "check-config", str(PRODUCTION)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 receivers" in done.stdout


def test_the_production_example_keeps_the_routes_and_uses_real_receivers() -> None:
    local, prod = _load("alertmanager.yml"), _load(PRODUCTION.name)
    assert prod["route"] == local["route"]
    assert prod["inhibit_rules"] == local["inhibit_rules"]
    receivers = {r["name"]: r for r in prod["receivers"]}
    assert set(receivers) == {r["name"] for r in local["receivers"]}
    pager = receivers["pager"]
    assert pager["pagerduty_configs"][0]["routing_key_file"].startswith("/etc/alertmanager/")
    assert pager["opsgenie_configs"][0]["api_key_file"].startswith("/etc/alertmanager/")
    for name in ("noc-tickets", "capacity-planning", "maintenance"):
        chat = receivers[name]["slack_configs"][0]
        assert chat["api_url_file"].startswith("/etc/alertmanager/"), name
    text = PRODUCTION.read_text()
    assert "runbook_url" in text
    for secret in ("routing_key:", "api_key:", "api_url:"):
        assert secret not in text, f"a secret inline in {PRODUCTION.name}: {secret}"
