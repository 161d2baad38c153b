"""``arcbeat simulate``: a fleet of simulated agents with outage scenarios, or a load run."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from arcbeat.deploy.agents.load import load
from arcbeat.deploy.agents.scenarios import (
    MALFORMED_KINDS,
    SCENARIO_NAMES,
    FleetSpec,
    Scenario,
    fleet_locations,
)
from arcbeat.deploy.agents.simulate import simulate
from arcbeat.deploy.settings import Settings
from arcbeat.streams.settings import SettingsError, parse_duration


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1], got {text}")
    return value


def _duration(text: str) -> float:
    try:
        seconds: float = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return seconds


def _window(text: str) -> tuple[float, float]:
    start, sep, end = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected START:END such as 10s:60s, got {text!r}")
    return _duration(start), _duration(end)


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simulate",
        help="a fleet of simulated agents with outage scenarios and a ground-truth log",
        description=(
            "Simulate N agents sending heartbeats to <prefix>.heartbeats. Time is compressed "
            "through the heartbeat interval (ARCBEAT_HEARTBEAT_INTERVAL / --interval). "
            f"Scenarios ({', '.join(SCENARIO_NAMES)}) combine; their knobs override defaults."
        ),
    )
    p.add_argument("-n", "--machines", type=int, default=1000, help="fleet size (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="fleet and scenario seed (default 0)")
    p.add_argument("--duration", type=_duration, help="stop after this much wall time")
    p.add_argument("--until-count", type=int, help="stop after this many messages")
    p.add_argument("--interval", type=_duration, help="heartbeat interval (default: setting)")
    p.add_argument("--disconnect-after", type=_duration, help="override the setting")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: setting)")
    p.add_argument("--topic-prefix", help="topic prefix (default: setting)")
    p.add_argument("--groundtruth", type=Path, help="write the ground-truth JSON lines here")
    p.add_argument("--progress-every", type=_duration, default=5.0, help="seconds (default 5)")
    p.add_argument("--subscriptions", type=int, default=0, help="0 = one per 2000 machines")
    p.add_argument("--resource-groups", type=int, default=20, help="per subscription")
    p.add_argument("--name-prefix", default="vm", help="machine name prefix (default vm)")
    p.add_argument(
        "--scenario",
        type=_names,
        default=[],
        help=f"comma-separated: {', '.join(SCENARIO_NAMES)}",
    )
    p.add_argument("--no-connect", action="store_true", help="start with heartbeats")
    g = p.add_argument_group("outages")
    g.add_argument("--outage-fraction", type=_fraction)
    g.add_argument("--outage-duration", type=_duration)
    g.add_argument("--outage-permanent", type=_fraction, help="of the outaged, never resume")
    g.add_argument("--outage-window", type=_window, help="START:END offsets of the stops")
    g = p.add_argument_group("flap")
    g.add_argument("--flap-machines", type=int)
    g.add_argument("--flap-down", type=_duration)
    g.add_argument("--flap-up", type=_duration)
    g.add_argument("--flap-cycles", type=int)
    g = p.add_argument_group("disconnect")
    g.add_argument("--disconnect-fraction", type=_fraction)
    g = p.add_argument_group("location-silent")
    g.add_argument("--silent-location")
    g.add_argument("--silent-at", type=_duration)
    g.add_argument("--silent-for", type=_duration)
    g.add_argument("--silent-dead-fraction", type=_fraction)
    g = p.add_argument_group("uplink-degrades, subscription-degrades")
    g.add_argument("--degrade-location", help="the location whose uplink degrades")
    g.add_argument(
        "--degrade-subscription",
        metavar="ID",
        help="the subscription whose machines' uplinks degrade, in every location (default: "
        "the fleet's first; give it a small share of each location with --subscriptions)",
    )
    g.add_argument("--degrade-at", type=_duration, help="when it starts (default 6 intervals)")
    g.add_argument(
        "--degrade-step", type=_duration, help="delay added each interval (default interval/5)"
    )
    g = p.add_argument_group("duplicates, malformed, skew")
    g.add_argument("--duplicate-rate", type=_fraction)
    g.add_argument("--malformed-rate", type=_fraction)
    g.add_argument("--malformed-kinds", type=_names, help=", ".join(MALFORMED_KINDS))
    g.add_argument("--skew-fraction", type=_fraction)
    g.add_argument("--skew", type=_duration, dest="skew_seconds", help="clock offset")
    g = p.add_argument_group("load (benchmark) mode")
    g.add_argument("--load", action="store_true", help="send as fast as possible, no scenarios")
    g.add_argument("--heartbeats-per-machine", type=int, default=1)
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "bootstrap", None):
        overrides["kafka_bootstrap"] = args.bootstrap
    if getattr(args, "topic_prefix", None):
        overrides["topic_prefix"] = args.topic_prefix
    if getattr(args, "interval", None) is not None:
        overrides["heartbeat_interval"] = args.interval
    if getattr(args, "disconnect_after", None) is not None:
        overrides["disconnect_after"] = args.disconnect_after
    return Settings.load(**overrides)


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    knobs = {
        name: getattr(args, name)
        for name in (
            "outage_fraction",
            "outage_duration",
            "outage_permanent",
            "outage_window",
            "flap_machines",
            "flap_down",
            "flap_up",
            "flap_cycles",
            "disconnect_fraction",
            "silent_location",
            "silent_at",
            "silent_for",
            "silent_dead_fraction",
            "degrade_location",
            "degrade_subscription",
            "degrade_at",
            "degrade_step",
            "duplicate_rate",
            "malformed_rate",
            "skew_fraction",
            "skew_seconds",
        )
    }
    if args.malformed_kinds:
        knobs["malformed_kinds"] = tuple(args.malformed_kinds)
    knobs["connect_first"] = not args.no_connect
    return Scenario.named(args.scenario, **knobs)


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
        if args.load:
            asyncio.run(
                load(
                    settings,
                    args.machines,
                    heartbeats_per_machine=args.heartbeats_per_machine,
                    seed=args.seed,
                    connect_first=not args.no_connect,
                    progress=_say,
                    progress_every=args.progress_every,
                )
            )
            return 0
        spec = FleetSpec(
            machines=args.machines,
            seed=args.seed,
            subscriptions=args.subscriptions,
            resource_groups=args.resource_groups,
            locations=fleet_locations(settings),
            name_prefix=args.name_prefix,
        )
        result = asyncio.run(
            simulate(
                settings,
                fleet=spec,
                scenario=scenario_from_args(args),
                duration=args.duration,
                until_count=args.until_count,
                groundtruth=args.groundtruth,
                progress=_say,
                progress_every=args.progress_every,
            )
        )
    except (SettingsError, ValueError, ConnectionError) as exc:
        print(f"arcbeat simulate: {exc}", file=sys.stderr)
        return 2
    print(
        f"simulate: sent {result.sent} messages in {result.seconds:.1f}s "
        f"({result.rate:,.0f}/s), {result.errors} errors; "
        + ", ".join(f"{k}={v}" for k, v in sorted(result.by_event.items())),
        file=sys.stderr,
        flush=True,
    )
    return 1 if result.errors else 0
