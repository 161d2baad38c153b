"""Days to the limit, fitted to the growth history, and that history (in memory, pre-filled
from InfluxDB's ``capacity`` measurement after a restart)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Final

from arcbeat.exporters.capacity.model import CapacityReport


def days_to_limit(
    history: Sequence[tuple[float, int | float]], limit: int | float, now: float | None = None
) -> float | None:
    """Days until ``limit`` is reached, by least-squares linear growth over ``history``.

    ``history`` is ``(unix seconds, used)`` samples in any order. Returns None when there is
    no limit, fewer than two distinct times, or the fitted trend is not growing; 0.0 when
    the trend is already at or past the limit. Counted from ``now`` (default: last sample).
    """
    if limit <= 0 or len(history) < 2:
        return None
    n = len(history)
    mean_t = math.fsum(t for t, _ in history) / n
    mean_y = math.fsum(y for _, y in history) / n
    # Centre the times: unix seconds squared would lose precision in the sums.
    sxx = math.fsum((t - mean_t) ** 2 for t, _ in history)
    if sxx <= 0:
        return None
    sxy = math.fsum((t - mean_t) * (y - mean_y) for t, y in history)
    slope = sxy / sxx  # per second
    # Relative tolerance: rounding in the sums must not turn a flat series into "growing".
    span = max(t for t, _ in history) - min(t for t, _ in history)
    scale = max(1.0, max(abs(y) for _, y in history))
    if slope * span <= 1e-9 * scale:
        return None
    start = max(t for t, _ in history) if now is None else now
    fitted_now = mean_y + slope * (start - mean_t)
    remaining = (limit - fitted_now) / slope
    return max(0.0, remaining / 86400.0)


class CapacityHistory:
    """Bounded in-memory growth history per (kind, scope), for :func:`days_to_limit`.

    Pre-fill it from the InfluxDB ``capacity`` measurement after a restart with :meth:`add`.
    """

    def __init__(self, max_samples: int = 1000) -> None:
        if max_samples < 2:
            raise ValueError(f"max_samples must be >= 2 to fit a trend, got {max_samples}")
        self._max = max_samples
        self._series: dict[tuple[str, str], deque[tuple[float, int]]] = {}

    def add(self, kind: str, scope: str, at: float, used: int) -> None:
        series = self._series.setdefault((kind, scope), deque(maxlen=self._max))
        if series and at <= series[-1][0]:
            if at == series[-1][0]:
                series[-1] = (at, used)  # same aligned time: the newer count wins
            return  # older than what we have: ignore, history only moves forward
        series.append((at, used))

    def record(self, report: CapacityReport, *, at: float | None = None) -> None:
        """Append the report's counts at ``at`` (default: when it was generated).

        A long-running recorder passes an aligned ``at`` (e.g. the hour): reports within one
        step then replace each other, so memory holds one sample per step per scope.
        """
        when = report.generated_at if at is None else at
        for use in report.checks:
            self.add(use.kind, use.scope, when, use.used)

    def series(self, kind: str, scope: str) -> Sequence[tuple[float, int]]:
        return tuple(self._series.get((kind, scope), ()))

    def __len__(self) -> int:
        return len(self._series)


# Growth history is kept per hour: a long-running recorder and a restart's pre-fill from
# InfluxDB hold one sample per hour per scope, at most HISTORY_SAMPLES (about six weeks).
HISTORY_STEP: Final = 3600.0
HISTORY_SAMPLES: Final = 1000

# Pre-fill query (InfluxQL, epoch=s): the last count of each hour, per kind and scope.
HISTORY_QUERY: Final = (
    'SELECT last("used") AS "used" FROM "capacity" '
    f"WHERE time > now() - {int(HISTORY_SAMPLES * HISTORY_STEP // 3600)}h "
    f'GROUP BY time({int(HISTORY_STEP)}s), "kind", "scope" fill(none)'
)


def history_step(at: float) -> float:
    """``at`` aligned down to the history step (pass to :meth:`CapacityHistory.record`)."""
    return at // HISTORY_STEP * HISTORY_STEP


def history_from_influxql(body: Mapping[str, Any], history: CapacityHistory) -> int:
    """Add the rows of a :data:`HISTORY_QUERY` answer (``/query?epoch=s`` JSON) to
    ``history``; returns the samples added. Raises ValueError naming what is malformed."""
    added = 0
    results = body.get("results")
    if not isinstance(results, list):
        raise ValueError(f"InfluxDB answer has no 'results' list: {str(body)[:200]}")
    for result in results:
        error = result.get("error")
        if error:
            if "database not found" in str(error):
                continue  # nothing written yet: an empty history
            raise ValueError(f"InfluxDB refused the capacity history query: {error}")
        for series in result.get("series") or []:
            tags = series.get("tags") or {}
            kind, scope = str(tags.get("kind", "")), str(tags.get("scope", ""))
            columns = series.get("columns") or ["time", "used"]
            t_col, u_col = columns.index("time"), columns.index("used")
            for row in series.get("values") or []:
                if row[u_col] is not None:
                    history.add(kind, scope, float(row[t_col]), int(row[u_col]))
                    added += 1
    return added
