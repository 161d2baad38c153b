"""Percentile summaries of latency samples. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from arcbeat.deploy.demo_report import percentile

__all__ = ["percentile", "summary"]


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
