"""`arcbeat` command line: one command, sub-commands contributed by the modules that own them."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from arcbeat.streams.settings import SettingsError

# (module, function) pairs; each adds its sub-command(s) to the parser.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("arcbeat.deploy.stack", "add_stack_commands"),
    ("arcbeat.deploy.worker_cmd", "add_worker_command"),
    ("arcbeat.exporters.history", "add_history_command"),
    ("arcbeat.streams.simulate", "add_simulate_command"),
    ("arcbeat.streams.agent", "add_agent_command"),
    ("arcbeat.deploy.query_cmd", "add_query_commands"),
    ("arcbeat.deploy.demo", "add_demo_command"),
    ("arcbeat.dashboards.cli", "add_dashboards_commands"),
    ("arcbeat.deploy.capacity_cmd", "add_capacity_command"),
    ("arcbeat.bench.cli", "add_bench_command"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arcbeat", description="Heartbeat and status monitoring for fleets of machines."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module, func in COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue  # a command not built yet in this checkout
        getattr(mod, func)(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SettingsError as exc:
        print(f"arcbeat: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
