"""Shared pieces of the dashboard builders: datasource refs, an InfluxQL query type,
variables, thresholds and a board that numbers its panels.

grafana-foundation-sdk has no InfluxDB query builder, so :class:`InfluxQL` is a minimal one
(raw InfluxQL, ``rawQuery: true``), which 1.x, 2.x (DBRP) and 3.x all answer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal, Self

from grafana_foundation_sdk.builders import bargauge, prometheus, stat, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as prom_models

# Fixed uids: deploy/grafana/provisioning/datasources/arcbeat.yaml provisions these, and
# `arcbeat dashboards push` creates them with the same uids.
PROMETHEUS_UID = "arcbeat-prometheus"
INFLUXDB_UID = "arcbeat-influxdb"
PROMETHEUS = dm.DataSourceRef(type_val="prometheus", uid=PROMETHEUS_UID)
INFLUXDB = dm.DataSourceRef(type_val="influxdb", uid=INFLUXDB_UID)

# The worker job of the Prometheus scrape config (deploy/prometheus/prometheus.yml).
WORKER_JOB = "arcbeat"
# Regex-valued "All": custom all values reach the query unescaped in Grafana, so `.*`
# works both in PromQL `=~"$var"` and in InfluxQL `=~ /^$var$/`.
ALL = ".*"

ResultFormat = Literal["time_series", "table"]


class InfluxQLQuery(cogvariants.Dataquery):
    """A raw InfluxQL target of Grafana's InfluxDB datasource."""

    def __init__(self, query: str, ref_id: str, result_format: ResultFormat) -> None:
        self.query = query
        self.ref_id = ref_id
        self.result_format = result_format
        self.alias: str | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "datasource": {"type": INFLUXDB.type_val, "uid": INFLUXDB.uid},
            "query": self.query,
            "rawQuery": True,
            "refId": self.ref_id,
            "resultFormat": self.result_format,
        }
        if self.alias is not None:
            out["alias"] = self.alias
        return out


class InfluxQL(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, query: str) -> None:
        self._internal = InfluxQLQuery(" ".join(query.split()), "A", "time_series")

    def build(self) -> cogvariants.Dataquery:
        return self._internal

    def ref_id(self, ref_id: str) -> Self:
        self._internal.ref_id = ref_id
        return self

    def table(self) -> Self:
        self._internal.result_format = "table"
        return self

    def alias(self, alias: str) -> Self:
        """Series name, e.g. ``$tag_scope`` or ``$col``."""
        self._internal.alias = alias
        return self


class InfluxAnnotationQuery(dm.AnnotationQuery):
    """A raw InfluxQL annotation query of Grafana's InfluxDB datasource.

    The SDK's annotation target only has the fields of Grafana's own annotations, so the
    InfluxDB target (query and column mapping) is written here. Grafana's InfluxQL backend
    names each column ``<measurement>.<column>``: text and tags columns match by substring,
    the end time column exactly, so ``time_end_column`` is given with the measurement.
    """

    def __init__(
        self,
        name: str,
        query: str,
        *,
        text_column: str,
        tags_columns: Sequence[str],
        time_end_column: str,
        icon_color: str,
    ) -> None:
        super().__init__(name=name, datasource=INFLUXDB, enable=True, icon_color=icon_color)
        self.influx_target: dict[str, object] = {
            "query": " ".join(query.split()),
            "rawQuery": True,
            "fromAnnotations": True,
            "refId": "Anno",
            "textColumn": text_column,
            "tagsColumn": ",".join(tags_columns),
            "timeEndColumn": time_end_column,
        }

    def to_json(self) -> dict[str, object]:
        out = super().to_json()
        out["target"] = self.influx_target
        return out


class InfluxAnnotation(cogbuilder.Builder[dm.AnnotationQuery]):
    def __init__(self, internal: InfluxAnnotationQuery) -> None:
        self._internal = internal

    def build(self) -> dm.AnnotationQuery:
        return self._internal


