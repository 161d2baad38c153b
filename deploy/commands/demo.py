"""``arcbeat demo``: the local stack, a worker, the history exporter and a simulated fleet."""

from __future__ import annotations

import argparse

from arcbeat.deploy.demo import DEMO_PREFIX, MIN_DURATION, SCENARIOS, run_demo


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="everything on one machine: stack + worker + exporters + a simulated fleet, live",
        description="Start the local stack, a worker, the history exporter and a simulated "
        "fleet with outages (time compressed: a 2 s heartbeat), print every transition in "
        "time order as it is committed, then a summary (transitions by kind, detection delay "
        "against the service level, DLQ by reason, alerts, history points) and where to look. "
        "The worker, the history exporter and the fleet (steady heartbeats: the scenarios "
        "are over) keep running until Ctrl-C, so that everything printed can be looked at; "
        "Ctrl-C stops the worker first, then the fleet and the history exporter. The local "
        "stack keeps running afterwards (`arcbeat stack down` stops it). Each run starts "
        "afresh: the demo deletes and creates again its topics (<prefix>.*), its workers' "
        "state and its InfluxDB database.",
    )
    p.add_argument("--machines", type=int, default=1000, help="fleet size (default 1000)")
    p.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="story",
        help="story: every scenario at once (outages, flapping, disconnects, a location going "
        "silent, malformed messages, clock skew); uplink-degrades: one location's heartbeats "
        "slow down, then stop, and early warning's ScopeDegraded comes before its first "
        "Disconnected, with the warning's head start in production minutes (default story)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help=f"seconds the scenarios play before the summary (default 120 for the story, at "
        f"least {MIN_DURATION:g}; 60 for uplink-degrades, at least 43)",
    )
    p.add_argument(
        "--warmup", type=float, default=60.0, help="longest wait for the worker to be ready"
    )
    p.add_argument(
        "--prefix",
        default=DEMO_PREFIX,
        help=f"the demo's topic prefix, worker group and InfluxDB database (default "
        f"{DEMO_PREFIX}; '-' becomes '_' in the database name); deleted and created again "
        "at each run",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    duration = args.duration
    if duration is None:
        duration = 60.0 if args.scenario == "uplink-degrades" else 120.0
    return run_demo(args.machines, duration, args.warmup, args.prefix, args.scenario)
