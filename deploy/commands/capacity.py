"""``arcbeat capacity``: the fleet (from the workers' API) against subscription limits.

The fleet comes from one ``GET /capacity`` (each worker's machine counts per key, merged by the
worker asked), not from paging every machine through ``/machines``.

Growth history for the days-to-limit forecast comes from InfluxDB's ``capacity`` measurement;
``--record`` appends this run's counts to it, so running the command on a schedule (cron)
builds the history the forecast needs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from arcbeat.deploy.api_client import ApiError
from arcbeat.deploy.commands._worker_api import get_json, worker_url
from arcbeat.deploy.settings import Settings
from arcbeat.exporters.capacity.forecast import (
    HISTORY_QUERY,
    HISTORY_SAMPLES,
    CapacityHistory,
    history_from_influxql,
)
from arcbeat.exporters.capacity.model import CapacityLimits
from arcbeat.exporters.capacity.report import build_report_from_summary
from arcbeat.exporters.capacity.to_json import report_to_json
from arcbeat.exporters.capacity.to_text import render_table
from arcbeat.exporters.influx_points import capacity_line
from arcbeat.streams.decide.fleet_summary import FleetSummary, SummaryError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "capacity",
        help="capacity report: use, headroom, days to limit",
        description="The fleet (GET /capacity of any worker) against subscription limits: "
        "use, headroom, and days to each limit from the growth history in InfluxDB.",
    )
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.add_argument("--top", type=int, default=20, help="rows per table")
    p.add_argument("--url", help="a worker's base URL (default from settings)")
    p.add_argument(
        "--record", action="store_true", help="append this run's counts to InfluxDB history"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = Settings.load()
    try:
        summary = fetch_summary(worker_url(args))
    except (ApiError, SummaryError) as exc:
        print(f"arcbeat capacity: {exc}", file=sys.stderr)
        return 1
    history, note = load_history(settings)
    report = build_report_from_summary(
        summary,
        CapacityLimits.from_settings(settings.capacity),
        regions=settings.input.regions,
        history=history,
        now=time.time(),
    )
    if args.record:
        at_ns = int(report.generated_at // 60 * 60 * 1_000_000_000)  # aligned: idempotent
        lines = [capacity_line(u.kind, u.scope, u.used, u.limit, at_ns) for u in report.checks]
        if lines:
            _influx(settings, "", write="\n".join(lines))
    if args.json:
        print(report_to_json(report))
    else:
        print(render_table(report, top=args.top))
        if note:
            print(f"\n({note})")
    return 0


def fetch_summary(base: str) -> FleetSummary:
    """The whole fleet's capacity counts, from any worker."""
    url = f"{base}/capacity"
    return FleetSummary.from_dict(get_json(url), source=url)


def load_history(settings: Settings) -> tuple[CapacityHistory, str | None]:
    """The growth history in InfluxDB, and a note when there is none."""
    history = CapacityHistory(max_samples=HISTORY_SAMPLES)
    try:
        history_from_influxql(_influx(settings, HISTORY_QUERY), history)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return history, f"no growth history: InfluxDB at {settings.influx.url}: {exc}"
    return history, None


def _influx(settings: Settings, q: str, *, write: str | None = None) -> Any:
    db = urllib.parse.quote(settings.influx.db)
    if write is not None:
        req = urllib.request.Request(
            f"{settings.influx.url}/write?db={db}&precision=ns",
            data=write.encode(),
            method="POST",
        )
    else:
        req = urllib.request.Request(
            f"{settings.influx.url}/query?db={db}&epoch=s&q={urllib.parse.quote(q)}"
        )
    with urllib.request.urlopen(req, timeout=15) as r:
        body = r.read()
        return json.loads(body) if body else None