def prom(
    expr: str,
    legend: str | None = None,
    *,
    ref: str = "A",
    instant: bool = False,
    table: bool = False,
) -> prometheus.Dataquery:
    """A PromQL target; ``table`` implies an instant query in table format."""
    q = prometheus.Dataquery().expr(" ".join(expr.split())).ref_id(ref)
    q = q.datasource(PROMETHEUS)
    if table:
        q = q.instant().format(prom_models.PromQueryFormat.TABLE)
    elif instant:
        q = q.instant()
    else:
        q = q.range()
    if legend is not None:
        q = q.legend_format(legend)
    return q


def prom_variable(
    name: str, label: str, query: str, *, include_all: bool = True
) -> db.QueryVariable:
    """A Prometheus ``label_values(...)`` variable, multi-select with a regex ``All``."""
    v = (
        db.QueryVariable(name)
        .label(label)
        .datasource(PROMETHEUS)
        .query(query)
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
    )
    if include_all:
        v = v.multi(True).include_all(True).all_value(ALL).current(_all_option())
    return v


def influx_variable(
    name: str, label: str, query: str, *, include_all: bool = True
) -> db.QueryVariable:
    """An InfluxDB ``SHOW TAG VALUES`` variable."""
    v = (
        db.QueryVariable(name)
        .label(label)
        .datasource(INFLUXDB)
        .query(" ".join(query.split()))
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
    )
    if include_all:
        v = v.multi(True).include_all(True).all_value(ALL).current(_all_option())
    return v


def _all_option() -> dm.VariableOption:
    return dm.VariableOption(selected=True, text="All", value="$__all")


def thresholds(*steps: tuple[float | None, str]) -> db.ThresholdsConfig:
    """Absolute thresholds; the first step's value is None (the base colour)."""
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=v, color=c) for v, c in steps])
    )


GOOD = "green"
WARN = "orange"
BAD = "red"

# Colours of the statuses (Connected, Disconnected, Expired), used by every status panel.
STATUS_COLORS = {
    "Connected": GOOD,
    "Disconnected": BAD,
    "Expired": "purple",
    "Deleted": "text",
}


def status_mappings() -> list[dm.ValueMapping]:
    return [
        dm.ValueMap(
            options={
                status: dm.ValueMappingResult(text=status, color=color, index=i)
                for i, (status, color) in enumerate(STATUS_COLORS.items())
            }
        )
    ]


def value_mappings(mapping: dict[str, tuple[str, str]]) -> list[dm.ValueMapping]:
    """Value -> (text, colour)."""
    return [
        dm.ValueMap(
            options={
                value: dm.ValueMappingResult(text=text, color=color, index=i)
                for i, (value, (text, color)) in enumerate(mapping.items())
            }
        )
    ]


def reduce_last() -> common_builders.ReduceDataOptions:
    return common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def organize(
    exclude: Sequence[str] = (), rename: dict[str, str] | None = None
) -> dm.DataTransformerConfig:
    """The ``organize`` transformation: hide and rename table columns."""
    return dm.DataTransformerConfig(
        id_val="organize",
        options={
            "excludeByName": {name: True for name in exclude},
            "renameByName": dict(rename or {}),
            "indexByName": {},
        },
    )


def merge() -> dm.DataTransformerConfig:
    """Join several instant table queries on their labels into one table."""
    return dm.DataTransformerConfig(id_val="merge", options={})


