"""Percentile summaries of latency samples. Pure."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of an ascending list; NaN when empty."""
    if not sorted_values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile: q must be in [0, 100], got {q}")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summary(values: Iterable[float], digits: int = 3) -> dict[str, Any]:
    """``{"count", "p50", "p99", "max", "mean"}``; the figures are None without samples."""
    v = sorted(values)
    if not v:
        return {"count": 0, "p50": None, "p99": None, "max": None, "mean": None}
    return {
        "count": len(v),
        "p50": round(percentile(v, 50), digits),
        "p99": round(percentile(v, 99), digits),
        "max": round(v[-1], digits),
        "mean": round(sum(v) / len(v), digits),
    }
