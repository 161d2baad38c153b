"""Every query of a dashboard JSON, and Grafana variable substitution, so tests can run the
dashboards' own queries against a real Prometheus and InfluxDB.

:func:`panel_queries` lists panel targets; :func:`variable_queries` lists template-variable
queries (``label_values`` turned into the equivalent PromQL); :func:`substitute_variables`
replaces ``$var`` / ``${var}`` / ``[[var]]`` and Grafana's built-ins the way Grafana would
for a given choice of values.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Datasource = Literal["prometheus", "influxdb"]
# vector: PromQL instant query; matrix: PromQL range query; series: InfluxQL time series
# (GROUP BY time); table: InfluxQL rows (raw points, SHOW ..., single aggregates).
Shape = Literal["vector", "matrix", "series", "table"]


@dataclass(frozen=True, slots=True)
class PanelQuery:
    dashboard_uid: str
    panel_id: int  # 0 for template variables
    panel_title: str
    ref_id: str
    datasource: Datasource
    query: str  # as in the dashboard, with Grafana variables
    shape: Shape
    labels: tuple[str, ...]  # labels / tags the panel splits series or rows by

    @property
    def where(self) -> str:
        """For messages: which dashboard, panel and target."""
        return f"{self.dashboard_uid} / {self.panel_title!r} (panel {self.panel_id}, {self.ref_id})"


# Grafana's built-in variables, with values for a one-hour range and a one-minute interval.
BUILTIN_VALUES: Mapping[str, str] = {
    "__interval": "1m",
    "__interval_ms": "60000",
    "__rate_interval": "1m",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
    "timeFilter": "time > now() - 1h",
    "__timeFilter": "time > now() - 1h",
}

_VARIABLE = re.compile(r"\$\{(\w+)(?::[\w]+)?\}|\[\[(\w+)\]\]|\$(\w+)")
_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_BY_CLAUSE = re.compile(r"\bby\s*\(([^)]*)\)")
_GROUP_BY = re.compile(r"\bGROUP BY\b", re.I)
_GROUP_BY_END = re.compile(r"\s(?:fill\(|ORDER\s|LIMIT\s|SLIMIT\s|tz\()", re.I)
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.+),\s*)?(\w+)\s*\)\s*$", re.S)


def substitute_variables(query: str, values: Mapping[str, str] | None = None) -> str:
    """``query`` with every variable replaced; ``values`` override :data:`BUILTIN_VALUES`.

    Values are inserted as they are: give ``.*`` for "All" (the dashboards' regex all value)
    or an already regex-escaped value where the query matches with ``=~``.
    """
    merged = {**BUILTIN_VALUES, **(values or {})}

    def replace(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in merged:
            raise ValueError(
                f"query uses variable ${name} but no value was given for it; pass "
                f"values={{{name!r}: ...}} (given: {', '.join(sorted(values or {})) or 'none'}). "
                f"Query: {query}"
            )
        return merged[name]

    return _VARIABLE.sub(replace, query)


def variable_names(query: str) -> set[str]:
    """Names of the variables a query uses (built-ins included)."""
    return {m.group(1) or m.group(2) or m.group(3) for m in _VARIABLE.finditer(query)}


def default_variable_values(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """The "All" value of every multi-value variable; single-value ones (e.g. the machine
    of the machine dashboard) are left for the caller to choose."""
    out: dict[str, str] = {}
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("includeAll"):
            out[v["name"]] = v.get("allValue") or ".*"
    return out


def _panels(dashboard: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])  # a collapsed row keeps its panels inside
        else:
            yield panel


def _kind(ds: Any, where: str) -> Datasource:
    kind = ds.get("type") if isinstance(ds, Mapping) else None
    if kind not in ("prometheus", "influxdb"):
        raise ValueError(f"{where}: datasource {ds!r} is neither prometheus nor influxdb")
    return "prometheus" if kind == "prometheus" else "influxdb"


def _prom_labels(expr: str, legend: str | None) -> tuple[str, ...]:
    if legend:
        return tuple(dict.fromkeys(_LEGEND_LABEL.findall(legend)))
    m = _BY_CLAUSE.search(expr)
    if not m:
        return ()
    return tuple(label.strip() for label in m.group(1).split(",") if label.strip())


def _influx_labels(query: str) -> tuple[str, ...]:
    parts = _GROUP_BY.split(query)
    if len(parts) < 2:
        return ()
    outer = _GROUP_BY_END.split(parts[-1])[0]  # the outer query of a subquery groups last
    tags = [t.strip().strip('"') for t in outer.split(",")]
    return tuple(t for t in tags if t and not t.lower().startswith("time("))


def panel_queries(dashboard: Mapping[str, Any]) -> list[PanelQuery]:
    """Every target of every panel, in dashboard order."""
    uid = str(dashboard.get("uid", "?"))
    out: list[PanelQuery] = []
    for panel in _panels(dashboard):
        title = str(panel.get("title", ""))
        pid = int(panel.get("id", 0))
        for target in panel.get("targets", []):
            ref = str(target.get("refId", ""))
            where = f"{uid} / {title!r} ({ref})"
            kind = _kind(target.get("datasource") or panel.get("datasource"), where)
            if kind == "prometheus":
                expr = str(target.get("expr", ""))
                shape: Shape = "vector" if target.get("instant") else "matrix"
                labels = _prom_labels(expr, target.get("legendFormat"))
                out.append(PanelQuery(uid, pid, title, ref, kind, expr, shape, labels))
            else:
                query = str(target.get("query", ""))
                shape = "table" if target.get("resultFormat") == "table" else "series"
                labels = _influx_labels(query)
                out.append(PanelQuery(uid, pid, title, ref, kind, query, shape, labels))
    return out


def variable_queries(dashboard: Mapping[str, Any]) -> list[PanelQuery]:
    """The query of every template variable, runnable as is against the datasource.

    ``label_values(<selector>, <label>)`` is Grafana's, not PromQL: it becomes
    ``count by (<label>) (<selector>)``, whose result labels are the variable's values.
    """
    uid = str(dashboard.get("uid", "?"))
    out: list[PanelQuery] = []
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        name = str(v["name"])
        title = f"variable {name}"
        raw = v.get("query")
        text = str(raw.get("query", "")) if isinstance(raw, Mapping) else str(raw)
        kind = _kind(v.get("datasource"), f"{uid} / {title}")
        if kind == "prometheus":
            m = _LABEL_VALUES.match(text)
            if not m:
                raise ValueError(f"{uid} / {title}: expected label_values(...), got {text!r}")
            selector = m.group(1) or f'{{{m.group(2)}!=""}}'
            promql = f"count by ({m.group(2)}) ({selector})"
            out.append(PanelQuery(uid, 0, title, name, kind, promql, "vector", (m.group(2),)))
        else:
            out.append(PanelQuery(uid, 0, title, name, kind, text, "table", ()))
    return out
