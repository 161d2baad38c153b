"""Capacity planning (docs/metrics-alerts-history.md): machines per subscription, resource
group and location; use against limits, headroom and days to limit (``arcbeat_capacity_*``);
growth over time from the InfluxDB ``fleet`` and ``capacity`` history.

The capacity gauges describe the whole fleet (one exporter computes them), so panels fold
duplicate exporters with ``max by (kind, scope)``.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import table
from grafana_foundation_sdk.models import dashboard as dm

from arcbeat.dashboards.common import (
    BAD,
    GOOD,
    INFLUXDB,
    PROMETHEUS,
    WARN,
    Board,
    InfluxQL,
    bargauge_panel,
    merge,
    organize,
    prom,
    prom_variable,
    stat_panel,
    thresholds,
    timeseries_panel,
)

UID = "arcbeat-capacity"

# 80 % warning and 95 % critical, as ArcCapacityWarning / ArcCapacityCritical.
RATIO_STEPS: tuple[tuple[float | None, str], ...] = ((None, GOOD), (0.8, WARN), (0.95, BAD))
SCOPES = 'scope=~"tenant|subscription=$subscription|resource_group=$subscription/$resource_group"'
TENANT = 'kind="tenant_objects", scope="tenant"'


def _cap(metric: str, selector: str) -> str:
    return f"max by (kind, scope) (arcbeat_capacity_{metric}{{{selector}}})"


def _fleet_history() -> str:
    # Each partition's snapshot is written at aligned times: take the last one per
    # partition in each interval, then add the partitions up.
    return """SELECT sum("connected") AS "Connected", sum("disconnected") AS "Disconnected",
        sum("expired") AS "Expired"
        FROM (SELECT last("connected") AS "connected", last("disconnected") AS "disconnected",
        last("expired") AS "expired" FROM "fleet" WHERE "scope" = 'fleet' AND $timeFilter
        GROUP BY time($__interval), "partition")
        WHERE $timeFilter GROUP BY time($__interval) fill(none)"""


def build() -> dict[str, Any]:
    board = Board(
        UID,
        "arcbeat / Capacity planning",
        "Machines per subscription, resource group and location against Azure Resource "
        "Manager limits: use, headroom, days to limit, growth.",
    )
    board.builder = board.builder.time("now-30d", "now").refresh("5m")
    board.variable(
        prom_variable(
            "subscription",
            "Subscription",
            "label_values(arcbeat_subscription_machines, subscription)",
        )
    ).variable(
        prom_variable(
            "resource_group",
            "Resource group",
            'label_values(arcbeat_capacity_used{kind="machines_per_resource_group", '
            'scope=~"resource_group=$subscription/.*"}, scope)',
        ).regex(r"/^resource_group=[^\/]+\/(.+)$/")
    ).variable(prom_variable("location", "Location", "label_values(arcbeat_machines, location)"))

    board.row(
        "Tenant",
        stat_panel(
            "Machines (tenant objects)",
            prom(f"max(arcbeat_capacity_used{{{TENANT}}})", instant=True),
            w=4,
            no_value="-",
            steps=((None, "blue"),),
        ),
        stat_panel(
            "Tenant limit",
            prom(f"max(arcbeat_capacity_limit{{{TENANT}}})", instant=True),
            w=4,
            no_value="-",
            steps=((None, "text"),),
        ),
        stat_panel(
            "Tenant headroom",
            prom(
                f"max(arcbeat_capacity_limit{{{TENANT}}}) - max(arcbeat_capacity_used{{{TENANT}}})",
                instant=True,
            ),
            w=4,
            no_value="-",
            steps=((None, BAD), (1, WARN), (1000, GOOD)),
        ),
        stat_panel(
            "Tenant use",
            prom(f"max(arcbeat_capacity_use_ratio{{{TENANT}}})", instant=True),
            w=4,
            unit="percentunit",
            decimals=1,
            no_value="-",
            steps=RATIO_STEPS,
        ),
        stat_panel(
            "Days to tenant limit",
            prom(f"min(arcbeat_capacity_days_to_limit{{{TENANT}}})", instant=True),
            w=4,
            unit="d",
            no_value="not growing",
            description="Least-squares linear growth over the recorded history.",
            steps=((None, BAD), (30, WARN), (90, GOOD)),
        ),
        stat_panel(
            "Most tags on one machine",
            prom('max(arcbeat_capacity_used{kind="tags_per_machine"})', instant=True),
            w=4,
            no_value="-",
            description="Azure allows 50 tags per resource.",
            steps=((None, GOOD), (40, WARN), (50, BAD)),
        ),
    )

    board.row(
        "Use against limits",
        bargauge_panel(
            "Closest to the limit, by kind",
            prom("max by (kind) (arcbeat_capacity_use_ratio)", "{{kind}}", instant=True),
            w=8,
            h=9,
            unit="percentunit",
            max_value=1,
            steps=RATIO_STEPS,
        ),
        table.Panel()
        .title("Use, limit, headroom and days to limit per scope")
        .description("Alerts fire at 80 % (ArcCapacityWarning) and 95 % (ArcCapacityCritical).")
        .datasource(PROMETHEUS)
        .span(16)
        .height(9)
        .with_target(prom(_cap("used", SCOPES), table=True, ref="A"))
        .with_target(prom(_cap("limit", SCOPES), table=True, ref="B"))
        .with_target(prom(f"{_cap('limit', SCOPES)} - {_cap('used', SCOPES)}", table=True, ref="C"))
        .with_target(prom(_cap("use_ratio", SCOPES), table=True, ref="D"))
        .with_target(prom(_cap("days_to_limit", SCOPES), table=True, ref="E"))
        .with_transformation(merge())
        .with_transformation(
            organize(
                exclude=["Time"],
                rename={
                    "Value #A": "used",
                    "Value #B": "limit",
                    "Value #C": "headroom",
                    "Value #D": "use",
                    "Value #E": "days to limit",
                },
            )
        )
        .sort_by([common_builders.TableSortByFieldState().display_name("use").desc(True)])
        .thresholds(thresholds(*RATIO_STEPS))
        .override_by_name(
            "use",
            [
                dm.DynamicConfigValue(id_val="unit", value="percentunit"),
                dm.DynamicConfigValue(
                    id_val="custom.cellOptions", value={"type": "color-background"}
                ),
            ],
        )
        .override_by_name("days to limit", [dm.DynamicConfigValue(id_val="unit", value="d")]),
    )

    board.row(
        "Machines",
        bargauge_panel(
            "Machines per subscription",
            prom(
                "sort_desc(sum by (subscription) "
                '(arcbeat_subscription_machines{subscription=~"$subscription"}))',
                "{{subscription}}",
                instant=True,
            ),
            w=6,
            h=10,
        ),
        bargauge_panel(
            "Machines per location",
            prom(
                'sort_desc(sum by (location) (arcbeat_machines{location=~"$location"}))',
                "{{location}}",
                instant=True,
            ),
            w=6,
            h=10,
        ),
        bargauge_panel(
            "Resource groups per subscription",
            prom(
                "sort_desc(max by (scope) (arcbeat_capacity_used{"
                'kind="resource_groups_per_subscription", scope=~"subscription=$subscription"}))',
                "{{scope}}",
                instant=True,
            ),
            w=6,
            h=10,
            description="Azure Resource Manager allows 980 resource groups per subscription.",
        ),
        bargauge_panel(
            "Machines per resource group (top 20)",
            prom(
                "topk(20, max by (scope) (arcbeat_capacity_used{"
                'kind="machines_per_resource_group", '
                'scope=~"resource_group=$subscription/$resource_group"}))',
                "{{scope}}",
                instant=True,
            ),
            w=6,
            h=10,
            description="800 resources of one type per resource group (preview guidance; "
            "current Arc exempts machines, so the check can be switched off).",
        ),
    )

    board.row(
        "Trend",
        timeseries_panel(
            "Highest use by kind",
            prom("max by (kind) (arcbeat_capacity_use_ratio)", "{{kind}}"),
            w=12,
            unit="percentunit",
            steps=RATIO_STEPS,
        ),
        timeseries_panel(
            "Days to limit (soonest scope per kind)",
            prom("min by (kind) (arcbeat_capacity_days_to_limit)", "{{kind}}"),
            w=12,
            unit="d",
        ),
    )

    board.row(
        "Growth (InfluxDB history)",
        timeseries_panel(
            "Fleet size",
            InfluxQL(_fleet_history()).alias("$col"),
            w=12,
            datasource=INFLUXDB,
            stacked=True,
            description="Sum of the per-partition fleet snapshots.",
        ),
        timeseries_panel(
            "Machines per location",
            InfluxQL(
                """SELECT sum("total") AS "machines" FROM (SELECT last("connected")
                + last("disconnected") + last("expired") AS "total" FROM "fleet"
                WHERE "scope" =~ /^location=$location$/ AND $timeFilter
                GROUP BY time($__interval), "partition", "scope")
                WHERE $timeFilter GROUP BY time($__interval), "scope" fill(none)"""
            ).alias("$tag_scope"),
            w=12,
            datasource=INFLUXDB,
        ),
        timeseries_panel(
            "Tenant objects: used and limit",
            InfluxQL(
                """SELECT last("used") AS "used", last("limit") AS "limit" FROM "capacity"
                WHERE "kind" = 'tenant_objects' AND "scope" = 'tenant' AND $timeFilter
                GROUP BY time($__interval) fill(none)"""
            ),
            w=12,
            datasource=INFLUXDB,
        ),
        timeseries_panel(
            "Highest use by kind (history)",
            InfluxQL(
                """SELECT max("ratio") AS "use" FROM "capacity" WHERE $timeFilter
                GROUP BY time($__interval), "kind" fill(none)"""
            ).alias("$tag_kind"),
            w=12,
            unit="percentunit",
            datasource=INFLUXDB,
            steps=RATIO_STEPS,
        ),
    )
    model: dict[str, Any] = board.to_dict()
    return model
