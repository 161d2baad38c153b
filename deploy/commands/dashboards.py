"""``arcbeat dashboards build | push``: Grafana dashboards as code."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from arcbeat.dashboards.build import DASHBOARD_DIR, build_all, stale_files, write_all


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "dashboards",
        help="Grafana dashboards as code: build the JSON, push to a running Grafana",
        description="Grafana dashboards as code (NOC overview, machine detail, capacity).",
    )
    actions = parser.add_subparsers(
        dest="dashboards_command", required=True, metavar="{build,push}"
    )
    build = actions.add_parser(
        "build",
        help="regenerate dashboards/*.json from the Python builders",
        description="Regenerate the committed dashboard JSON from dashboards/*.py.",
    )
    build.add_argument(
        "--out",
        type=Path,
        default=DASHBOARD_DIR,
        help=f"folder to write <uid>.json into (default: {DASHBOARD_DIR})",
    )
    build.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the files in --out are stale (for CI)",
    )

    push = actions.add_parser(
        "push",
        help="create/update the datasources and dashboards in a running Grafana",
        description="Idempotently create or update the arcbeat datasources (by uid) and "
        "dashboards (overwrite) in a running Grafana, through its HTTP API.",
    )
    push.add_argument(
        "--url",
        default=os.environ.get("GRAFANA_URL", "http://127.0.0.1:3000"),
        help="Grafana base URL (default: $GRAFANA_URL or http://127.0.0.1:3000)",
    )
    push.add_argument(
        "--token",
        default=os.environ.get("GRAFANA_TOKEN"),
        help="service account token with the Admin role, needed for datasources "
        "(default: $GRAFANA_TOKEN; prefer the variable or --token-file, a flag shows in `ps`)",
    )
    push.add_argument(
        "--token-file",
        default=os.environ.get("GRAFANA_TOKEN_FILE"),
        help="read the token from the first line of this file (default: $GRAFANA_TOKEN_FILE)",
    )
    push.add_argument("--folder", default="arcbeat", help="folder uid and title (default: arcbeat)")
    push.add_argument(
        "--prometheus-url",
        help="Prometheus URL as Grafana's server reaches it (default: setting prometheus_url)",
    )
    push.add_argument(
        "--influx-url",
        help="InfluxDB URL as Grafana's server reaches it (default: setting influx_url)",
    )
    push.add_argument(
        "--no-datasources",
        action="store_true",
        help="push dashboards only (datasources are provisioned some other way)",
    )
    push.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.dashboards_command == "build":
        return _build(args)
    return _push(args)


def _build(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.check:
        stale = stale_files(out)
        if stale:
            print(
                "stale dashboard JSON (run `arcbeat dashboards build`): " + ", ".join(stale),
                file=sys.stderr,
            )
            return 1
        print(f"dashboards in {out} are up to date")
        return 0
    for path in write_all(out):
        print(f"wrote {path}")
    return 0


def _push(args: argparse.Namespace) -> int:
    from arcbeat.dashboards.push import GrafanaPushError, datasource_payloads, push
    from arcbeat.deploy.settings import Settings
    from arcbeat.streams.settings import SettingsError

    if not args.token and args.token_file:
        try:
            lines = Path(args.token_file).expanduser().read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            print(
                f"arcbeat dashboards push: --token-file / GRAFANA_TOKEN_FILE: cannot read "
                f"{args.token_file}: {exc.strerror or exc}; point it at a readable file "
                "holding the token",
                file=sys.stderr,
            )
            return 2
        args.token = lines[0].strip() if lines else ""
    if not args.token:
        print(
            "arcbeat dashboards push: no token; pass --token-file or set GRAFANA_TOKEN "
            "(a Grafana service account token with the Admin role)",
            file=sys.stderr,
        )
        return 2
    try:
        settings = Settings.load()
    except SettingsError as exc:
        print(f"arcbeat dashboards push: {exc}", file=sys.stderr)
        return 2
    datasources = None
    if not args.no_datasources:
        datasources = datasource_payloads(
            prometheus_url=args.prometheus_url or settings.stack.prometheus_url,
            influx_url=args.influx_url or settings.influx.url,
            influx_db=settings.influx.db,
            influx_token=settings.influx.token,
            influx_username=settings.influx.username,
            influx_password=settings.influx.password,
        )
    try:
        result = push(
            args.url,
            args.token,
            build_all(),
            datasources=datasources,
            folder_uid=args.folder,
            timeout=args.timeout,
            progress=lambda line: print(line, flush=True),
        )
    except GrafanaPushError as exc:
        print(f"arcbeat dashboards push: {exc}", file=sys.stderr)
        return 1
    print(
        f"pushed {len(result.dashboards)} dashboards and {len(result.datasources)} datasources "
        f"to {args.url}"
    )
    return 0
