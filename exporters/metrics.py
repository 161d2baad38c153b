"""Prometheus metrics of a worker, built from a snapshot at scrape time (see
docs/metrics-alerts-history.md, Metrics).

Nothing in the hot path touches prometheus-client: the engine keeps plain counters, and this
collector turns them into metric families when Prometheus scrapes. Each worker reports only the
partitions it actively owns, so ``sum()`` across workers is the fleet. Per-machine series exist
only for Disconnected machines, capped at ``max_machine_series``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from arcbeat.streams.decide.degradation import DELAY_BOUNDS
from arcbeat.streams.decide.early_warning import Cumulative
from arcbeat.streams.decide.mass_silence import Verdict
from arcbeat.streams.decide.stats import EngineStats, Histogram


@dataclass(frozen=True)
class OfflineMachine:
    resource_id: str
    subscription: str
    resource_group: str
    machine_name: str
    location: str
    last_heartbeat_at: float
    # the id of the maintenance window covering the machine, "" when none
    maintenance: str = ""


@dataclass
class WorkerSnapshot:
    """What the collector needs; produced by the worker at scrape time."""

    stats: EngineStats
    counts: Counter[tuple[str, str, str, str]]  # (status, location, os_type, subscription)
    lag: dict[int, int]
    verdicts: dict[str, Verdict]
    held_by_scope: Counter[str] = field(default_factory=Counter)
    offline: Iterator[OfflineMachine] = field(default_factory=lambda: iter(()))
    offline_total: int = 0
    flapping: int = 0
    # Disconnected machines inside a maintenance window, by location (owned partitions)
    maintenance_offline: Counter[str] = field(default_factory=Counter)
    # maintenance windows in force now (every worker knows every window)
    maintenance_active: int = 0
    # early warning: late machines by location (owned partitions), delivery delays by
    # location since start, and the locations the decider holds degraded (every worker)
    late_by_location: Counter[str] = field(default_factory=Counter)
    delivery_delay: Mapping[str, Cumulative] = field(default_factory=dict)
    degraded: list[str] = field(default_factory=list)


def _gauge_by_location(name: str, doc: str, values: Mapping[str, float]) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=["location"])
    for location, n in sorted(values.items()):
        g.add_metric([location], n)
    return g


def _histogram(name: str, doc: str, h: Histogram) -> HistogramMetricFamily:
    buckets: list[tuple[str, float]] = []
    acc = 0
    for bound, n in zip(h.bounds, h.counts, strict=False):
        acc += n
        buckets.append((repr(float(bound)), acc))
    buckets.append(("+Inf", h.count))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=h.sum)


def _counter(
    name: str,
    doc: str,
    labels: list[str],
    values: Mapping[Any, int],  # keys: tuples of label values
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for label_values, n in sorted(values.items()):
        family.add_metric(list(label_values), n)
    return family


class WorkerCollector(Collector):
    def __init__(
        self,
        snapshot: Callable[[], WorkerSnapshot],
        *,
        max_machine_series: int = 10_000,
        max_subscriptions: int = 1000,
    ) -> None:
        self._snapshot = snapshot
        self._max_series = max_machine_series
        self._max_subs = max_subscriptions
        self._overflow_total = 0

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        st = snap.stats

        machines = GaugeMetricFamily(
            "arcbeat_machines",
            "Machines by status, location and OS type (owned partitions).",
            labels=["status", "location", "os_type"],
        )
        by_sub: Counter[tuple[str, str]] = Counter()
        grouped: Counter[tuple[str, str, str]] = Counter()
        for (status, location, os_type, sub), n in snap.counts.items():
            grouped[(status, location, os_type)] += n
            by_sub[(sub, status)] += n
        for labels, n in sorted(grouped.items()):
            machines.add_metric(list(labels), n)
        yield machines

        subs = GaugeMetricFamily(
            "arcbeat_subscription_machines",
            "Machines by subscription and status; subscriptions beyond the cap are 'other'.",
            labels=["subscription", "status"],
        )
        totals: Counter[str] = Counter()
        for (sub, _status), n in by_sub.items():
            totals[sub] += n
        keep = {s for s, _ in totals.most_common(self._max_subs)}
        capped: Counter[tuple[str, str]] = Counter()
        for (sub, status), n in by_sub.items():
            capped[(sub if sub in keep else "other", status)] += n
        for sub_status, n in sorted(capped.items()):
            subs.add_metric(list(sub_status), n)
        yield subs

        yield _counter(
            "arcbeat_heartbeats_received", "Accepted agent messages by kind.", ["kind"],
            {(k,): n for k, n in st.heartbeats.items()},
        )  # fmt: skip
        yield _counter(
            "arcbeat_rejects", "Messages sent to the DLQ, by reason.", ["reason"],
            {(r,): n for r, n in st.rejects.items()},
        )  # fmt: skip
        yield _counter(
            "arcbeat_transitions", "Status transitions emitted.", ["from", "to", "reason"],
            st.transitions,
        )  # fmt: skip
        yield _counter(
            "arcbeat_message_outcomes", "What accepted messages did (stale, expired_ignored, ...).",
            ["outcome"], {(o,): n for o, n in st.outcomes.items()},
        )  # fmt: skip

        yield _histogram(
            "arcbeat_detection_delay_seconds",
            "Disconnected emitted after the deadline (lastHeartbeatAt + disconnect_after).",
            st.detection_delay,
        )
        delivery = HistogramMetricFamily(
            "arcbeat_delivery_delay_seconds",
            "Broker arrival minus the agent's sentAt, less the machine's own clock-offset "
            "baseline, by location.",
            labels=["location"],
        )
        for location, cum in sorted(snap.delivery_delay.items()):
            buckets: list[tuple[str, float]] = []
            acc = 0
            for bound, n in zip(DELAY_BOUNDS, cum.counts, strict=False):
                acc += n
                buckets.append((repr(float(bound)), acc))
            buckets.append(("+Inf", cum.count))
            delivery.add_metric([location], buckets, sum_value=cum.sum)
        yield delivery
        yield _gauge_by_location(
            "arcbeat_machines_late",
            "Connected machines overdue by more than late_after, by location (owned "
            "partitions; not a status: they are still Connected).",
            snap.late_by_location,
        )
        degraded = GaugeMetricFamily(
            "arcbeat_scope_degraded",
            "1 while a scope is degraded (ScopeDegraded until ScopeDegradationCleared; use "
            "max by scope).",
            labels=["scope"],
        )
        for scope in snap.degraded:
            degraded.add_metric([scope], 1.0)
        yield degraded
        yield _histogram(
            "arcbeat_tick_seconds",
            "Time to handle one tick of one partition (deadlines, holds, releases).",
            st.tick_seconds,
        )
        yield _histogram(
            "arcbeat_event_loop_lag_seconds",
            "How late the worker's event loop ran a 100 ms timer (a blocking step delays it).",
            st.loop_lag,
        )
        yield _histogram(
            "arcbeat_commit_seconds",
            "Time the heartbeat loop paused for one round of commits: each due partition's "
            "transaction sealed (outputs sent, a checkpoint when due); the commits finish in "
            "the background.",
            st.commit_seconds,
        )
        lag_max = GaugeMetricFamily(
            "arcbeat_event_loop_lag_max_seconds",
            "The largest event loop lag since the worker started.",
        )
        lag_max.add_metric([], st.loop_lag_max)
        yield lag_max
        looks = CounterMetricFamily(
            "arcbeat_tick_looks", "Machines the ticks looked at (due, or released from a hold)."
        )
        looks.add_metric([], st.tick_looks)
        yield looks
        skew = CounterMetricFamily(
            "arcbeat_clock_skew", "Heartbeats whose sentAt is far from their arrival."
        )
        skew.add_metric([], st.clock_skew)
        yield skew

        lag = GaugeMetricFamily(
            "arcbeat_consumer_lag",
            "Heartbeat records not yet processed, per owned partition.",
            labels=["partition"],
        )
        for p, n in sorted(snap.lag.items()):
            lag.add_metric([str(p)], n)
        yield lag

        last = GaugeMetricFamily(
            "arcbeat_last_event_timestamp_seconds",
            "Broker time of the last processed heartbeat or tick.",
        )
        last.add_metric([], st.last_event_at)
        yield last

        silent = GaugeMetricFamily(
            "arcbeat_scope_silent",
            "1 while a scope is in a ScopeSilent hold (use max by scope).",
            labels=["scope"],
        )
        for scope, v in sorted(snap.verdicts.items()):
            silent.add_metric([scope], 1.0 if v.silent else 0.0)
        yield silent

        held = GaugeMetricFamily(
            "arcbeat_outage_held_machines",
            "Machines whose Disconnected is held by ScopeSilent.",
            labels=["scope"],
        )
        for scope, n in sorted(snap.held_by_scope.items()):
            held.add_metric([scope], n)
        yield held

        # maintenance: the covering window's id. Empty outside a window, and Prometheus drops
        # empty labels, so a window's end turns the machine into a new series without it.
        offline = GaugeMetricFamily(
            "arcbeat_machine_offline",
            "Unix time of the last heartbeat of each Disconnected machine (capped); "
            "maintenance is the id of the maintenance window covering it, if any.",
            labels=[
                "resource_id",
                "subscription",
                "resource_group",
                "machine_name",
                "location",
                "maintenance",
            ],
        )
        shown = 0
        # no more than the cap is taken: each one taken may cost the worker a record's decode
        for m in islice(snap.offline, self._max_series):
            offline.add_metric(
                [
                    m.resource_id,
                    m.subscription,
                    m.resource_group,
                    m.machine_name,
                    m.location,
                    m.maintenance,
                ],
                m.last_heartbeat_at,
            )
            shown += 1
        yield offline
        hidden = max(0, snap.offline_total - shown)
        self._overflow_total += hidden
        over = GaugeMetricFamily(
            "arcbeat_machine_series_overflow",
            "Disconnected machines not exposed as series because of the cap.",
        )
        over.add_metric([], hidden)
        yield over
        over_total = CounterMetricFamily(
            "arcbeat_machine_series_dropped",
            "Sum over scrapes of Disconnected machines left out by the cap.",
        )
        over_total.add_metric([], self._overflow_total)
        yield over_total

        yield _gauge_by_location(
            "arcbeat_machines_offline_in_maintenance",
            "Disconnected machines inside a maintenance window, by location (owned partitions; "
            "not capped).",
            snap.maintenance_offline,
        )
        windows = GaugeMetricFamily(
            "arcbeat_maintenance_windows_active",
            "Maintenance windows in force now; every worker exports the same value (use max).",
        )
        windows.add_metric([], snap.maintenance_active)
        yield windows

        flap = GaugeMetricFamily(
            "arcbeat_flapping_machines",
            "Disconnected machines that are flapping (past flap_threshold transitions this "
            "window); flapping Connected machines are not counted.",
        )
        flap.add_metric([], snap.flapping)
        yield flap

        up = GaugeMetricFamily("arcbeat_scrape_timestamp_seconds", "When this snapshot was taken.")
        up.add_metric([], time.time())
        yield up
