"""``arcbeat agent``: a heartbeat agent for this machine."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from arcbeat.deploy.agents.agent import (
    DEFAULT_RESOURCE_GROUP,
    DEFAULT_SUBSCRIPTION,
    machine_name,
    parse_tags,
    run_agent,
)
from arcbeat.streams.records import resource_id
from arcbeat.streams.settings import Settings, SettingsError, parse_duration


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "agent",
        help="a heartbeat agent for this machine",
        description=(
            "Send `connect`, then a heartbeat every heartbeat_interval, for this machine "
            "(hostname, /etc/os-release). Ctrl-C stops it silently: arcbeat will declare the "
            "machine Disconnected. --disconnect removes the machine instead."
        ),
    )
    p.add_argument("--resource-id", help="full Resource ID (default: built from the options)")
    p.add_argument("--subscription", default=DEFAULT_SUBSCRIPTION, help="subscription GUID")
    p.add_argument("--resource-group", default=DEFAULT_RESOURCE_GROUP, help="resource group")
    p.add_argument("--machine-name", help="default: this host's name")
    p.add_argument("--location", help="region (default: the first configured region)")
    p.add_argument("--tag", action="append", metavar="NAME=VALUE", help="repeatable")
    p.add_argument("--interval", help="heartbeat interval such as 5m (default: setting)")
    p.add_argument("--once", action="store_true", help="connect, one heartbeat, exit")
    p.add_argument("--disconnect", action="store_true", help="send `disconnect` and exit")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: setting)")
    p.add_argument("--topic-prefix", help="topic prefix (default: setting)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        overrides: dict[str, Any] = {}
        if args.bootstrap:
            overrides["kafka_bootstrap"] = args.bootstrap
        if args.topic_prefix:
            overrides["topic_prefix"] = args.topic_prefix
        settings = Settings.load(**overrides)
        interval = parse_duration(args.interval) if args.interval else None
        rid = args.resource_id or resource_id(
            args.subscription, args.resource_group, args.machine_name or machine_name()
        )
        delivered = asyncio.run(
            run_agent(
                settings,
                resource_id=rid,
                location=args.location,
                once=args.once,
                interval=interval,
                tags=parse_tags(args.tag),
                disconnect=args.disconnect,
                progress=_say,
            )
        )
    except (SettingsError, ValueError, ConnectionError) as exc:
        print(f"arcbeat agent: {exc}", file=sys.stderr)
        return 2
    return 0 if delivered else 1
