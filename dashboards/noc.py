"""NOC overview: fleet by status, who is offline and for how long, maintenance windows and
availability (planned downtime excluded), transitions, detection delay, pipeline health and
scope silence (docs/metrics-alerts-history.md, Dashboards)."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import piechart, prometheus, stat, statetimeline, table
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import piechart as piechart_models

from arcbeat.dashboards.common import (
    BAD,
    GOOD,
    INFLUXDB,
    PROMETHEUS,
    STATUS_COLORS,
    WARN,
    WORKER_JOB,
    Board,
    InfluxQL,
    bargauge_panel,
    merge,
    organize,
    prom,
    prom_variable,
    reduce_last,
    stat_panel,
    status_mappings,
    thresholds,
    timeseries_panel,
    value_mappings,
)

UID = "arcbeat-noc"
MACHINE_UID = "arcbeat-machine"

LOC = 'location=~"$location"'
OFFLINE_FILTER = (
    'subscription=~"$subscription", resource_group=~"$resource_group", location=~"$location"'
)
# One series per Disconnected machine; `max by` folds the copies two workers may both
# export for a moment during a rebalance. maintenance: the window covering it, if any.
OFFLINE_BY_MACHINE = (
    "max by (resource_id, machine_name, subscription, resource_group, location, maintenance) "
    f"(arcbeat_machine_offline{{{OFFLINE_FILTER}}})"
)
INFLUX_FILTER = (
    '"location" =~ /^$location$/ AND "subscription_id" =~ /^$subscription$/ '
    'AND "resource_group" =~ /^$resource_group$/'
)


def with_maintenance_column(expr: str) -> str:
    """``expr`` with maintenance="-" on machines outside any window, so every table row has
    the column (Prometheus drops an empty label)."""
    return f'label_replace({expr}, "maintenance", "-", "maintenance", "")'


# Availability points have no resource group tag.
AVAILABILITY_FILTER = '"location" =~ /^$location$/ AND "subscription_id" =~ /^$subscription$/'


def _quantile(q: float, metric: str, ref: str) -> prometheus.Dataquery:
    query: prometheus.Dataquery = prom(
        f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket[$__rate_interval])))",
        f"p{round(q * 100)}",
        ref=ref,
    )
    return query


def build() -> dict[str, Any]:
    board = Board(
        UID,
        "arcbeat / NOC overview",
        "Fleet status, offline machines, transitions, detection delay and pipeline health.",
    )
    board.builder = board.builder.time("now-6h", "now").refresh("30s")
    board.variable(
        prom_variable("location", "Location", "label_values(arcbeat_machines, location)")
    ).variable(
        prom_variable(
            "subscription",
            "Subscription",
            "label_values(arcbeat_subscription_machines, subscription)",
        )
    ).variable(
        prom_variable(
            "resource_group",
            "Resource group",
            'label_values(arcbeat_machine_offline{subscription=~"$subscription"}, resource_group)',
        )
    )

    # --- fleet ---------------------------------------------------------------------------
    def count(status: str, color: str) -> stat.Panel:
        panel: stat.Panel = stat_panel(
            status,
            prom(f'sum(arcbeat_machines{{status="{status}", {LOC}}}) or vector(0)', instant=True),
            w=4,
            description=f"Machines currently {status} (sum over all workers).",
            steps=((None, color),),
        )
        return panel

    board.row(
        "Fleet",
        count("Connected", GOOD),
        count("Disconnected", BAD),
        count("Expired", STATUS_COLORS["Expired"]),
        stat_panel(
            "Offline ratio",
            prom(
                f'(sum(arcbeat_machines{{status="Disconnected", {LOC}}}) or vector(0)) / '
                f'clamp_min(sum(arcbeat_machines{{status=~"Connected|Disconnected", {LOC}}}), 1)',
                instant=True,
            ),
            w=4,
            unit="percentunit",
            decimals=1,
            description="Disconnected / (Connected + Disconnected).",
            steps=((None, GOOD), (0.05, WARN), (0.2, BAD)),
        ),
        stat_panel(
            "Silent scopes",
            prom("count(max by (scope) (arcbeat_scope_silent) == 1) or vector(0)", instant=True),
            w=4,
            description="Scopes treated as an ingest/network outage (mass-silence rule): "
            "their per-machine Disconnected transitions are held.",
            steps=((None, GOOD), (1, BAD)),
        ),
        stat_panel(
            "Flapping machines",
            prom("sum(arcbeat_flapping_machines) or vector(0)", instant=True),
            w=4,
            steps=((None, GOOD), (1, WARN)),
        ),
        piechart.Panel()
        .title("Fleet by status")
        .datasource(PROMETHEUS)
        .span(6)
        .height(8)
        .pie_type(piechart_models.PieChartType.DONUT)
        .reduce_options(reduce_last())
        .mappings(status_mappings())
        .override_by_name("Connected", [_color(STATUS_COLORS["Connected"])])
        .override_by_name("Disconnected", [_color(STATUS_COLORS["Disconnected"])])
        .override_by_name("Expired", [_color(STATUS_COLORS["Expired"])])
        .with_target(
            prom(f"sum by (status) (arcbeat_machines{{{LOC}}})", "{{status}}", instant=True)
        ),
        timeseries_panel(
            "Fleet by status over time",
            prom(f"sum by (status) (arcbeat_machines{{{LOC}}})", "{{status}}"),
            w=10,
            stacked=True,
        )
        .override_by_name("Connected", [_color(STATUS_COLORS["Connected"])])
        .override_by_name("Disconnected", [_color(STATUS_COLORS["Disconnected"])])
        .override_by_name("Expired", [_color(STATUS_COLORS["Expired"])]),
        bargauge_panel(
            "Offline ratio by location",
            prom(
                f'sort_desc(((sum by (location) (arcbeat_machines{{status="Disconnected", {LOC}}})'
                f" - (sum by (location) (arcbeat_machines_offline_in_maintenance{{{LOC}}})"
                f' or sum by (location) (arcbeat_machines{{status="Disconnected", {LOC}}}) * 0))'
                f" or sum by (location) (arcbeat_machines{{{LOC}}}) * 0) / clamp_min(sum by "
                f'(location) (arcbeat_machines{{status=~"Connected|Disconnected", {LOC}}}), 1))',
                "{{location}}",
                instant=True,
            ),
            w=8,
            unit="percentunit",
            max_value=1,
            steps=((None, GOOD), (0.05, WARN), (0.2, BAD)),
            description="Disconnected outside maintenance windows / (Connected + "
            "Disconnected), as ArcLocationOfflineRatio sees it: a planned reboot of a "
            "location does not count.",
        ),
    )

    # --- offline machines --------------------------------------------------------------
    board.row(
        "Offline machines",
        stat_panel(
            "Longest offline",
            prom(f"max(time() - {OFFLINE_BY_MACHINE})", instant=True),
            w=6,
            unit="s",
            no_value="none offline",
            steps=((None, GOOD), (900, WARN), (86400, BAD)),
        ),
        stat_panel(
            "Went offline (range)",
            prom(
                'sum(increase(arcbeat_transitions_total{to="Disconnected"}[$__range]))'
                " or vector(0)",
                instant=True,
            ),
            w=6,
            decimals=0,
            steps=((None, GOOD), (1, WARN)),
        ),
        stat_panel(
            "Held by the outage rule",
            prom("sum(arcbeat_outage_held_machines) or vector(0)", instant=True),
            w=6,
            description="Machines whose Disconnected transition is held while their scope is "
            "silent (docs/how-it-decides.md, Mass silence).",
            steps=((None, GOOD), (1, WARN)),
        ),
        stat_panel(
            "Disconnected, not listed",
            prom("sum(arcbeat_machine_series_overflow) or vector(0)", instant=True),
            w=6,
            description="Disconnected machines beyond max_machine_series, which have no "
            "per-machine series (cardinality cap); use `arcbeat machines --status "
            "Disconnected` for the full list.",
            steps=((None, GOOD), (1, WARN)),
        ),
        table.Panel()
        .title("Offline machines (how long)")
        .description(
            "One row per Disconnected machine, longest offline first; maintenance is the id of "
            "the maintenance window covering it ('-' for none; planned: no ticket, no page). "
            "Click a machine for its detail dashboard."
        )
        .datasource(PROMETHEUS)
        .span(16)
        .height(12)
        .unit("s")
        .with_target(
            prom(
                f"sort_desc({with_maintenance_column(f'time() - {OFFLINE_BY_MACHINE}')})",
                table=True,
                ref="A",
            )
        )
        .with_target(
            prom(with_maintenance_column(f"{OFFLINE_BY_MACHINE} * 1000"), table=True, ref="B")
        )
        .with_transformation(merge())
        .with_transformation(
            organize(
                exclude=["Time"],
                rename={"Value #A": "Offline for", "Value #B": "Last heartbeat"},
            )
        )
        .sort_by([_sort("Offline for")])
        .override_by_name(
            "Last heartbeat", [dm.DynamicConfigValue(id_val="unit", value="dateTimeAsIso")]
        )
        .override_by_name(
            "machine_name",
            [
                dm.DynamicConfigValue(
                    id_val="links",
                    value=[
                        {
                            "title": "Machine detail",
                            "url": f"/d/{MACHINE_UID}?var-resource_id="
                            "${__data.fields.resource_id}&${__url_time_range}",
                        }
                    ],
                )
            ],
        ),
        bargauge_panel(
            "Disconnected by subscription",
            prom(
                "topk(15, sum by (subscription) (arcbeat_subscription_machines"
                '{status="Disconnected", subscription=~"$subscription"}) > 0)',
                "{{subscription}}",
                instant=True,
            ),
            w=8,
            h=12,
            steps=((None, BAD),),
        ),
    )

    # --- maintenance and availability ---------------------------------------------------
    board.row(
        "Maintenance and availability",
        stat_panel(
            "Active maintenance windows",
            prom("max(arcbeat_maintenance_windows_active) or vector(0)", instant=True),
            w=6,
            description="Maintenance windows in force now (every worker knows every window).",
            steps=((None, "text"), (1, "blue")),
        ),
        stat_panel(
            "Offline in maintenance",
            prom(
                f"sum(arcbeat_machines_offline_in_maintenance{{{LOC}}}) or vector(0)",
                instant=True,
            ),
            w=6,
            description="Disconnected machines inside a maintenance window: planned downtime, "
            "left out of the offline-ratio pages; they raise no ticket or page while the window "
            "lasts.",
            steps=((None, "text"), (1, "blue")),
        ),
        stat_panel(
            "Availability (range)",
            InfluxQL(
                f"""SELECT sum("received") / sum("expected") AS "availability"
                FROM "availability" WHERE $timeFilter AND {AVAILABILITY_FILTER}"""
            ),
            w=6,
            unit="percentunit",
            decimals=2,
            no_value="-",
            datasource=INFLUXDB,
            description="Heartbeats received / expected over the closed windows in range "
            "(location and subscription filters). Time inside maintenance windows is planned, "
            "not downtime: it counts in neither.",
            steps=((None, BAD), (0.9, WARN), (0.99, GOOD)),
        ),
        stat_panel(
            "Planned downtime (range)",
            InfluxQL(
                f"""SELECT sum("planned_seconds") AS "planned_seconds"
                FROM "availability" WHERE $timeFilter AND {AVAILABILITY_FILTER}"""
            ),
            w=6,
            unit="s",
            datasource=INFLUXDB,
            description="Machine-seconds of the closed windows in range that maintenance "
            "windows covered, left out of the availability beside it.",
            steps=((None, "blue"),),
        ),
        timeseries_panel(
            "Availability per interval (planned downtime excluded)",
            InfluxQL(
                f"""SELECT sum("received") / sum("expected") AS "availability"
                FROM "availability" WHERE $timeFilter AND {AVAILABILITY_FILTER}
                GROUP BY time($__interval) fill(none)"""
            ),
            w=12,
            unit="percentunit",
            datasource=INFLUXDB,
            steps=((None, BAD), (0.9, WARN), (0.99, GOOD)),
        ),
        timeseries_panel(
            "Planned downtime per interval",
            InfluxQL(
                f"""SELECT sum("planned_seconds") AS "planned_seconds"
                FROM "availability" WHERE $timeFilter AND {AVAILABILITY_FILTER}
                GROUP BY time($__interval) fill(none)"""
            ),
            w=12,
            unit="s",
            datasource=INFLUXDB,
            bars=True,
            description="Machine-seconds covered by maintenance windows, per interval.",
        ),
    )

    # --- transitions ---------------------------------------------------------------------
    board.row(
        "Transitions",
        timeseries_panel(
            "Transitions per minute (Prometheus)",
            prom(
                "sum by (to, reason) (rate(arcbeat_transitions_total[$__rate_interval])) * 60",
                "{{to}} ({{reason}})",
            ),
            w=12,
            unit="short",
        ),
        timeseries_panel(
            "Transitions per interval (InfluxDB history)",
            InfluxQL(
                f"""SELECT count("transition_id") FROM "transitions"
                WHERE $timeFilter AND {INFLUX_FILTER}
                GROUP BY time($__interval), "status", "reason" fill(0)"""
            ).alias("$tag_status ($tag_reason)"),
            w=12,
            datasource=INFLUXDB,
            bars=True,
            stacked=True,
            description="Every transition written to InfluxDB, by new status and reason.",
        ),
    )

    # --- detection delay -----------------------------------------------------------------
    board.row(
        "Detection delay",
        timeseries_panel(
            "Detection delay after the deadline",
            _quantile(0.5, "arcbeat_detection_delay_seconds", "A"),
            _quantile(0.95, "arcbeat_detection_delay_seconds", "B"),
            _quantile(0.99, "arcbeat_detection_delay_seconds", "C"),
            w=8,
            unit="s",
            description="changedAt - (lastHeartbeatAt + disconnect_after). The goal is at most "
            "check_interval + 1 s; the SLA is 30 minutes.",
            steps=((None, GOOD), (2, WARN), (5, BAD)),
        ),
        timeseries_panel(
            "Worst detection delay (InfluxDB history)",
            InfluxQL(
                f"""SELECT max("detection_delay") AS "max" FROM "transitions"
                WHERE $timeFilter AND "reason" = 'heartbeat_timeout' AND {INFLUX_FILTER}
                GROUP BY time($__interval) fill(none)"""
            ),
            w=8,
            unit="s",
            datasource=INFLUXDB,
            bars=True,
        ),
        timeseries_panel(
            "Delivery delay (sentAt to arrival)",
            _quantile(0.5, "arcbeat_delivery_delay_seconds", "A"),
            _quantile(0.99, "arcbeat_delivery_delay_seconds", "B"),
            prom(
                "sum(rate(arcbeat_clock_skew_total[$__rate_interval]))",
                "clock skew / s",
                ref="C",
            ),
            w=8,
            unit="s",
            description="Agent clock to broker LogAppendTime. Clock skew counts heartbeats "
            "whose sentAt is further than skew_warn from their arrival.",
        ),
    )

    # --- early warning --------------------------------------------------------------------
    board.row(
        "Early warning",
        timeseries_panel(
            "Late machines by location",
            prom("sum by (location) (arcbeat_machines_late)", "{{location}}"),
            w=8,
            description="Connected machines overdue by more than late_after (not a status: "
            "they are still Connected). A location whose late machines climb is losing its "
            "uplink before its machines cross the deadline (docs/early-warning.md).",
        ),
        timeseries_panel(
            "Delivery delay p90 by location",
            prom(
                "histogram_quantile(0.9, sum by (location, le) "
                "(rate(arcbeat_delivery_delay_seconds_bucket[$__rate_interval])))",
                "{{location}}",
            ),
            w=8,
            unit="s",
            description="Broker arrival minus sentAt, less each machine's own clock offset: "
            "skewed clocks read as no delay, a slow uplink as a growing one.",
        ),
        timeseries_panel(
            "Degraded locations",
            prom("max by (scope) (arcbeat_scope_degraded)", "{{scope}}"),
            w=8,
            description="1 between ScopeDegraded and ScopeDegradationCleared (alert "
            "ArcLocationDeliveryDegraded, a ticket).",
        ),
    )

    # --- pipeline health -----------------------------------------------------------------
    board.row(
        "Pipeline health",
        stat_panel(
            "Workers up",
            prom(f'sum(up{{job="{WORKER_JOB}"}}) or vector(0)', instant=True),
            w=6,
            steps=((None, BAD), (1, GOOD)),
        ),
        stat_panel(
            "Last event age",
            prom("time() - max(arcbeat_last_event_timestamp_seconds)", instant=True),
            w=6,
            unit="s",
            no_value="no events",
            description="Now minus the arrival time of the newest processed event. A stall "
            "shows here first (ArcPipelineStalled).",
            steps=((None, GOOD), (60, WARN), (300, BAD)),
        ),
        stat_panel(
            "Consumer lag",
            prom(
                "sum(max by (partition) (arcbeat_consumer_lag)) or vector(0)",
                instant=True,
            ),
            w=6,
            description="Messages not yet consumed, summed over partitions. While a partition "
            "lags, its machines are not declared Disconnected (docs/how-it-decides.md, Lag).",
            steps=((None, GOOD), (10000, WARN), (100000, BAD)),
        ),
        stat_panel(
            "DLQ rejects (range)",
            prom("sum(increase(arcbeat_rejects_total[$__range])) or vector(0)", instant=True),
            w=6,
            decimals=0,
            steps=((None, GOOD), (1, WARN)),
        ),
        timeseries_panel(
            "Events per second",
            prom(
                "sum by (kind) (rate(arcbeat_heartbeats_received_total[$__rate_interval]))",
                "{{kind}}",
            ),
            w=8,
            unit="ops",
            stacked=True,
        ),
        timeseries_panel(
            "Consumer lag by partition",
            prom("max by (partition) (arcbeat_consumer_lag)", "partition {{partition}}"),
            w=8,
        ),
        timeseries_panel(
            "DLQ rejects per second by reason",
            prom(
                "sum by (reason) (rate(arcbeat_rejects_total[$__rate_interval]))",
                "{{reason}}",
            ),
            w=8,
            unit="ops",
            stacked=True,
        ),
    )

    # --- scope silence -------------------------------------------------------------------
    board.row(
        "Scope silence",
        statetimeline.Panel()
        .title("Scope silent")
        .description(
            "The shared mass-silence verdict per scope (every worker exports the same value)."
        )
        .datasource(PROMETHEUS)
        .span(12)
        .height(8)
        .mappings(value_mappings({"0": ("ok", GOOD), "1": ("silent", BAD)}))
        .thresholds(thresholds((None, GOOD), (1, BAD)))
        .show_value(common_models.VisibilityMode.NEVER)
        .with_target(prom("max by (scope) (arcbeat_scope_silent)", "{{scope}}")),
        table.Panel()
        .title("Scope events (InfluxDB history)")
        .datasource(INFLUXDB)
        .span(12)
        .height(8)
        .with_target(
            InfluxQL(
                """SELECT "machines", "scope", "type" FROM "scope_events"
                WHERE $timeFilter ORDER BY time DESC LIMIT 100"""
            ).table()
        )
        .override_by_name(
            "type",
            [
                dm.DynamicConfigValue(
                    id_val="mappings",
                    value=[
                        {
                            "type": "value",
                            "options": {
                                "ScopeSilent": {"text": "ScopeSilent", "color": BAD, "index": 0},
                                "ScopeRecovered": {
                                    "text": "ScopeRecovered",
                                    "color": GOOD,
                                    "index": 1,
                                },
                                "ScopeDegraded": {
                                    "text": "ScopeDegraded",
                                    "color": WARN,
                                    "index": 2,
                                },
                                "ScopeDegradationCleared": {
                                    "text": "ScopeDegradationCleared",
                                    "color": GOOD,
                                    "index": 3,
                                },
                            },
                        }
                    ],
                ),
                dm.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"}),
            ],
        ),
    )
    model: dict[str, Any] = board.to_dict()
    return model


def _color(color: str) -> dm.DynamicConfigValue:
    return dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": color})


def _sort(display_name: str) -> common_builders.TableSortByFieldState:
    return common_builders.TableSortByFieldState().display_name(display_name).desc(True)
