"""``arcbeat demo``: the local stack, a worker, the history exporter and a simulated fleet."""

from __future__ import annotations

import argparse

from arcbeat.deploy.demo import run_demo


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="everything on one machine: stack + worker + exporters + a simulated fleet, live",
        description="Start the local stack, a worker, the history exporter and a simulated "
        "fleet with outages (time compressed: a 2 s heartbeat), print every transition as it "
        "happens, and say where to look. The stack keeps running afterwards.",
    )
    p.add_argument("--machines", type=int, default=1000, help="fleet size (default 1000)")
    p.add_argument("--duration", type=float, default=120.0, help="seconds of simulation")
    p.add_argument(
        "--warmup", type=float, default=60.0, help="longest wait for the worker to be ready"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_demo(args.machines, args.duration, args.warmup)
