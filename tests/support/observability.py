"""A real pipeline run for tests/e2e/test_observability_e2e.py.

:class:`ObservabilityRun` starts two ``arcbeat worker`` processes (web ports 6066 and 6067,
which the local stack's Prometheus scrapes as job ``arcbeat``), ``arcbeat history`` (port
6070, job ``arcbeat-history``, its own InfluxDB database) and ``arcbeat simulate`` (a small
fleet with permanent outages, one location going silent and a few malformed messages), all
with compressed time and a unique topic prefix, app id, database and set of location names, so
that nothing it produces mixes with other runs in the shared Prometheus, Alertmanager and
InfluxDB. Each phase (:meth:`~ObservabilityRun.stable`, ``alerts``, ``dashboards``,
``history``, ``groundtruth``) runs once and keeps what it observed for the tests to judge.

The shared Prometheus runs with fast scrapes and ``for: 0s`` rules during the run
(:func:`tests.support.prometheus.fast_prometheus`). Alertmanager runs its
configuration unchanged (machine alerts wait ``group_wait`` 1 m, pages 30 s). The history
exporter computes its capacity report every 5 s (``ARCBEAT_CAPACITY_INTERVAL``) so that the
capacity dashboard has this run's gauges and points.

``ARCBEAT_E2E_KEEP=1`` keeps the run's InfluxDB database and Kafka topics for debugging.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from arcbeat.dashboards.queries import (
    PanelQuery,
    default_variable_values,
    panel_queries,
    substitute_variables,
    variable_queries,
)
from arcbeat.deploy.agents.scenarios import Fleet, FleetSpec, Scenario, Schedule, build_schedule
from arcbeat.deploy.stack import Stack
from tests.support.alertmanager import Alertmanager
from tests.support.dashboards import (
    PanelMeta,
    check_influx_result,
    check_prometheus_result,
    panel_meta,
)
from tests.support.influx import Influx
from tests.support.kafka import JsonRecord, delete_topics, read_committed
from tests.support.net import http, http_json, port_is_free
from tests.support.paths import REPO
from tests.support.processes import Proc
from tests.support.progress import sayer
from tests.support.prometheus import (
    FAST_SECONDS,
    HISTORY_PORT,
    WORKER_PORTS,
    Prometheus,
    fast_prometheus,
)
from tests.support.waiting import wait_until
from tests.support.webhook import Notification, WebhookReceiver

T = TypeVar("T")

DASHBOARD_DIR = REPO / "dashboards"
WEBHOOK_PORT = 9095  # every receiver of deploy/alertmanager/alertmanager.yml
PARTITIONS = 12

say = sayer("obs-e2e")


@dataclass(frozen=True)
class Plan:
    """The run's numbers: compressed time and the simulated scenario."""

    machines: int = 150
    resource_groups: int = 3  # per subscription (2 subscriptions): several machines per group
    interval: float = 1.0
    disconnect_after: float = 4.0
    check_interval: float = 0.5
    outage_min_machines: int = 5
    outage_hold: float = 10.0
    fleet_snapshot_interval: float = 2.0
    window: float = 10.0  # availability windows close during the run
    outage_fraction: float = 0.1
    outage_window: tuple[float, float] = (2.0, 3.0)  # all outages start early, never resume
    silent_at: float = 10.0
    silent_for: float = 8.0  # shorter than the hold: the alive machines never flip
    silent_dead_fraction: float = 0.25  # ... and these are Disconnected (mass outage)
    malformed_rate: float = 0.005  # a few DLQ rejects for the DLQ panels
    capacity_interval: float = 5.0  # the history exporter's capacity report
    sim_duration: float = 600.0  # upper bound; the run stops the simulator itself


def once(method: Callable[[Any], T]) -> Callable[[Any], T]:
    """A phase runs once; later calls return its result or raise its error again."""
    attr = f"_once_{method.__name__}"

    @functools.wraps(method)
    def wrapper(self: Any) -> T:
        if not hasattr(self, attr):
            try:
                setattr(self, attr, (True, method(self)))
            except Exception as exc:
                setattr(self, attr, (False, exc))
        ok, value = getattr(self, attr)
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    return wrapper


@dataclass
class Stable:
    at: float
    prometheus: dict[str, int]  # sum by (status) over this run's two workers
    per_worker: dict[str, int]  # instance -> machines it exports
    fleet: dict[str, Any]  # GET /fleet
    saw_silent_scope: bool


