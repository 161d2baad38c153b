"""``arcbeat maintenance create | list | end``: planned downtime through the worker API."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from arcbeat.deploy.api_client import ApiError, base_url, call, token
from arcbeat.deploy.commands._worker_api import table
from arcbeat.deploy.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "maintenance",
        help="create, list and end maintenance windows (planned downtime)",
        description=(
            "Planned downtime: machines in a window still become Disconnected, but the "
            "transition carries the window, nothing pages, and availability leaves the time "
            "out. Needs a token with the maintenance role when the API has tokens."
        ),
    )
    _connection_options(p, None)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = actions.add_parser("create", help="declare a window")
    _connection_options(c, argparse.SUPPRESS)
    g = c.add_argument_group("which machines (resource IDs, or a scope)")
    g.add_argument("--resource-id", action="append", help="a machine (repeat for more)")
    g.add_argument("--subscription", help="subscription id")
    g.add_argument("--resource-group", help="resource group name")
    g.add_argument("--location", help="Azure region, e.g. westeurope")
    g.add_argument("--tag", action="append", help="key=value (repeat: all must match)")
    t = c.add_argument_group("when")
    t.add_argument("--start", help="RFC 3339 time (default: now)")
    t.add_argument("--end", help="RFC 3339 time: the end (of the series, with --weekly)")
    t.add_argument("--duration", help="instead of --end: 90m, 2h, 1h30m or seconds")
    t.add_argument("--weekly", help="recurring on these days: mon,tue,...,sun")
    t.add_argument("--at", default="00:00", help="with --weekly: local start time, HH:MM")
    t.add_argument("--for", dest="every_for", default="1h", help="with --weekly: how long")
    t.add_argument("--time-zone", default="UTC", help="with --weekly: e.g. Europe/Berlin")
    c.add_argument("--reason", required=True, help="why (shown with the window)")
    c.add_argument(
        "--allow-empty",
        action="store_true",
        help="allow a selector that matches no machine yet (machines not onboarded)",
    )
    ls = actions.add_parser("list", help="every window (ended ones too)")
    _connection_options(ls, argparse.SUPPRESS)
    ls.add_argument("--active", action="store_true", help="only the windows in force now")
    e = actions.add_parser("end", help="end a window now")
    _connection_options(e, argparse.SUPPRESS)
    e.add_argument("id", help="the window id (see list)")
    p.set_defaults(func=run)


def _connection_options(p: argparse.ArgumentParser, default: str | None) -> None:
    """--url, --token-file and --json, before the action or after it (``default`` SUPPRESS on
    an action, so that an option given before the action is not reset by the action's parser)."""
    p.add_argument("--url", default=default, help="a worker's API (default: from ARCBEAT_WEB_PORT)")
    p.add_argument(
        "--token-file",
        default=default,
        help="file holding the API token (or $ARCBEAT_API_TOKEN)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        default=default if default is not None else False,
        help="print the API's JSON",
    )


def request_body(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /maintenance body of ``arcbeat maintenance create``'s options."""
    selector: dict[str, Any] = {}
    if args.resource_id:
        selector["resourceIds"] = list(args.resource_id)
    for name, value in (
        ("subscriptionId", args.subscription),
        ("resourceGroup", args.resource_group),
        ("location", args.location),
    ):
        if value:
            selector[name] = value
    if args.tag:
        tags: dict[str, str] = {}
        for t in args.tag:
            key, sep, value = t.partition("=")
            if not sep or not key:
                raise ApiError(f"--tag {t!r}: give key=value, e.g. --tag env=prod")
            tags[key] = value
        selector["tags"] = tags
    body: dict[str, Any] = {"selector": selector, "reason": args.reason}
    if args.start:
        body["start"] = args.start
    if args.end:
        body["end"] = args.end
    if args.duration:
        body["duration"] = args.duration
    if args.weekly:
        body["recurrence"] = {
            "days": [d.strip() for d in args.weekly.split(",") if d.strip()],
            "at": args.at,
            "duration": args.every_for,
            "timeZone": args.time_zone,
        }
    if args.allow_empty:
        body["allowEmpty"] = True
    return body


def _row(w: dict[str, Any]) -> list[str]:
    sel = w["selector"]
    what = (
        f"{len(sel['resourceIds'])} machine(s)"
        if "resourceIds" in sel
        else ", ".join(f"{k}={v}" for k, v in sel.items())
    )
    r = w.get("recurrence")
    when = f"{w['start']} .. {w['endedAt'] or w['end']}"
    if r:
        when += f" weekly {','.join(r['days'])} {r['at']} {r['timeZone']} for {r['duration']:g}s"
    return [w["id"], "yes" if w.get("active") else "no", what, when, w["reason"], w["createdBy"]]


def _run(args: argparse.Namespace) -> int:
    settings = Settings.load()
    base = base_url(args.url, settings)
    bearer = token(args.token_file)
    ca = settings.worker.api_tls_ca or None
    if args.action == "create":
        out = call(
            "POST", f"{base}/maintenance", body=request_body(args), bearer=bearer, ca_file=ca
        )
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            print(f"maintenance window {out['id']} created ({out['machines']} machine(s) known)")
    elif args.action == "list":
        path = "/maintenance?active=1" if args.active else "/maintenance"
        out = call("GET", base + path, bearer=bearer, ca_file=ca)
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            rows = [_row(w) for w in out["windows"]]
            print(table(rows, ["id", "active", "selector", "when", "reason", "created by"]))
    else:
        out = call("DELETE", f"{base}/maintenance/{args.id}", bearer=bearer, ca_file=ca)
        print(json.dumps(out, indent=2) if args.json else f"maintenance window {args.id} ended")
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except ApiError as exc:
        print(f"arcbeat maintenance: {exc}", file=sys.stderr)
        return 1
