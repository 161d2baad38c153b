"""Checks of the answers the dashboards' queries get from Prometheus and InfluxDB."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from arcbeat.dashboards.queries import PanelQuery


@dataclass(frozen=True)
class PanelMeta:
    """What the panel JSON says about a target beyond :class:`PanelQuery`."""

    panel_type: str
    legend_labels: tuple[str, ...]
    table: bool  # the target's rows are shown as a table (labels become columns)


def panel_meta(dashboard: Mapping[str, Any]) -> dict[tuple[int, str], PanelMeta]:
    out: dict[tuple[int, str], PanelMeta] = {}
    panels: list[Mapping[str, Any]] = []
    for p in dashboard.get("panels", []):
        panels.extend(p.get("panels", []) if p.get("type") == "row" else [p])
    for p in panels:
        for t in p.get("targets", []):
            legend = str(t.get("legendFormat") or "")
            labels = tuple(dict.fromkeys(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend)))
            table = t.get("format") == "table" or p.get("type") == "table"
            out[(int(p.get("id", 0)), str(t.get("refId", "")))] = PanelMeta(
                str(p.get("type", "")), labels, table
            )
    return out


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


EMPTY = "empty result"
NOT_OURS = "no series of this run"


def only_absence(problems: Sequence[str]) -> bool:
    """The problems only say that the answer holds no data of this run."""
    return bool(problems) and all(p.startswith((EMPTY, NOT_OURS)) for p in problems)


def check_prometheus_result(
    pq: PanelQuery, meta: PanelMeta, data: Mapping[str, Any], ours: Mapping[str, set[str]]
) -> list[str]:
    """Problems with a Prometheus answer for the panel (empty list: fine).

    ``ours`` maps a label to the values this run produced (location, subscription, ...): when
    the answer is split by such a label, this run's values must be among the answer's.
    """
    problems: list[str] = []
    want = "vector" if pq.shape == "vector" else "matrix"
    if data.get("resultType") != want:
        return [f"expected a {want}, got {data.get('resultType')}"]
    result: list[dict[str, Any]] = data["result"]
    if not result:
        return [EMPTY]
    if pq.shape == "vector":
        finite = [s for s in result if _finite(s["value"][1])]
    else:
        finite = [s for s in result if any(_finite(v) for _, v in s["values"])]
    if not finite:
        problems.append(f"no finite value in {len(result)} series")
    if meta.panel_type == "stat" and len(result) != 1:
        problems.append(f"a stat panel needs one series, got {len(result)}")
    required = meta.legend_labels or (pq.labels if meta.table else ())
    for label in required:
        missing = [s["metric"] for s in result if label not in s["metric"]]
        if missing:
            problems.append(f"series without label {label!r}: {missing[:2]}")
        elif label in ours and not (
            {str(s["metric"][label]).lower() for s in result} & {v.lower() for v in ours[label]}
        ):
            problems.append(f"{NOT_OURS} ({label} values {sorted(ours[label])[:3]})")
    return problems


def check_influx_result(pq: PanelQuery, series: list[dict[str, Any]]) -> list[str]:
    """Problems with an InfluxQL answer for the panel (empty list: fine)."""
    if not series:
        return [EMPTY]
    problems: list[str] = []
    rows = [v for s in series for v in s.get("values", [])]
    if not rows:
        problems.append(f"{len(series)} series without rows")
    elif not any(any(x is not None for x in row[1:]) for row in rows):
        problems.append("every value is null")
    if pq.shape == "series":
        for label in pq.labels:
            missing = [s.get("tags") for s in series if label not in (s.get("tags") or {})]
            if missing:
                problems.append(f"series not grouped by tag {label!r}: {missing[:2]}")
    return problems
