"""``arcbeat machines``: the workers' machines as a table (or one machine, or --json)."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse

from arcbeat.deploy.api_client import ApiError
from arcbeat.deploy.commands._worker_api import get_json, table, worker_url


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "machines",
        help="list machines (or one) from the workers' API",
        description="Machines known to the workers (GET /machines), filtered and paged; with "
        "a Resource ID, that one machine as JSON.",
    )
    p.add_argument("resource_id", nargs="?", help="one machine's Resource ID")
    p.add_argument("--status", help="Connected, Disconnected or Expired")
    p.add_argument("--subscription", help="subscription id")
    p.add_argument("--resource-group", help="resource group name")
    p.add_argument("--location", help="region, e.g. westeurope")
    p.add_argument(
        "--late", action="store_true", help="late machines only (overdue by more than late_after)"
    )
    p.add_argument("--limit", type=int, default=50, help="rows per page (default 50)")
    p.add_argument("--offset", type=int, default=0, help="rows to skip (default 0)")
    p.add_argument("--url", help="a worker's base URL (default from settings)")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        print(_machines(args))
    except ApiError as exc:
        print(f"arcbeat machines: {exc}", file=sys.stderr)
        return 1
    return 0


def _machines(args: argparse.Namespace) -> str:
    base = worker_url(args)
    if args.resource_id:
        data = get_json(f"{base}/machines{urllib.parse.quote(args.resource_id)}")
        return json.dumps(data, indent=2)
    params = {
        k: v
        for k, v in {
            "status": args.status,
            "subscription": args.subscription,
            "resourceGroup": args.resource_group,
            "location": args.location,
            "late": "1" if getattr(args, "late", False) else None,
            "limit": str(args.limit),
            "offset": str(args.offset),
        }.items()
        if v
    }
    data = get_json(f"{base}/machines?{urllib.parse.urlencode(params)}")
    if args.json:
        return json.dumps(data, indent=2)
    rows = [
        [
            m["machineName"],
            m["status"],
            m["location"],
            m["resourceGroup"],
            m["lastHeartbeatAt"],
            f"{m['silentForSeconds']:.0f}s",
            "yes" if m["flapping"] else "",
            f"{m['lateSeconds']:.0f}s" if m.get("late") else "",
        ]
        for m in data["items"]
    ]
    header = [
        "machine",
        "status",
        "location",
        "resource group",
        "last heartbeat",
        "silent",
        "flapping",
        "late",
    ]
    return (
        table(rows, header) + f"\n\n{len(rows)} of {data['total']} (offset {data.get('offset', 0)})"
    )
