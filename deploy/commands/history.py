"""``arcbeat history``: the history exporter, Kafka to InfluxDB."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from arcbeat.deploy.settings import Settings
from arcbeat.exporters.history.exporter import HistoryError, HistoryExporter
from arcbeat.exporters.sinks import make_sink
from arcbeat.streams.settings import SettingsError

# option -> setting it overrides
OVERRIDES = (
    ("influx_url", "influx_url"),
    ("influx_api", "influx_api"),
    ("influx_db", "influx_db"),
    ("port", "history_port"),
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "history",
        help="export status and fleet history from Kafka to InfluxDB",
        description=(
            "Consume <prefix>.status and <prefix>.fleet and write InfluxDB points "
            "(measurements transitions, scope_events, fleet, availability, capacity), and "
            "the maintenance windows of <prefix>.maintenance (measurement maintenance). "
            "Offsets are committed only after InfluxDB accepted the points, so an InfluxDB "
            "outage or a kill loses nothing. Every ARCBEAT_CAPACITY_INTERVAL (default 60s, "
            "0 = off) it also computes the capacity report from a worker's GET /capacity "
            "(ARCBEAT_CAPACITY_SOURCE_URL), writes it to InfluxDB and serves the "
            "arcbeat_capacity_* gauges. Settings: ARCBEAT_INFLUX_*, ARCBEAT_HISTORY_PORT, "
            "ARCBEAT_CAPACITY_*."
        ),
    )
    p.add_argument("--influx-url", help="InfluxDB base URL (setting influx_url)")
    p.add_argument("--influx-api", choices=("v1", "v2"), help="/write (v1) or /api/v2/write (v2)")
    p.add_argument("--influx-db", help="database, or bucket for v2 (setting influx_db)")
    p.add_argument("--port", type=int, help="serve /metrics here (setting history_port)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the exporter until SIGINT/SIGTERM. Exit code 0, or 2 on bad settings/unreachable."""
    overrides: dict[str, Any] = {
        setting: getattr(args, option)
        for option, setting in OVERRIDES
        if getattr(args, option, None) is not None
    }
    try:
        settings = Settings.load()
        if overrides:
            settings = settings.replace(**overrides)
    except SettingsError as exc:
        print(f"arcbeat history: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_run_until_signal(settings))
    except (HistoryError, SettingsError) as exc:
        print(f"arcbeat history: {exc}", file=sys.stderr)
        return 2
    return 0


async def _run_until_signal(settings: Settings) -> None:
    exporter = HistoryExporter(settings, make_sink(settings.influx))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, exporter.request_stop)
    await exporter.run()