class Board:
    """A dashboard builder that numbers panels in order and checks each row fills the grid."""

    def __init__(self, uid: str, title: str, description: str) -> None:
        self.uid = uid
        self.builder = (
            db.Dashboard(title)
            .uid(uid)
            .description(description)
            .tags(["arcbeat"])
            .editable()
            .tooltip(dm.DashboardCursorSync.CROSSHAIR)
            .timezone("utc")
        )
        self._next_id = 1

    def annotation(self, annotation: cogbuilder.Builder[dm.AnnotationQuery]) -> Self:
        self.builder = self.builder.annotation(annotation)
        return self

    def variable(self, variable: cogbuilder.Builder[dm.VariableModel]) -> Self:
        self.builder = self.builder.with_variable(variable)
        return self

    def row(self, title: str, *panels: cogbuilder.Builder[dm.Panel]) -> Self:
        """A row followed by panels whose widths add up to whole grid lines (24 columns)."""
        width = 0
        for p in panels:
            gp = p.build().grid_pos
            if gp is None or gp.w <= 0 or gp.h <= 0:
                raise ValueError(f"{self.uid}/{title}: every panel needs .span() and .height()")
            width += gp.w
        if width % 24:
            raise ValueError(
                f"{self.uid}/{title}: panel widths add up to {width}, not a multiple of 24; "
                "the SDK's auto-layout would overflow the grid"
            )
        self.builder = self.builder.with_row(db.Row(title).id(self._take_id()))
        for p in panels:
            built = p.build()
            built.id_val = self._take_id()
            self.builder = self.builder.with_panel(p)
        return self

    def _take_id(self) -> int:
        n = self._next_id
        self._next_id += 1
        return n

    def to_dict(self) -> dict[str, Any]:
        """The dashboard JSON model, as Grafana stores it."""
        encoded = JSONEncoder(sort_keys=True).encode(self.builder.build())
        data: dict[str, Any] = json.loads(encoded)
        return data


Target = cogbuilder.Builder[cogvariants.Dataquery]


def stat_panel(
    title: str,
    *targets: Target,
    w: int,
    h: int = 4,
    description: str = "",
    unit: str = "none",
    steps: Sequence[tuple[float | None, str]] = ((None, GOOD),),
    no_value: str = "0",
    datasource: dm.DataSourceRef = PROMETHEUS,
    decimals: int | None = None,
) -> stat.Panel:
    """A big single number coloured by ``steps`` (the last non-null value)."""
    p = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(datasource)
        .span(w)
        .height(h)
        .unit(unit)
        .no_value(no_value)
        .thresholds(thresholds(*steps))
        .color_mode(common_models.BigValueColorMode.VALUE)
        .graph_mode(common_models.BigValueGraphMode.NONE)
        .reduce_options(reduce_last())
        .targets(list(targets))
    )
    if decimals is not None:
        p = p.decimals(decimals)
    return p


def timeseries_panel(
    title: str,
    *targets: Target,
    w: int,
    h: int = 8,
    description: str = "",
    unit: str = "short",
    datasource: dm.DataSourceRef = PROMETHEUS,
    bars: bool = False,
    stacked: bool = False,
    steps: Sequence[tuple[float | None, str]] | None = None,
) -> timeseries.Panel:
    p = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(datasource)
        .span(w)
        .height(h)
        .unit(unit)
        .fill_opacity(25 if bars or stacked else 10)
        .targets(list(targets))
        .legend(
            common_builders.VizLegendOptions()
            .show_legend(True)
            .display_mode(common_models.LegendDisplayMode.LIST)
            .placement(common_models.LegendPlacement.BOTTOM)
        )
    )
    if bars:
        p = p.draw_style(common_models.GraphDrawStyle.BARS)
    if stacked:
        p = p.stacking(common_builders.StackingConfig().mode(common_models.StackingMode.NORMAL))
    if steps is not None:
        # Dashed lines at the thresholds, e.g. the 80 % / 95 % capacity alerts.
        p = p.thresholds(thresholds(*steps)).thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common_models.GraphThresholdsStyleMode.DASHED
            )
        )
    return p


def bargauge_panel(
    title: str,
    *targets: Target,
    w: int,
    h: int = 8,
    description: str = "",
    unit: str = "short",
    steps: Sequence[tuple[float | None, str]] = ((None, "blue"),),
    max_value: float | None = None,
) -> bargauge.Panel:
    p = (
        bargauge.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .span(w)
        .height(h)
        .unit(unit)
        .min(0)
        .thresholds(thresholds(*steps))
        .display_mode(common_models.BarGaugeDisplayMode.GRADIENT)
        .orientation(common_models.VizOrientation.HORIZONTAL)
        .reduce_options(reduce_last())
        .targets(list(targets))
    )
    if max_value is not None:
        p = p.max(max_value)
    return p
