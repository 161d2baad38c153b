"""`arcbeat machines` and `arcbeat fleet`: the workers' HTTP API as tables (or --json)."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from arcbeat.streams.settings import Settings


def _get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=15) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        raise SystemExit(f"arcbeat: {url} answered {exc.code}: {body}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise SystemExit(
            f"arcbeat: cannot reach a worker at {url}: {exc}. Is `arcbeat worker` running? "
            "Set --url or ARCBEAT_WEB_PORT."
        ) from exc


def _base(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    s = Settings.load()
    return f"http://{s.web_host}:{s.web_port}"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def _machines(args: argparse.Namespace) -> int:
    base = _base(args)
    if args.resource_id:
        data = _get(f"{base}/machines{urllib.parse.quote(args.resource_id)}")
        print(json.dumps(data, indent=2))
        return 0
    params = {
        k: v
        for k, v in {
            "status": args.status,
            "subscription": args.subscription,
            "resourceGroup": args.resource_group,
            "location": args.location,
            "limit": str(args.limit),
            "offset": str(args.offset),
        }.items()
        if v
    }
    data = _get(f"{base}/machines?{urllib.parse.urlencode(params)}")
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    rows = [
        [
            m["machineName"],
            m["status"],
            m["location"],
            m["resourceGroup"],
            m["lastHeartbeatAt"],
            f"{m['silentForSeconds']:.0f}s",
            "yes" if m["flapping"] else "",
        ]
        for m in data["items"]
    ]
    print(
        table(
            rows,
            [
                "machine",
                "status",
                "location",
                "resource group",
                "last heartbeat",
                "silent",
                "flapping",
            ],
        )
    )
    print(f"\n{len(rows)} of {data['total']} (offset {data.get('offset', 0)})")
    return 0


def _fleet(args: argparse.Namespace) -> int:
    data = _get(f"{_base(args)}/fleet")
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    statuses = ["Connected", "Disconnected", "Expired"]
    rows = [[loc, *(str(c.get(s, 0)) for s in statuses)] for loc, c in data["byLocation"].items()]
    rows.append(["(fleet)", *(str(data["byStatus"].get(s, 0)) for s in statuses)])
    print(table(rows, ["location", *statuses]))
    print(f"\nworkers: {data['workers']}   silent scopes: {', '.join(data['silentScopes']) or '-'}")
    return 0


def add_query_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    m = sub.add_parser("machines", help="list machines (or one) from the workers' API")
    m.add_argument("resource_id", nargs="?", help="one machine's Resource ID")
    m.add_argument("--status")
    m.add_argument("--subscription")
    m.add_argument("--resource-group")
    m.add_argument("--location")
    m.add_argument("--limit", type=int, default=50)
    m.add_argument("--offset", type=int, default=0)
    m.add_argument("--url", help="a worker's base URL (default from settings)")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=_machines)
    f = sub.add_parser("fleet", help="fleet totals by status and location")
    f.add_argument("--url")
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=_fleet)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(0)
