"""The ``arcbeat_capacity_*`` Prometheus gauges of the latest report, read at scrape time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from arcbeat.exporters.capacity.model import CapacityReport


class CapacityCollector(Collector):
    """Custom collector for the ``arcbeat_capacity_*`` gauges, read at scrape time.

    ``snapshot_fn`` returns the latest :class:`CapacityReport` (or None before the first
    one). At most ``max_scopes_per_kind`` scopes per kind are exported, those closest to
    their limit, so per-resource-group series stay bounded for a large tenant.
    ``days_to_limit`` is only exported where the trend is growing.
    """

    def __init__(
        self,
        snapshot_fn: Callable[[], CapacityReport | None],
        max_scopes_per_kind: int = 100,
    ) -> None:
        if max_scopes_per_kind < 1:
            raise ValueError(f"max_scopes_per_kind must be >= 1, got {max_scopes_per_kind}")
        self._snapshot_fn = snapshot_fn
        self._max = max_scopes_per_kind

    @staticmethod
    def _families() -> tuple[
        GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily
    ]:
        labels = ["kind", "scope"]
        return (
            GaugeMetricFamily(
                "arcbeat_capacity_used", "Capacity in use, per check kind and scope", labels=labels
            ),
            GaugeMetricFamily(
                "arcbeat_capacity_limit",
                "Configured limit, per check kind and scope",
                labels=labels,
            ),
            GaugeMetricFamily(
                "arcbeat_capacity_use_ratio",
                "used / limit, per check kind and scope",
                labels=labels,
            ),
            GaugeMetricFamily(
                "arcbeat_capacity_days_to_limit",
                "Days until the limit at the least-squares growth trend (absent when not growing)",
                labels=labels,
            ),
        )

    def describe(self) -> Iterator[Metric]:
        # Names only: registering must not call snapshot_fn.
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        used, limit, ratio, days = self._families()
        report = self._snapshot_fn()
        if report is not None:
            per_kind: Counter[str] = Counter()
            for u in report.checks:  # sorted closest-to-limit first
                if per_kind[u.kind] >= self._max:
                    continue
                per_kind[u.kind] += 1
                labels = [u.kind, u.scope]
                used.add_metric(labels, u.used)
                limit.add_metric(labels, u.limit)
                ratio.add_metric(labels, u.ratio)
                if u.days_to_limit is not None:
                    days.add_metric(labels, u.days_to_limit)
        yield used
        yield limit
        yield ratio
        yield days
