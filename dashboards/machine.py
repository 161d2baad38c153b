"""Machine detail: one machine's status timeline, availability per window, transitions and
last heartbeat, mostly from the InfluxDB history. Availability leaves planned
downtime (maintenance windows) out; the planned seconds are shown beside it, and the
maintenance windows are annotations on the time panels.

The machine is picked from InfluxDB tag values, narrowed by subscription, resource group and
location (also InfluxDB tags): Prometheus only has per-machine series for Disconnected
machines, and its subscription label is capped, so it cannot list a whole fleet.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import stat, statetimeline, table
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dm

from arcbeat.dashboards.common import (
    BAD,
    GOOD,
    INFLUXDB,
    WARN,
    Board,
    InfluxAnnotation,
    InfluxAnnotationQuery,
    InfluxQL,
    influx_variable,
    organize,
    prom,
    reduce_last,
    stat_panel,
    status_mappings,
    thresholds,
    timeseries_panel,
)

UID = "arcbeat-machine"
MACHINE = "\"resource_id\" = '$resource_id'"

# Every maintenance window that overlaps the time range (it starts before the range ends and
# ends after it starts), from the history's maintenance measurement. Kept simple: all windows,
# not only those whose selector covers this machine; the tags name the window and its author.
MAINTENANCE_ANNOTATION = InfluxAnnotationQuery(
    "Maintenance windows",
    """SELECT "reason", "window_id", "created_by", "end" * 1000 AS "time_end"
    FROM "maintenance" WHERE time <= ${__to}ms AND "end" >= ${__from:date:seconds}""",
    text_column="reason",
    tags_columns=("window_id", "created_by"),
    time_end_column="maintenance.time_end",
    icon_color="blue",
)


def build() -> dict[str, Any]:
    board = Board(
        UID,
        "arcbeat / Machine detail",
        "One machine: status timeline, availability per window (planned downtime excluded, "
        "planned seconds beside it), transitions, last heartbeat. The blue regions are "
        "maintenance windows: all windows in range, not only those covering this machine "
        "(hover for the reason, the window id and who created it).",
    )
    board.builder = board.builder.time("now-7d", "now").refresh("1m")
    board.annotation(InfluxAnnotation(MAINTENANCE_ANNOTATION))
    board.variable(
        influx_variable(
            "subscription",
            "Subscription",
            'SHOW TAG VALUES FROM "transitions" WITH KEY = "subscription_id"',
        )
    ).variable(
        influx_variable(
            "resource_group",
            "Resource group",
            """SHOW TAG VALUES FROM "transitions" WITH KEY = "resource_group"
            WHERE "subscription_id" =~ /^$subscription$/""",
        )
    ).variable(
        influx_variable(
            "location", "Location", 'SHOW TAG VALUES FROM "transitions" WITH KEY = "location"'
        )
    ).variable(
        influx_variable(
            "resource_id",
            "Machine",
            """SHOW TAG VALUES FROM "transitions" WITH KEY = "resource_id"
            WHERE "subscription_id" =~ /^$subscription$/
            AND "resource_group" =~ /^$resource_group$/ AND "location" =~ /^$location$/""",
            include_all=False,
        )
    )

    board.row(
        "Now",
        stat.Panel()
        .title("Status (last transition)")
        .datasource(INFLUXDB)
        .span(6)
        .height(4)
        .with_target(
            InfluxQL(
                f"""SELECT last("transition_id") AS "transition", "status"
                FROM "transitions" WHERE {MACHINE}"""
            ).table()
        )
        .reduce_options(reduce_last().fields("/^status$/"))
        .mappings(status_mappings())
        .color_mode(common_models.BigValueColorMode.BACKGROUND)
        .graph_mode(common_models.BigValueGraphMode.NONE)
        .no_value("unknown machine"),
        stat_panel(
            "Offline for",
            prom('time() - max(arcbeat_machine_offline{resource_id="$resource_id"})', instant=True),
            w=4,
            unit="s",
            no_value="not offline",
            description="From the live per-machine series, which exist only while the machine "
            "is Disconnected (also inside a maintenance window: status stays the truth).",
            steps=((None, WARN), (3600, BAD)),
        ),
        stat_panel(
            "Last heartbeat (at last transition)",
            InfluxQL(
                f"""SELECT last("last_heartbeat_at") * 1000 AS "last_heartbeat"
                FROM "transitions" WHERE {MACHINE}"""
            ),
            w=6,
            unit="dateTimeAsIso",
            no_value="-",
            datasource=INFLUXDB,
            steps=((None, "text"),),
            description="Arrival time of the last heartbeat as of the machine's last "
            "transition. While Connected, heartbeats after that are not in the history; "
            "`arcbeat machines <resourceId>` has the live value.",
        ),
        stat_panel(
            "Availability (range)",
            InfluxQL(
                f"""SELECT sum("received") / sum("expected") AS "availability"
                FROM "availability" WHERE {MACHINE} AND $timeFilter"""
            ),
            w=4,
            unit="percentunit",
            decimals=2,
            no_value="-",
            datasource=INFLUXDB,
            description="Heartbeats received / expected over the closed windows in range. "
            "Time inside maintenance windows is planned, not downtime: it counts in neither "
            "(see Planned downtime).",
            steps=((None, BAD), (0.9, WARN), (0.99, GOOD)),
        ),
        stat_panel(
            "Planned downtime (range)",
            InfluxQL(
                f"""SELECT sum("planned_seconds") AS "planned_seconds"
                FROM "availability" WHERE {MACHINE} AND $timeFilter"""
            ),
            w=4,
            unit="s",
            no_value="0",
            datasource=INFLUXDB,
            description="Time of the closed windows in range that maintenance windows covered; "
            "left out of the availability beside it.",
            steps=((None, "blue"),),
        ),
    )

    board.row(
        "History",
        statetimeline.Panel()
        .title("Status timeline")
        .datasource(INFLUXDB)
        .span(24)
        .height(5)
        .with_target(
            InfluxQL(
                f"""SELECT "transition_id", "status" FROM "transitions"
                WHERE {MACHINE} AND $timeFilter"""
            ).table()
        )
        .with_transformation(organize(exclude=["transition_id"]))
        .mappings(status_mappings())
        .show_value(common_models.VisibilityMode.AUTO)
        .merge_values(True),
        timeseries_panel(
            "Availability per window",
            InfluxQL(
                f"""SELECT mean("availability") AS "availability" FROM "availability"
                WHERE {MACHINE} AND $timeFilter GROUP BY time($__interval) fill(none)"""
            ),
            w=8,
            unit="percentunit",
            datasource=INFLUXDB,
            bars=True,
            steps=((None, BAD), (0.9, WARN), (0.99, GOOD)),
            description="Planned downtime excluded; a window entirely inside maintenance has "
            "no availability (nothing was expected).",
        )
        .min(0)
        .max(1),
        timeseries_panel(
            "Heartbeats received vs expected per window",
            InfluxQL(
                f"""SELECT sum("received") AS "received", sum("expected") AS "expected"
                FROM "availability" WHERE {MACHINE} AND $timeFilter
                GROUP BY time($__interval) fill(none)"""
            ),
            w=8,
            datasource=INFLUXDB,
            description="Expected leaves out the time inside maintenance windows.",
        ),
        timeseries_panel(
            "Planned downtime per window",
            InfluxQL(
                f"""SELECT sum("planned_seconds") AS "planned_seconds" FROM "availability"
                WHERE {MACHINE} AND $timeFilter GROUP BY time($__interval) fill(none)"""
            ),
            w=8,
            unit="s",
            datasource=INFLUXDB,
            bars=True,
            description="Seconds of each window that maintenance windows covered.",
        ),
    )

    board.row(
        "Transitions",
        table.Panel()
        .title("Transitions of this machine")
        .datasource(INFLUXDB)
        .span(24)
        .height(9)
        .with_target(
            InfluxQL(
                f"""SELECT "previous_status", "status", "reason", "detection_delay",
                "flapping", "mass_outage", "machine_name", "transition_id"
                FROM "transitions" WHERE {MACHINE} AND $timeFilter
                ORDER BY time DESC LIMIT 200"""
            ).table()
        )
        .override_by_name("detection_delay", [dm.DynamicConfigValue(id_val="unit", value="s")])
        .override_by_name(
            "status",
            [
                dm.DynamicConfigValue(id_val="mappings", value=_plain(status_mappings())),
                dm.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"}),
            ],
        )
        .thresholds(thresholds((None, GOOD))),
    )
    model: dict[str, Any] = board.to_dict()
    return model


def _plain(mappings: list[dm.ValueMapping]) -> list[dict[str, object]]:
    """Value mappings as JSON objects, for use inside an override."""
    return [m.to_json() for m in mappings]
