"""Alertmanager configuration: valid, routes by severity, groups and inhibits machine alerts.

Three levels:
- amtool checks the files and resolves routes (no service);
- the local stack's Alertmanager (fixture ``stack``) inhibits machine alerts of a silent
  location, read back through /api/v2/alerts filters (immediate, no timers involved);
- a private Alertmanager started here, on a free port with clustering off, a temporary
  storage folder and the same configuration with second-long timers, notifies
  tests/support/webhook.py: one notification per subscription/resource group, nothing for
  inhibited alerts, and the held machine alerts once the scope recovers.

Needs amtool and prometheus-alertmanager (Debian packages); fails, never skips, without them.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.support.paths import REPO
from tests.support.webhook import (
    Notification,
    WebhookReceiver,
    alert_label_values,
    summarize,
    with_alertname,
)

if TYPE_CHECKING:
    from arcbeat.deploy.stack import Stack

AM_DIR = REPO / "deploy" / "alertmanager"
CONFIG = AM_DIR / "alertmanager.yml"
COMPOSE_CONFIG = AM_DIR / "alertmanager.compose.yml"
RULE_FILES = sorted((REPO / "deploy" / "prometheus" / "rules").glob("*.yml"))
LOCAL_WEBHOOK = "http://127.0.0.1:9095/alerts"
COMPOSE_WEBHOOK = "http://host.docker.internal:9095/alerts"
RECEIVER_BY_SEVERITY = {"page": "pager", "ticket": "noc-tickets", "info": "capacity-planning"}
SUBSCRIPTION = "11111111-2222-3333-4444-555555555555"

# Timers of the private Alertmanager: short, so that a test sees a group's first notification
# and its updates within seconds.
FAST_GROUP_WAIT = 1.0
FAST_GROUP_INTERVAL = 2.0


def tool(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        f"{' / '.join(names)} not found on PATH: install it "
        "(Debian: apt-get install prometheus-alertmanager)"
    )


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("amtool"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def rule_alerts() -> dict[str, dict[str, Any]]:
    """Alert name -> one of its rules (labels are the same for rules sharing a name)."""
    alerts: dict[str, dict[str, Any]] = {}
    for f in RULE_FILES:
        for group in yaml.safe_load(f.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    alerts[rule["alert"]] = rule
    return alerts


# -- configuration files (amtool) -----------------------------------------------------------


@pytest.mark.parametrize("config", [CONFIG, COMPOSE_CONFIG], ids=lambda p: p.name)
def test_amtool_check_config(config: Path) -> None:
    result = amtool("check-config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_config_differs_only_in_webhook_urls() -> None:
    local = yaml.safe_load(CONFIG.read_text())
    compose = yaml.safe_load(COMPOSE_CONFIG.read_text().replace(COMPOSE_WEBHOOK, LOCAL_WEBHOOK))
    assert compose == local, f"{COMPOSE_CONFIG.name} drifted from {CONFIG.name}"


def _matcher_alertnames(config: dict[str, Any]) -> set[str]:
    """Alert names the routing tree and the inhibit rules mention."""
    texts: list[str] = []

    def walk(route: dict[str, Any]) -> None:
        texts.extend(route.get("matchers", []))
        for child in route.get("routes", []):
            walk(child)

    walk(config["route"])
    for rule in config.get("inhibit_rules", []):
        texts.extend(rule.get("source_matchers", []) + rule.get("target_matchers", []))
    names: set[str] = set()
    for text in texts:
        label, _, value = text.partition("=")
        if label.strip() == "alertname":
            names.update(value.lstrip("~").strip('"').split("|"))
    return names


def test_config_names_only_existing_alerts() -> None:
    mentioned = _matcher_alertnames(yaml.safe_load(CONFIG.read_text()))
    unknown = mentioned - set(rule_alerts())
    assert not unknown, f"{CONFIG.name} names alerts no rule defines: {sorted(unknown)}"
    assert {"ArcScopeSilent", "ArcMachineOffline"} <= mentioned


def test_machine_alerts_grouped_per_subscription_and_resource_group() -> None:
    route = yaml.safe_load(CONFIG.read_text())["route"]
    [machine_route] = [
        r for r in route["routes"] if 'alertname="ArcMachineOffline"' in r.get("matchers", [])
    ]
    assert machine_route["group_by"] == ["alertname", "subscription", "resource_group"]


def _labels_for(name: str, rule: dict[str, Any]) -> dict[str, str]:
    labels = {"alertname": name, **rule.get("labels", {})}
    if name.startswith("ArcMachineOffline"):
        labels |= {"subscription": SUBSCRIPTION, "resource_group": "rg-web"}
        labels |= {"location": "westeurope", "machine_name": "web-01"}
    if name == "ArcMachineOfflineInMaintenance":
        labels |= {"maintenance": "mw-1"}
    if name == "ArcScopeSilent":
        labels |= {"scope": "location=westeurope", "location": "westeurope"}
    return labels


@pytest.mark.parametrize("name", sorted(rule_alerts()))
def test_each_alert_routes_to_the_receiver_of_its_severity(name: str) -> None:
    rule = rule_alerts()[name]
    labels = _labels_for(name, rule)
    # planned downtime has its own receiver, whatever the severity
    expected = RECEIVER_BY_SEVERITY[labels["severity"]]
    if "maintenance" in labels:
        expected = "maintenance"
    result = amtool(
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG}",
        f"--verify.receivers={expected}",
        *(f"{k}={v}" for k, v in labels.items()),
    )
    assert result.returncode == 0, f"{labels} -> {result.stdout.strip()}, expected {expected}"


@pytest.mark.parametrize(
    ("resource_group", "maintenance", "receiver"),
    [
        ("payments-eu", "", "pager"),
        ("rg-web", "", "noc-tickets"),
        # inside a maintenance window nothing pages, not even a critical resource group;
        # once the window is over (the label is gone) the rows above apply again
        ("payments-eu", "mw-1", "maintenance"),
        ("rg-web", "mw-1", "maintenance"),
    ],
)
def test_critical_resource_groups_can_page(
    tmp_path: Path, resource_group: str, maintenance: str, receiver: str
) -> None:
    placeholder = '"<critical-resource-groups>"'
    text = CONFIG.read_text()
    assert placeholder in text
    config = tmp_path / "alertmanager.yml"
    config.write_text(text.replace(placeholder, '"(?i)(sap-prod|payments-.*)"'))
    labels = [
        "alertname=ArcMachineOffline",
        "severity=ticket",
        f"subscription={SUBSCRIPTION}",
        f"resource_group={resource_group}",
        "location=westeurope",
    ]
    if maintenance:
        labels.append(f"maintenance={maintenance}")
    result = amtool(
        "config",
        "routes",
        "test",
        f"--config.file={config}",
        f"--verify.receivers={receiver}",
        *labels,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    if maintenance:
        assert "pager" not in result.stdout


@pytest.mark.parametrize("severity", sorted(RECEIVER_BY_SEVERITY))
def test_maintenance_label_never_reaches_the_pager(severity: str) -> None:
    """Whatever an alert's name and severity, a maintenance label routes it to the quiet
    maintenance receiver only (the route comes before every other)."""
    for alertname in ("ArcMachineOffline", "ArcLocationOfflineRatio"):
        result = amtool(
            "config",
            "routes",
            "test",
            f"--config.file={CONFIG}",
            "--verify.receivers=maintenance",
            f"alertname={alertname}",
            f"severity={severity}",
            "location=westeurope",
            "maintenance=mw-1",
        )
        assert result.returncode == 0, result.stdout + result.stderr


# -- talking to an Alertmanager ---------------------------------------------------------------


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class AlertmanagerAPI:
    url: str  # http://host:port

    def post(self, alerts: list[dict[str, str]], *, resolved: bool = False) -> None:
        now = datetime.now(UTC)
        body = [
            {
                "labels": labels,
                "annotations": {"summary": f"test alert {labels['alertname']}"},
                # now, not earlier: Alertmanager flushes a new group at once (no group_wait)
                # for an alert that started more than group_wait ago
                "startsAt": _iso(now),
                # without endsAt an alert stays firing for resolve_timeout
                **({"endsAt": _iso(now)} if resolved else {}),
                "generatorURL": "http://127.0.0.1/test_alertmanager",
            }
            for labels in alerts
        ]
        request = urllib.request.Request(
            f"{self.url}/api/v2/alerts",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200, f"POST /api/v2/alerts: HTTP {response.status}"

    def alerts(self, *filters: str, **flags: bool) -> list[dict[str, Any]]:
        query = [("filter", f) for f in filters] + [(k, str(v).lower()) for k, v in flags.items()]
        url = f"{self.url}/api/v2/alerts?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            result: list[dict[str, Any]] = json.load(response)
            return result

    def reload(self) -> None:
        request = urllib.request.Request(f"{self.url}/-/reload", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200


def eventually(check: Callable[[], str | None], timeout: float, what: str) -> None:
    """Poll ``check`` (None = satisfied, else why not) until it holds or ``timeout``."""
    deadline = time.monotonic() + timeout
    why: str | None = "not checked"
    while time.monotonic() < deadline:
        why = check()
        if why is None:
            return
        time.sleep(0.2)
    pytest.fail(f"{what}: still not true after {timeout:g}s: {why}")


def machine(run: str, resource_group: str, name: str, location: str) -> dict[str, str]:
    return {
        "alertname": "ArcMachineOffline",
        "severity": "ticket",
        "subscription": SUBSCRIPTION,
        "resource_group": resource_group,
        "machine_name": name,
        "location": location,
        "resource_id": (
            f"/subscriptions/{SUBSCRIPTION}/resourcegroups/{resource_group}"
            f"/providers/microsoft.hybridcompute/machines/{name}"
        ),
        "arcbeat_test": run,
    }


def scope_silent(run: str, location: str | None) -> dict[str, str]:
    labels = {"alertname": "ArcScopeSilent", "severity": "page", "arcbeat_test": run}
    if location is None:
        return labels | {"scope": "fleet"}
    return labels | {"scope": f"location={location}", "location": location}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- the local stack's Alertmanager ------------------------------------------------------------


@pytest.mark.services
def test_stack_alertmanager_inhibits_machines_of_a_silent_location(stack: Stack) -> None:
    """The shared Alertmanager with the production config and timers: inhibition via the API.

    Labels are unique to this run (location, arcbeat_test) so that other tests using the
    same Alertmanager are not inhibited, and the alerts are resolved at the end.
    """
    # A reused stack may run an Alertmanager started with an older copy of the config:
    # refresh the copy the stack made, and reload.
    from arcbeat.deploy.services import Alertmanager

    service = stack.service("alertmanager")
    assert isinstance(service, Alertmanager), service
    api = AlertmanagerAPI(stack.settings.stack.alertmanager_url.rstrip("/"))
    if service.config.read_text() != CONFIG.read_text():
        service.prepare(lambda message: None)
        api.reload()

    run = unique("stack")
    silent_location, other_location = unique("silentloc"), unique("otherloc")
    held = [machine(run, "rg-held", f"vm-{i}", silent_location) for i in range(3)]
    other = machine(run, "rg-other", "vm-9", other_location)
    source = scope_silent(run, silent_location)
    everything = [source, *held, other]
    api.post(everything)
    try:
        run_filter = f'arcbeat_test="{run}"'

        def inhibited_as_expected() -> str | None:
            alerts = api.alerts(run_filter)
            by_name = {a["labels"].get("machine_name", a["labels"]["alertname"]): a for a in alerts}
            if len(by_name) != len(everything):
                return f"{len(by_name)} of {len(everything)} alerts known"
            silent_fp = by_name["ArcScopeSilent"]["fingerprint"]
            for m in held:
                status = by_name[m["machine_name"]]["status"]
                if status["state"] != "suppressed" or status["inhibitedBy"] != [silent_fp]:
                    return f"{m['machine_name']} in the silent location: {status}"
            for name in ("vm-9", "ArcScopeSilent"):
                status = by_name[name]["status"]
                if status["state"] != "active":
                    return f"{name}: {status}"
            return None

        eventually(inhibited_as_expected, 30, "machines of a silent location are inhibited")

        visible = api.alerts(run_filter, inhibited=False, silenced=False, active=True)
        assert sorted(a["labels"].get("machine_name", "-") for a in visible) == ["-", "vm-9"]
        inhibited = api.alerts(run_filter, inhibited=True, active=False)
        assert sorted(a["labels"]["machine_name"] for a in inhibited) == ["vm-0", "vm-1", "vm-2"]
    finally:
        api.post(everything, resolved=True)


# -- a private Alertmanager with short timers ---------------------------------------------------


def fast_config(webhook_url: str) -> str:
    """The repository's config with every timer shortened and the webhook moved."""
    config = yaml.safe_load(CONFIG.read_text())

    def shorten(route: dict[str, Any], root: bool) -> None:
        if root or "group_wait" in route:
            route["group_wait"] = f"{FAST_GROUP_WAIT:g}s"
        if root or "group_interval" in route:
            route["group_interval"] = f"{FAST_GROUP_INTERVAL:g}s"
        if root or "repeat_interval" in route:
            route["repeat_interval"] = "1h"
        for child in route.get("routes", []):
            shorten(child, False)

    shorten(config["route"], True)
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            assert hook["url"] == LOCAL_WEBHOOK, f"{CONFIG.name}: unexpected webhook {hook}"
            hook["url"] = webhook_url
    return yaml.safe_dump(config, sort_keys=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class PrivateAlertmanager:
    api: AlertmanagerAPI
    hook: WebhookReceiver
    log: Path

    def notifications(self) -> list[Notification]:
        return self.hook.notifications

    def wait(self, predicate: Callable[[list[Notification]], bool], what: str) -> None:
        try:
            self.hook.wait_for(predicate, timeout=20)
        except AssertionError as exc:
            pytest.fail(f"{what}: {exc}\nalertmanager log:\n{self.log.read_text()[-3000:]}")


@pytest.fixture
def fast_am(tmp_path: Path) -> Iterator[PrivateAlertmanager]:
    with WebhookReceiver(port=0) as hook:
        config = tmp_path / "alertmanager.yml"
        config.write_text(fast_config(hook.url))
        check = amtool("check-config", str(config))
        assert check.returncode == 0, check.stdout + check.stderr
        port = free_port()
        log = tmp_path / "alertmanager.log"
        with log.open("w") as log_file:
            process = subprocess.Popen(
                [
                    tool("prometheus-alertmanager", "alertmanager"),
                    f"--config.file={config}",
                    f"--storage.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--cluster.listen-address=",  # single node, no gossip port
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            api = AlertmanagerAPI(f"http://127.0.0.1:{port}")

            def ready() -> str | None:
                if process.poll() is not None:
                    pytest.fail(
                        f"alertmanager exited with {process.returncode}:\n{log.read_text()}"
                    )
                try:
                    with urllib.request.urlopen(f"{api.url}/-/ready", timeout=2) as response:
                        return None if response.status == 200 else f"HTTP {response.status}"
                except OSError as exc:
                    return str(exc)

            eventually(ready, 30, f"private alertmanager on port {port} ready")
            yield PrivateAlertmanager(api, hook, log)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def machine_notifications(ns: list[Notification], resource_group: str) -> list[Notification]:
    return [
        n
        for n in with_alertname(ns, "ArcMachineOffline")
        if n.get("groupLabels", {}).get("resource_group") == resource_group
    ]


def alert_key(alert: dict[str, Any], label: str) -> str:
    """``alertname:<value of label>``, to compare sets of alerts in assertions."""
    labels = alert["labels"]
    return f"{labels['alertname']}:{labels.get(label, '')}"


def settle() -> None:
    """Long enough for any pending group to flush twice."""
    time.sleep(FAST_GROUP_WAIT + 2 * FAST_GROUP_INTERVAL + 1)


@pytest.mark.services
def test_machine_alerts_notify_once_per_resource_group(fast_am: PrivateAlertmanager) -> None:
    run = unique("group")
    web = [machine(run, "rg-web", f"web-{i}", "westeurope") for i in range(3)]
    db = [machine(run, "rg-db", f"db-{i}", "westeurope") for i in range(2)]
    fast_am.api.post(web + db)

    fast_am.wait(
        lambda ns: bool(machine_notifications(ns, "rg-web") and machine_notifications(ns, "rg-db")),
        "a notification per resource group",
    )
    settle()
    got = fast_am.notifications()
    assert len(got) == 2, f"expected one notification per resource group: {summarize(got)}"
    for n, names in (
        (machine_notifications(got, "rg-web")[0], ["web-0", "web-1", "web-2"]),
        (machine_notifications(got, "rg-db")[0], ["db-0", "db-1"]),
    ):
        assert n["receiver"] == "noc-tickets"
        assert n["status"] == "firing"
        assert set(n["groupLabels"]) == {"alertname", "subscription", "resource_group"}
        assert n["groupLabels"]["subscription"] == SUBSCRIPTION
        assert alert_label_values(n, "machine_name") == names

    # One more machine of rg-web: the group's notification is updated, rg-db stays quiet.
    fast_am.api.post([machine(run, "rg-web", "web-3", "westeurope")])
    fast_am.wait(lambda ns: len(machine_notifications(ns, "rg-web")) >= 2, "rg-web group updated")
    settle()
    got = fast_am.notifications()
    web_updates = machine_notifications(got, "rg-web")
    assert len(web_updates) == 2, summarize(got)
    assert alert_label_values(web_updates[1], "machine_name") == [f"web-{i}" for i in range(4)]
    assert len(machine_notifications(got, "rg-db")) == 1, summarize(got)


@pytest.mark.services
def test_location_silence_holds_machine_alerts_until_it_recovers(
    fast_am: PrivateAlertmanager,
) -> None:
    run = unique("location")
    source = scope_silent(run, "westeurope")
    fast_am.api.post([source])
    fast_am.wait(lambda ns: bool(with_alertname(ns, "ArcScopeSilent")), "the scope page")
    [page] = with_alertname(fast_am.notifications(), "ArcScopeSilent")
    assert page["receiver"] == "pager"
    assert page["groupLabels"] == {
        "alertname": "ArcScopeSilent",
        "scope": "location=westeurope",
        "location": "westeurope",
    }

    held = [machine(run, "rg-held", f"vm-{i}", "westeurope") for i in range(3)]
    ratio = {
        "alertname": "ArcLocationOfflineRatio",
        "severity": "page",
        "location": "westeurope",
        "arcbeat_test": run,
    }
    elsewhere = machine(run, "rg-elsewhere", "vm-9", "westus2")
    fast_am.api.post([*held, ratio, elsewhere])

    # Another location is not inhibited ...
    fast_am.wait(lambda ns: bool(machine_notifications(ns, "rg-elsewhere")), "westus2 machine")
    settle()
    got = fast_am.notifications()
    # ... the silent location's machines and ratio are.
    assert not machine_notifications(got, "rg-held"), summarize(got)
    assert not with_alertname(got, "ArcLocationOfflineRatio"), summarize(got)
    inhibited = fast_am.api.alerts(f'arcbeat_test="{run}"', inhibited=True, active=False)
    assert sorted(
        a["labels"]["alertname"] + a["labels"].get("machine_name", "") for a in inhibited
    ) == [
        "ArcLocationOfflineRatio",
        "ArcMachineOfflinevm-0",
        "ArcMachineOfflinevm-1",
        "ArcMachineOfflinevm-2",
    ]

    # The scope recovers: the machines still offline are notified, as one group.
    fast_am.hook.clear()
    fast_am.api.post([source], resolved=True)
    fast_am.wait(
        lambda ns: (
            bool(machine_notifications(ns, "rg-held"))
            and bool(with_alertname(ns, "ArcLocationOfflineRatio"))
        ),
        "held alerts released after recovery",
    )
    settle()
    got = fast_am.notifications()
    released = machine_notifications(got, "rg-held")
    assert len(released) == 1, summarize(got)
    assert alert_label_values(released[0], "machine_name") == ["vm-0", "vm-1", "vm-2"]
    assert released[0]["status"] == "firing"


@pytest.mark.services
def test_fleet_silence_inhibits_every_machine_and_ratio_alert(
    fast_am: PrivateAlertmanager,
) -> None:
    run = unique("fleet")
    fleet = scope_silent(run, None)
    fast_am.api.post([fleet])
    fast_am.wait(lambda ns: bool(with_alertname(ns, "ArcScopeSilent")), "the fleet page")

    targets = [
        machine(run, "rg-a", "vm-a", "westeurope"),
        machine(run, "rg-b", "vm-b", "westus2"),
        {"alertname": "ArcLocationOfflineRatio", "severity": "page", "location": "westasia"},
        {"alertname": "ArcFleetOfflineRatio", "severity": "page"},
        {"alertname": "ArcMachineSeriesOverflow", "severity": "ticket"},
        scope_silent(run, "westasia"),  # implied by the fleet page
    ]
    for t in targets:
        t["arcbeat_test"] = run
    # Not about machines: still notified.
    dlq = {"alertname": "ArcDlqRateHigh", "severity": "ticket", "arcbeat_test": run}
    fast_am.api.post([*targets, dlq])

    fast_am.wait(lambda ns: bool(with_alertname(ns, "ArcDlqRateHigh")), "the DLQ ticket")
    settle()
    got = fast_am.notifications()
    notified = sorted(
        {
            str(a["labels"]["alertname"]) + ":" + a["labels"].get("scope", "")
            for n in got
            for a in n["alerts"]
        }
    )
    assert notified == ["ArcDlqRateHigh:", "ArcScopeSilent:fleet"], summarize(got)
    inhibited = fast_am.api.alerts(f'arcbeat_test="{run}"', inhibited=True, active=False)
    assert len(inhibited) == len(targets), [a["labels"] for a in inhibited]
