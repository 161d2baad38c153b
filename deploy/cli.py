"""The ``arcbeat`` command: the root parser over the command modules of
:mod:`arcbeat.deploy.commands` (one module per command; see that package for the convention)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from arcbeat.deploy.commands import (
    bench,
    capacity,
    dashboards,
    demo,
    fleet,
    history,
    machines,
    maintenance,
    replay,
    simulate,
    stack,
    topics,
    worker,
)
from arcbeat.streams.settings import SettingsError

# Every command, in the order `arcbeat --help` lists them.
COMMANDS = (
    stack,
    topics,
    worker,
    history,
    simulate,
    replay,
    machines,
    fleet,
    maintenance,
    capacity,
    demo,
    dashboards,
    bench,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arcbeat", description="Heartbeat and status monitoring for fleets of machines."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
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
