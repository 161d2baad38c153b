"""``arcbeat replay``: what-if replay of the retained heartbeats log with other settings."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson

from arcbeat.deploy.replay_report import markdown, text
from arcbeat.deploy.replay_run import (
    Refusal,
    ReplayError,
    WhatIf,
    default_jobs,
    parse_overrides,
    what_if,
)
from arcbeat.deploy.settings import Settings
from arcbeat.streams.decide.timestamps import parse_rfc3339
from arcbeat.streams.settings import SettingsError, parse_duration


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay",
        help="what-if: replay the heartbeats log with other settings and compare",
        description=(
            "Read the retained heartbeats log (ticks included) read-only, with no consumer "
            "group and no writes, run it through the same engine, and report a range "
            "side by side with what the workers decided (the status topic), or with a "
            "second set of settings (--against-set). Without --set it is the determinism "
            "check: the replay must decide exactly what the workers did (exit 1 if not). "
            "The settings the workers ran with are read from their ticks; --set changes "
            "them. Each partition is read from its first retained record, so every "
            "machine's state is known when the range starts."
        ),
    )
    when = p.add_mutually_exclusive_group()
    when.add_argument(
        "--since", default=None, help="report the last DURATION (e.g. 24h, 90m; default 24h)"
    )
    when.add_argument("--from", dest="from_", help="report from this RFC 3339 time")
    p.add_argument("--to", help="report up to this RFC 3339 time (default: now)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the replay, e.g. disconnect_after=20m (repeatable)",
    )
    p.add_argument(
        "--against-set",
        action="append",
        default=None,
        metavar="NAME=VALUE",
        help="compare with a second replay with these settings instead of the recorded run",
    )
    p.add_argument(
        "--format", choices=("text", "json", "markdown"), default="text", help="report format"
    )
    p.add_argument("--output", help="write the report to this file (default: stdout)")
    p.add_argument(
        "--jobs", type=int, default=None, help=f"processes (default {default_jobs()}: the cores)"
    )
    p.add_argument(
        "--alert-for",
        default="1m",
        help="an offline machine pages after this long (ArcMachineOffline's `for`; default 1m)",
    )
    p.add_argument(
        "--short",
        default="10m",
        help="a Disconnected resumed within this counts as a short outage (default 10m)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)


class Bar:
    """A progress bar on stderr: redrawn in place on a terminal, a line every 5 s otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.t0 = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < (0.2 if self.tty else 5.0) and done < total:
            return
        self.last = now
        elapsed = max(now - self.t0, 1e-6)
        rate = done / elapsed
        frac = done / total if total else 1.0
        eta = (total - done) / rate if rate > 0 else 0.0
        bar = "#" * round(30 * frac)
        line = (
            f"replay [{bar:<30}] {100 * frac:5.1f}%  {done:,}/{total:,} records  "
            f"{rate:,.0f}/s  eta {eta:.0f}s"
        )
        sys.stderr.write(("\r" + line) if self.tty else (line + "\n"))
        sys.stderr.flush()

    def end(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.load()
        now = time.time()
        until = parse_rfc3339(args.to) if args.to else now
        if args.from_:
            since = parse_rfc3339(args.from_)
        else:
            since = until - parse_duration(args.since or "24h")
        if since >= until:
            raise SettingsError("the range is empty: --from/--since must be before --to")
        spec = WhatIf(
            since,
            until,
            parse_overrides(args.set),
            parse_overrides(args.against_set, "--against-set")
            if args.against_set is not None
            else None,
            alert_for=parse_duration(args.alert_for),
            short=parse_duration(args.short),
            jobs=args.jobs,
        )
        # fail on bad values now, not after the replay
        settings.replace(**spec.overrides)
    except (SettingsError, ValueError) as exc:
        print(f"arcbeat replay: {exc}", file=sys.stderr)
        return 2
    bar = Bar(not args.no_progress)
    try:
        report, code = what_if(settings, spec, on_progress=bar)
    except Refusal as exc:
        bar.end()
        print(f"arcbeat replay: no comparison: {exc}", file=sys.stderr)
        return 2
    except (ReplayError, SettingsError) as exc:
        bar.end()
        print(f"arcbeat replay: {exc}", file=sys.stderr)
        return 2
    bar.end()
    if args.format == "json":
        out = orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2).decode() + "\n"
    elif args.format == "markdown":
        out = markdown(report)
    else:
        out = text(report)
    if args.output:
        Path(args.output).write_text(out)
    else:
        sys.stdout.write(out)
    return code