@dataclass
class AlertsSeen:
    scope_silent_page: Notification
    machine_notifications: list[Notification]
    inhibited: list[dict[str, Any]]  # ArcMachineOffline of the silent location, inhibited
    not_inhibited_silent: list[dict[str, Any]]  # ... and any of them that was not
    other_active: list[dict[str, Any]]  # ArcMachineOffline of other locations, active
    scope_silent_fingerprints: set[str]
    leaked: list[dict[str, Any]]  # silent-location machine alerts delivered to the webhook
    waited_for_group: float


@dataclass
class HistorySeen:
    topic: list[JsonRecord]
    transitions: list[dict[str, Any]]  # InfluxDB rows
    scope_events: list[dict[str, Any]]
    availability: dict[str, int]  # resource_id -> availability points (closed windows)


@dataclass
class DashboardResult:
    query: PanelQuery
    executed: str
    problems: list[str]


@dataclass
class ObservabilityRun:
    """One run of the whole pipeline against the shared local stack; see the module doc."""

    stack: Stack
    workdir: Path
    plan: Plan = field(default_factory=Plan)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        p = self.plan
        self.prefix = f"obs{self.tag}"
        self.locations = (f"obs{self.tag}north", f"obs{self.tag}south", f"obs{self.tag}west")
        self.silent_location = self.locations[1]
        self.seed = int(self.tag, 16) % 1_000_000
        self.spec = FleetSpec(
            machines=p.machines,
            seed=self.seed,
            resource_groups=p.resource_groups,
            locations=self.locations,
        )
        self.fleet = Fleet(self.spec)
        self.scenario = Scenario.named(
            ["outages", "location-silent", "malformed"],
            outage_fraction=p.outage_fraction,
            outage_permanent=1.0,
            outage_window=p.outage_window,
            silent_location=self.silent_location,
            silent_at=p.silent_at,
            silent_for=p.silent_for,
            silent_dead_fraction=p.silent_dead_fraction,
            malformed_rate=p.malformed_rate,
            connect_first=True,
        )
        # the same schedule `arcbeat simulate` builds from the same arguments
        self.schedule: Schedule = build_schedule(
            self.fleet,
            self.scenario,
            interval=p.interval,
            disconnect_after=p.disconnect_after,
            duration=p.sim_duration,
        )
        self.outaged = {a.machine for a in self.schedule.actions if a.reason == "outage-permanent"}
        self.dead = {a.machine for a in self.schedule.actions if a.reason == "location-silent-dead"}
        self.prometheus = Prometheus(self.stack.settings.stack.prometheus_url)
        self.alertmanager = Alertmanager(self.stack.settings.stack.alertmanager_url)
        self.influx = Influx(self.stack.settings.influx.url, self.prefix)
        self.hook = WebhookReceiver(port=WEBHOOK_PORT)
        self.workers: list[Proc] = []
        self.history_proc: Proc | None = None
        self.simulator: Proc | None = None
        self.groundtruth_path = self.workdir / "groundtruth.jsonl"
        self.started_at = 0.0
        self.workers_stopped = False
        self._exit = contextlib.ExitStack()

    # ---- identity of what this run produced ---------------------------------------------

    def key(self, m: int) -> str:
        return str(self.fleet.key(m))

    @property
    def subscriptions(self) -> set[str]:
        return set(self.fleet.subscription_ids)

    @property
    def instances(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in WORKER_PORTS]

    @property
    def instance_selector(self) -> str:
        return f'job="arcbeat", instance=~"{"|".join(self.instances)}"'

    def env(self) -> dict[str, str]:
        p, s = self.plan, self.stack.settings
        env = dict(os.environ)
        env.update(
            {
                "ARCBEAT_KAFKA_BOOTSTRAP": s.kafka.bootstrap,
                "ARCBEAT_TOPIC_PREFIX": self.prefix,
                "ARCBEAT_APP_ID": self.prefix,
                "ARCBEAT_PARTITIONS": str(PARTITIONS),
                "ARCBEAT_HEARTBEAT_INTERVAL": f"{p.interval:g}",
                "ARCBEAT_DISCONNECT_AFTER": f"{p.disconnect_after:g}",
                "ARCBEAT_CHECK_INTERVAL": f"{p.check_interval:g}",
                "ARCBEAT_OUTAGE_MIN_MACHINES": str(p.outage_min_machines),
                "ARCBEAT_OUTAGE_HOLD": f"{p.outage_hold:g}",
                "ARCBEAT_FLEET_SNAPSHOT_INTERVAL": f"{p.fleet_snapshot_interval:g}",
                "ARCBEAT_WINDOW": f"{p.window:g}",
                "ARCBEAT_REGIONS": ",".join(self.locations),
                "ARCBEAT_WEB_PORT": str(WORKER_PORTS[0]),
                "ARCBEAT_HISTORY_PORT": str(HISTORY_PORT),
                "ARCBEAT_INFLUX_URL": s.influx.url,
                "ARCBEAT_INFLUX_API": "v1",
                "ARCBEAT_INFLUX_DB": self.prefix,
                # the history exporter's capacity report (gauges + InfluxDB capacity points)
                "ARCBEAT_CAPACITY_INTERVAL": f"{p.capacity_interval:g}",
                "ARCBEAT_DATA_DIR": str(self.workdir / "worker-data"),
                "ARCBEAT_PROMETHEUS_URL": s.stack.prometheus_url,
                "ARCBEAT_ALERTMANAGER_URL": s.stack.alertmanager_url,
            }
        )
        return env

    def _spawn(self, name: str, *args: str) -> Proc:
        argv = [sys.executable, "-m", "arcbeat.deploy.cli", *args]
        return Proc(name, argv, self.env(), self.workdir / f"{name}.log")

    def worker_url(self, i: int = 0) -> str:
        return f"http://127.0.0.1:{WORKER_PORTS[i]}"

    # ---- start and stop -----------------------------------------------------------------

    def start(self) -> None:
        t0 = self.started_at = time.time()
        self._check_services()
        self._check_no_fleet_silence()
        busy = [p for p in (*WORKER_PORTS, HISTORY_PORT, WEBHOOK_PORT) if not port_is_free(p)]
        if busy:
            raise AssertionError(
                f"ports {busy} on 127.0.0.1 are taken: this test runs workers on "
                f"{WORKER_PORTS} (scraped by the stack's Prometheus), the history exporter on "
                f"{HISTORY_PORT} and the Alertmanager webhook on {WEBHOOK_PORT}; stop whatever "
                "holds them (`ss -ltnp`)"
            )
        # Topics first: a consumer subscribing to missing topics makes the broker auto-create
        # them with one partition (history before worker would break the worker's sends).
        self.stack.ensure_topics(prefix=self.prefix, partitions=PARTITIONS)
        # closed in reverse: processes, then the run's data, then Prometheus, then the hook
        self._exit.enter_context(self.hook)
        self._exit.enter_context(fast_prometheus(self.stack, self.workdir / "rules", say))
        self._exit.callback(self._cleanup_data)
        self._exit.callback(self._stop_processes)
        self.workers = [
            self._spawn(f"worker-{i}", "worker", "--id", str(i), "--loglevel", "info")
            for i in range(len(WORKER_PORTS))
        ]
        self.history_proc = self._spawn("history", "history")
        self._wait_workers_ready()
        self.timings["workers ready"] = time.time() - t0
        self._wait_scraped()
        self.timings["scraped by Prometheus"] = time.time() - t0
        p = self.plan
        self.simulator = self._spawn(
            "simulate",
            "simulate",
            "-n",
            str(p.machines),
            "--seed",
            str(self.seed),
            "--resource-groups",
            str(p.resource_groups),
            "--duration",
            f"{p.sim_duration:g}",
            "--scenario",
            "outages,location-silent,malformed",
            "--outage-fraction",
            f"{p.outage_fraction:g}",
            "--outage-permanent",
            "1",
            "--outage-window",
            f"{p.outage_window[0]:g}:{p.outage_window[1]:g}",
            "--silent-location",
            self.silent_location,
            "--silent-at",
            f"{p.silent_at:g}",
            "--silent-for",
            f"{p.silent_for:g}",
            "--silent-dead-fraction",
            f"{p.silent_dead_fraction:g}",
            "--malformed-rate",
            f"{p.malformed_rate:g}",
            "--groundtruth",
            str(self.groundtruth_path),
            "--progress-every",
            "10",
        )
        say(
            f"run {self.prefix}: {p.machines} machines in {self.locations}, "
            f"{len(self.outaged)} outages, {len(self.dead)} dead in silent "
            f"{self.silent_location}; logs in {self.workdir}"
        )

    def close(self) -> None:
        self._exit.close()

    def _check_services(self) -> None:
        s = self.stack.settings
        for name, url in (
            ("Prometheus", f"{s.stack.prometheus_url}/-/ready"),
            ("Alertmanager", f"{s.stack.alertmanager_url}/-/ready"),
            ("InfluxDB", f"{s.influx.url}/ping"),
        ):
            try:
                status, _ = http(url, timeout=5)
            except OSError as exc:
                raise AssertionError(f"{name} is not reachable at {url}: {exc}") from exc
            if status not in (200, 204):
                raise AssertionError(f"{name} at {url} is not ready (HTTP {status})")

    def _check_no_fleet_silence(self) -> None:
        """A fleet-wide ArcScopeSilent (another run's) inhibits every machine alert and every
        location's ArcScopeSilent in the shared Alertmanager: nothing here could be seen."""
        fleet = self.alertmanager.alerts('alertname="ArcScopeSilent"', 'scope="fleet"')
        if fleet:
            ends = max(str(a["endsAt"]) for a in fleet)
            raise AssertionError(
                "the shared Alertmanager has a fleet-wide ArcScopeSilent from another run "
                f"(until {ends} or longer: the rule keeps firing 10m after the silence); it "
                "inhibits every machine alert this test checks. Wait for it to resolve, or "
                "restart the stack (`arcbeat stack down && arcbeat stack up`)"
            )

    def _stop_processes(self) -> None:
        self.stop_workers()  # first: a fleet without workers declares nothing
        for proc in (self.simulator, self.history_proc):
            if proc is not None:
                proc.stop(timeout=30)

    def _cleanup_data(self) -> None:
        if os.environ.get("ARCBEAT_E2E_KEEP"):  # for debugging: keep the database and topics
            say(f"kept InfluxDB database {self.prefix} and topics {self.prefix}.*")
            return
        with contextlib.suppress(OSError, ValueError):
            self.influx.drop()
        with contextlib.suppress(Exception):
            delete_topics(
                self.stack.settings.kafka.bootstrap, (f"{self.prefix}.", f"{self.prefix}-")
            )

    def _healthz(self, i: int) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = http_json(f"{self.worker_url(i)}/readyz", timeout=3)
        except (OSError, ValueError):
            return None
        return doc

    def _wait_workers_ready(self) -> None:
        def ready() -> bool | None:
            for w in self.workers:
                w.require_alive()
            parts = [self._healthz(i) for i in range(len(self.workers))]
            if any(h is None for h in parts):
                return None
            owned = [set(h["partitions"]) for h in parts if h is not None]
            union = set().union(*owned)
            disjoint = sum(len(o) for o in owned) == len(union)
            return True if all(owned) and disjoint and union == set(range(PARTITIONS)) else None

        wait_until(
            "both workers to own disjoint halves of the partitions",
            ready,
            timeout=120,
            state=lambda: str([self._healthz(i) for i in range(len(self.workers))]),
        )
        assert self.history_proc is not None
        self.history_proc.require_alive()

    def _wait_scraped(self) -> None:
        def up() -> dict[str, float] | None:
            got = {
                s["metric"]["instance"]: float(s["value"][1])
                for s in self.prometheus.vector(f"up{{{self.instance_selector}}}")
            }
            hist = self.prometheus.vector(
                f'up{{job="arcbeat-history", instance="127.0.0.1:{HISTORY_PORT}"}}'
            )
            ok = (
                all(got.get(i) == 1.0 for i in self.instances)
                and hist
                and hist[0]["value"][1] == "1"
            )
            return got if ok else None

        wait_until(
            'Prometheus to scrape both workers (up{job="arcbeat"} == 1) and the history exporter',
            up,
            timeout=60,
            state=lambda: str(self.prometheus.vector('up{job=~"arcbeat|arcbeat-history"}')),
        )

    def fleet_api(self) -> dict[str, Any]:
        doc: dict[str, Any] = http_json(f"{self.worker_url(0)}/fleet", timeout=10)
        return doc

    def require_running(self) -> None:
        for proc in (*self.workers, self.history_proc, self.simulator):
            if proc is not None:
                proc.require_alive()

    # ---- phase 1: a stable moment, counted three ways -----------------------------------

    @property
    def expected_disconnected(self) -> set[int]:
        return self.outaged | self.dead

    @once
    def stable(self) -> Stable:
        """Wait until the scenario settled (outages declared, the silent location back, its
        dead machines declared), then read Prometheus and /fleet at that moment."""
        self.start()
        self.timings["settling from"] = time.time() - self.started_at
        want = len(self.expected_disconnected)
        saw_silent = False
        history: list[tuple[int, int, tuple[str, ...]]] = []

        def settled() -> dict[str, Any] | None:
            nonlocal saw_silent
            self.require_running()
            fleet = self.fleet_api()
            silent = tuple(fleet.get("silentScopes", []))
            saw_silent = saw_silent or f"location={self.silent_location}" in silent
            by = fleet.get("byStatus", {})
            history.append((fleet.get("total", 0), by.get("Disconnected", 0), silent))
            done = (
                saw_silent
                and not silent
                and fleet.get("total") == self.plan.machines
                and by.get("Disconnected") == want
            )
            return fleet if done and history[-3:] == [history[-1]] * 3 else None

        wait_until(
            f"the scenario to settle: {want} Disconnected of {self.plan.machines}, the silent "
            f"location seen silent and recovered",
            settled,
            timeout=150,
            every=1.0,
            state=lambda: f"last /fleet polls (total, disconnected, silent): {history[-5:]}",
        )
        self.timings["scenario settled"] = time.time() - self.started_at
        time.sleep(FAST_SECONDS + 1.0)  # one more scrape of the settled state
        at = time.time()
        prom = {
            s["metric"]["status"]: int(float(s["value"][1]))
            for s in self.prometheus.vector(
                f"sum by (status) (arcbeat_machines{{{self.instance_selector}}})", at
            )
        }
        per_worker = {
            s["metric"]["instance"]: int(float(s["value"][1]))
            for s in self.prometheus.vector(
                f"sum by (instance) (arcbeat_machines{{{self.instance_selector}}})", at
            )
        }
        fleet = self.fleet_api()
        return Stable(at, prom, per_worker, fleet, saw_silent)

    # ---- phase 2: alerts through the real Prometheus and Alertmanager --------------------

    def _machine_alerts(self, **states: bool) -> list[dict[str, Any]]:
        return [
            a
            for a in self.alertmanager.alerts('alertname="ArcMachineOffline"', **states)
            if a["labels"].get("subscription") in self.subscriptions
        ]

    def _ours(self, n: Notification) -> list[dict[str, Any]]:
        return [
            a
            for a in n["alerts"]
            if a["labels"].get("alertname") == "ArcMachineOffline"
            and a["labels"].get("subscription") in self.subscriptions
        ]

    @once
    def alerts(self) -> AlertsSeen:
        self.stable()
        t0 = time.time()
        silent_scope = f"location={self.silent_location}"
        silent_keys = {self.key(m) for m in self.expected_disconnected} & {
            self.key(m) for m in self.fleet.in_location(self.silent_location)
        }
        other_keys = {self.key(m) for m in self.outaged} - silent_keys

        def scope_silent_page() -> Notification | None:
            for n in self.hook.notifications:
                g = n.get("groupLabels", {})
                if g.get("alertname") == "ArcScopeSilent" and g.get("scope") == silent_scope:
                    return n
            return None

        page = wait_until(
            f"Alertmanager to deliver ArcScopeSilent {silent_scope} to the webhook",
            scope_silent_page,
            timeout=90,
            every=1.0,
        )
        self.timings["ArcScopeSilent delivered"] = time.time() - self.started_at

        def delivered() -> set[str]:
            return {
                str(a["labels"]["resource_id"]).lower()
                for n in self.hook.notifications
                if n.get("status") == "firing"
                for a in self._ours(n)
            }

        wait_until(
            f"ArcMachineOffline of the {len(other_keys)} outaged machines outside the silent "
            "location delivered to the webhook",
            lambda: True if other_keys <= delivered() else None,
            timeout=150,
            every=1.0,
            state=lambda: f"missing {sorted(other_keys - delivered())[:5]}",
        )
        self.timings["ArcMachineOffline delivered"] = time.time() - self.started_at

        def silent_in_am() -> float | None:
            alerts = [
                a
                for a in self._machine_alerts()
                if a["labels"].get("location") == self.silent_location
            ]
            got = {str(a["labels"]["resource_id"]).lower() for a in alerts}
            if not silent_keys <= got:
                return None
            # Prometheus sends an alert within an evaluation of its start
            return max(datetime.fromisoformat(str(a["startsAt"])).timestamp() for a in alerts)

        started_at = wait_until(
            f"Prometheus to send ArcMachineOffline of the {len(silent_keys)} Disconnected "
            "machines of the silent location to Alertmanager",
            silent_in_am,
            timeout=60,
            every=1.0,
        )
        loc = f'location="{self.silent_location}"'
        inhibited = [
            a
            for a in self._machine_alerts(
                active=False, inhibited=True, silenced=False, unprocessed=False
            )
            if a["labels"].get("location") == self.silent_location
        ]
        not_inhibited = [
            a
            for a in self.alertmanager.alerts(
                'alertname="ArcMachineOffline"',
                loc,
                active=True,
                inhibited=False,
                silenced=False,
                unprocessed=True,
            )
            if a["labels"].get("subscription") in self.subscriptions
        ]
        other_active = [
            a
            for a in self._machine_alerts(
                active=True, inhibited=False, silenced=False, unprocessed=False
            )
            if a["labels"].get("location") != self.silent_location
        ]
        fingerprints = {
            a["fingerprint"]
            for a in self.alertmanager.alerts(
                'alertname="ArcScopeSilent"', f'scope="{silent_scope}"'
            )
        }
        # A group's first notification goes out group_wait after its first alert: wait that
        # long after the silent location's machine alerts arrived, then none may have been sent.
        group_wait = self.alertmanager.group_wait("ArcMachineOffline")
        time.sleep(max(0.0, started_at + group_wait + 3 * FAST_SECONDS - time.time()))
        leaked = [
            a
            for n in self.hook.notifications
            for a in self._ours(n)
            if a["labels"].get("location") == self.silent_location
        ]
        self.timings["alerts checked"] = time.time() - self.started_at
        say(f"alert phase took {time.time() - t0:.0f}s (Alertmanager group_wait {group_wait:g}s)")
        machine_notifications = [
            n
            for n in self.hook.notifications
            if n.get("groupLabels", {}).get("alertname") == "ArcMachineOffline" and self._ours(n)
        ]
        return AlertsSeen(
            page,
            machine_notifications,
            inhibited,
            not_inhibited,
            other_active,
            fingerprints,
            leaked,
            group_wait,
        )

    # ---- phase 3: every dashboard query ---------------------------------------------------

    def machine_for_dashboard(self) -> str:
        """An outaged (Disconnected) machine outside the silent location, as the machine
        dashboard's resource_id variable lists it (from InfluxDB): the first in key order."""
        listed = {
            str(r["value"])
            for r in self.influx.rows('SHOW TAG VALUES FROM "transitions" WITH KEY = "resource_id"')
        }
        candidates = sorted(
            k for k in (self.key(m) for m in self.outaged) if k not in self.silent_location_keys()
        )
        if not candidates or candidates[0] not in listed:
            raise AssertionError(
                f"outaged machine {candidates[:1]} is not among the {len(listed)} resource_id "
                "values of the machine dashboard's variable (InfluxDB transitions)"
            )
        return candidates[0]

    def silent_location_keys(self) -> set[str]:
        return {self.key(m) for m in self.fleet.in_location(self.silent_location)}

    def ours(self) -> dict[str, set[str]]:
        """Label values this run produced, for the dashboard answer checks."""
        groups = {self.fleet.names(m)[1:] for m in range(len(self.fleet))}
        scopes = {f"location={loc}" for loc in self.locations}
        scopes |= {f"subscription={sub}" for sub in self.subscriptions}
        scopes |= {f"resource_group={sub}/{rg}" for sub, rg in groups}
        return {
            "location": set(self.locations),
            "subscription": self.subscriptions,
            "resource_group": {rg for _, rg in groups},
            "scope": scopes,
        }

    @once
    def dashboards(self) -> list[DashboardResult]:
        """Every panel and variable query of the three dashboards, with template variables
        substituted as Grafana would (the "All" values, and for the machine dashboard one
        machine of this run as its resource_id variable lists it), against the real
        Prometheus (instant or range query per the panel) and InfluxDB (InfluxQL)."""
        self.stable()
        if self.workers_stopped:
            raise AssertionError(
                "the dashboards are queried while the workers run: run this module in file order"
            )
        resource_id = self.machine_for_dashboard()
        now = time.time()
        start = max(self.started_at, now - 3600)
        ours = self.ours()
        results: list[DashboardResult] = []
        for path in sorted(DASHBOARD_DIR.glob("*.json")):
            dashboard = json.loads(path.read_text())
            values = default_variable_values(dashboard)
            if dashboard.get("uid") == "arcbeat-machine":
                values["resource_id"] = resource_id
            metas = panel_meta(dashboard)
            for pq in [*variable_queries(dashboard), *panel_queries(dashboard)]:
                executed = substitute_variables(pq.query, values)
                meta = metas.get((pq.panel_id, pq.ref_id), PanelMeta("variable", pq.labels, False))
                try:
                    if pq.datasource == "influxdb":
                        problems = check_influx_result(pq, self.influx.series(executed))
                    else:
                        data = (
                            self.prometheus.query(executed, now)
                            if pq.shape == "vector"
                            else self.prometheus.query_range(executed, start, now, FAST_SECONDS)
                        )
                        problems = check_prometheus_result(pq, meta, data, ours)
                except (OSError, ValueError) as exc:
                    problems = [f"query failed: {exc}"]
                results.append(DashboardResult(pq, executed, problems))
        self.timings["dashboards queried"] = time.time() - self.started_at
        return results

    # ---- phase 4: history ------------------------------------------------------------------

    def stop_workers(self) -> None:
        if self.workers_stopped:
            return
        self.workers_stopped = True
        t0 = time.time()
        for w in self.workers:
            w.terminate()
        codes = [w.stop(timeout=45) for w in self.workers]
        self.timings["workers stopping"] = time.time() - t0
        say(f"workers stopped in {time.time() - t0:.1f}s, exit codes {codes}")

    @once
    def history(self) -> HistorySeen:
        """Stop the workers (their outputs are then final), read the status topic
        read_committed, and wait until InfluxDB has every transition."""
        self.stable()
        t0 = time.time()
        self.stop_workers()
        bootstrap = self.stack.settings.kafka.bootstrap
        topic = read_committed(bootstrap, f"{self.prefix}.status", PARTITIONS)
        want = {
            str(r.value["transitionId"]) for r in topic if r.value.get("type") == "StatusChanged"
        }
        assert self.history_proc is not None
        rows: list[dict[str, Any]] = []

        def complete() -> bool | None:
            nonlocal rows
            self.history_proc.require_alive()  # type: ignore[union-attr]
            rows = self.influx.rows(
                'SELECT "transition_id", "status", "previous_status", "reason", "mass_outage", '
                '"resource_id" FROM "transitions"'
            )
            return True if {str(r["transition_id"]) for r in rows} >= want else None

        wait_until(
            f"InfluxDB to hold the {len(want)} transitions of {self.prefix}.status",
            complete,
            timeout=60,
            every=1.0,
            state=lambda: f"{len(rows)} rows in InfluxDB",
        )
        scope_events = self.influx.rows('SELECT "machines", "scope", "type" FROM "scope_events"')
        availability = {
            str(r["resource_id"]): int(r["count"])
            for r in self.influx.rows(
                'SELECT count("received") FROM "availability" GROUP BY "resource_id"'
            )
        }
        self.timings["history checked"] = time.time() - self.started_at
        say(f"history phase took {time.time() - t0:.0f}s ({len(want)} transitions)")
        return HistorySeen(topic, rows, scope_events, availability)

    # ---- phase 5: the simulator's ground truth ---------------------------------------------

    @once
    def groundtruth(self) -> Path:
        """Stop the simulator (after the workers, so no fleet-wide silence is declared) and
        return its ground-truth log."""
        self.stable()
        self.stop_workers()
        assert self.simulator is not None
        code = self.simulator.stop(timeout=30)
        if code not in (0, -signal.SIGTERM) or not self.groundtruth_path.is_file():
            raise AssertionError(
                f"simulator exited with {code}; log {self.simulator.log}:\n{self.simulator.tail()}"
            )
        return self.groundtruth_path
