"""The worker's scrape-time collector: metric names, labels and values from a snapshot
(exporters/metrics.py), rendered in the Prometheus text format as a scrape would see them."""

from __future__ import annotations

from collections import Counter

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from arcbeat.exporters.metrics import OfflineMachine, WorkerCollector, WorkerSnapshot
from arcbeat.streams.decide.stats import EngineStats

SUB = "11111111-2222-3333-4444-555555555555"


def _machine(name: str, location: str, maintenance: str = "") -> OfflineMachine:
    rid = f"/subscriptions/{SUB}/resourcegroups/rg-web/providers/x/machines/{name}"
    return OfflineMachine(rid, SUB, "rg-web", name, location, 1_700_000_000.0, maintenance)


Samples = dict[str, list[tuple[dict[str, str], float]]]


def _scrape(snapshot: WorkerSnapshot, **kwargs: int) -> Samples:
    """metric sample name -> [(labels, value)] of one scrape."""
    registry = CollectorRegistry()
    registry.register(WorkerCollector(lambda: snapshot, **kwargs))
    text = generate_latest(registry).decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def _snapshot(**fields: object) -> WorkerSnapshot:
    return WorkerSnapshot(
        stats=EngineStats(),
        counts=Counter({("Disconnected", "westeurope", "linux", SUB): 3}),
        lag={0: 0},
        verdicts={},
        **fields,  # type: ignore[arg-type]
    )


def test_offline_machines_carry_their_maintenance_window() -> None:
    machines = [
        _machine("web-01", "westeurope", "mw-20261129-0200-ab12cd"),
        _machine("web-02", "westeurope"),
    ]
    scraped = _scrape(_snapshot(offline=iter(machines), offline_total=2))
    series = {labels["machine_name"]: labels for labels, _ in scraped["arcbeat_machine_offline"]}
    assert series["web-01"]["maintenance"] == "mw-20261129-0200-ab12cd"
    # outside a window the label is empty, which Prometheus stores as no label at all
    assert series["web-02"]["maintenance"] == ""
    assert set(series["web-02"]) == {
        "resource_id",
        "subscription",
        "resource_group",
        "machine_name",
        "location",
        "maintenance",
    }
    assert {v for _, v in scraped["arcbeat_machine_offline"]} == {1_700_000_000.0}


def test_offline_machine_without_window_defaults_to_no_maintenance() -> None:
    m = OfflineMachine("rid", SUB, "rg", "m", "westeurope", 0.0)
    assert m.maintenance == ""


def test_offline_in_maintenance_by_location_and_active_windows() -> None:
    snap = _snapshot(
        maintenance_offline=Counter({"westeurope": 2, "eastus": 1}),
        maintenance_active=4,
    )
    scraped = _scrape(snap)
    assert sorted(
        (labels["location"], v) for labels, v in scraped["arcbeat_machines_offline_in_maintenance"]
    ) == [("eastus", 1.0), ("westeurope", 2.0)]
    assert scraped["arcbeat_maintenance_windows_active"] == [({}, 4.0)]


def test_no_maintenance_means_zero_windows_and_no_location_series() -> None:
    scraped = _scrape(_snapshot())
    assert "arcbeat_machines_offline_in_maintenance" not in scraped
    assert scraped["arcbeat_maintenance_windows_active"] == [({}, 0.0)]


def test_machine_series_cap_applies_to_machines_in_a_window_too() -> None:
    machines = [_machine(f"web-{i:02d}", "westeurope", "mw-1") for i in range(5)]
    scraped = _scrape(_snapshot(offline=iter(machines), offline_total=5), max_machine_series=3)
    assert len(scraped["arcbeat_machine_offline"]) == 3
    assert scraped["arcbeat_machine_series_overflow"] == [({}, 2.0)]


def test_early_warning_series_by_location() -> None:
    from arcbeat.streams.decide.degradation import DELAY_BOUNDS
    from arcbeat.streams.decide.early_warning import Cumulative

    slow = Cumulative([0] * 10 + [4] + [0] * (len(DELAY_BOUNDS) - 10), 250.0)
    snap = _snapshot(
        late_by_location=Counter({"westasia": 7}),
        delivery_delay={"westasia": slow},
        degraded=["location=westasia"],
    )
    scraped = _scrape(snap)
    assert scraped["arcbeat_machines_late"] == [({"location": "westasia"}, 7.0)]
    assert scraped["arcbeat_scope_degraded"] == [({"scope": "location=westasia"}, 1.0)]
    count = scraped["arcbeat_delivery_delay_seconds_count"]
    assert count == [({"location": "westasia"}, 4.0)]
    buckets = {lb["le"]: v for lb, v in scraped["arcbeat_delivery_delay_seconds_bucket"]}
    assert buckets["60.0"] == 0.0 and buckets["120.0"] == 4.0 and buckets["+Inf"] == 4.0
