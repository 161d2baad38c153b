"""``arcbeat fleet``: the fleet's totals by status and location, from the workers' API."""

from __future__ import annotations

import argparse
import json
import sys

from arcbeat.deploy.api_client import ApiError
from arcbeat.deploy.commands._worker_api import get_json, table, worker_url

STATUSES = ("Connected", "Disconnected", "Expired")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "fleet",
        help="fleet totals by status and location",
        description="Machines by status and location for the whole fleet (GET /fleet of any "
        "worker), the workers answering and the silent scopes.",
    )
    p.add_argument("--url", help="a worker's base URL (default from settings)")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        data = get_json(f"{worker_url(args)}/fleet")
    except ApiError as exc:
        print(f"arcbeat fleet: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    rows = [[loc, *(str(c.get(s, 0)) for s in STATUSES)] for loc, c in data["byLocation"].items()]
    rows.append(["(fleet)", *(str(data["byStatus"].get(s, 0)) for s in STATUSES)])
    print(table(rows, ["location", *STATUSES]))
    print(f"\nworkers: {data['workers']}   silent scopes: {', '.join(data['silentScopes']) or '-'}")
    return 0
