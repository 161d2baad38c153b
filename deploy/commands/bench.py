"""``arcbeat bench``: the benchmark figures in one run, written to ``bench/reports/``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from arcbeat.bench import readme
from arcbeat.bench.delay_cost import PAIRS
from arcbeat.bench.merge import merge_file
from arcbeat.bench.report import write_report
from arcbeat.bench.runner import DEFAULT_OUT, PHASES, run_bench
from arcbeat.streams.settings import SettingsError


def _positive(text: str) -> int:
    value = int(text.replace("_", "").replace(",", ""))
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text}")
    return value


def _phases(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in PHASES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown phase(s) {unknown}; choose from {', '.join(PHASES)}"
        )
    return names


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmarks against the performance goals (throughput, detection delay, memory, "
        "restart)",
        description=(
            "Measure the figures of the performance goals on this machine, broker included, "
            "against raw Kafka consumers in the same run; write a Markdown and a JSON report "
            "with each goal met or missed. Needs the "
            "local stack (arcbeat stack up). Every worker is a real `arcbeat worker` process "
            "and every machine in state got there through the heartbeats topic. The full run "
            "(1,000,000 machines in state) takes about an hour and a half and most of the "
            "machine (its mass-outage phase alone holds a million machines for half an hour); "
            "--quick takes about half an hour (10 minutes of it a held fleet)."
        ),
    )
    p.add_argument(
        "--machines",
        type=_positive,
        help="fleet for throughput and detection (default 100,000; --quick 20,000)",
    )
    p.add_argument(
        "--big",
        type=_positive,
        help="machines in state for memory, scrape, restart and catch-up "
        "(default 1,000,000; --quick: --machines)",
    )
    p.add_argument(
        "--start-machines",
        type=_positive,
        default=1000,
        help="machines in state of the worker stopped, killed and started again "
        "(default %(default)s)",
    )
    p.add_argument(
        "--restarts",
        type=_positive,
        default=3,
        help="stop + start and kill + start runs of that worker, each (default %(default)s)",
    )
    p.add_argument(
        "--tick-hours",
        type=_seconds,
        help="hours of ticks in the big-state log before its heartbeats (default 24; --quick 1)",
    )
    p.add_argument(
        "--checkpoint-interval",
        type=_seconds,
        help="checkpoint_interval of the big-state worker (default: the worker's own, "
        "120 s); the restart replays one such interval of the fleet's load",
    )
    p.add_argument("--quick", action="store_true", help="a short variant (minutes)")
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="report folder: latest.md and latest.json are written there, keeping the figures "
        "of phases left out by --phases from the report there (default %(default)s)",
    )
    p.add_argument(
        "--phases",
        type=_phases,
        default=PHASES,
        help=f"comma-separated phases to run (default all: {','.join(PHASES)}; catchUp needs "
        "bigState)",
    )
    p.add_argument(
        "--rounds",
        type=_positive,
        default=3,
        help="heartbeats per machine loaded for the throughput run (default 3)",
    )
    p.add_argument(
        "--throughput-window",
        type=_seconds,
        help="longest timed consumption of the worker (default 45 s; --quick 20 s)",
    )
    p.add_argument(
        "--detect-window",
        type=_seconds,
        help="measurement window of the detection run (default 75 s; --quick 40 s)",
    )
    p.add_argument(
        "--detect-interval",
        type=_seconds,
        help="heartbeat interval of the detection fleet (default: the live load a quarter of "
        "the worker's measured rate, 5-60 s; the deadline is 3 intervals)",
    )
    p.add_argument(
        "--agent-window",
        type=_seconds,
        default=20.0,
        help="seconds the idle agent's CPU is measured over in the agent phase; the busy agent's "
        "CPU per heartbeat is measured over half of it (default %(default)g)",
    )
    p.add_argument(
        "--silent",
        type=_positive,
        help="machines that go silent in the detection run (default 2%% of "
        "--machines, at most 2,000)",
    )
    p.add_argument(
        "--variants",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time workers with one setting changed (default: on, off in --quick)",
    )
    p.add_argument(
        "--delay-pairs",
        type=_count,
        default=PAIRS,
        metavar="N",
        help="pairs of throughput workers with delivery_delays on and off, for the goal "
        f"fastPathKept (default {PAIRS}; 0: not measured)",
    )
    p.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="py-spy the worker during the throughput run when py-spy is installed",
    )
    p.add_argument(
        "--outage-machines",
        type=_positive,
        help="machines in state of the mass-outage phase (default 1,000,000; --quick 100,000)",
    )
    p.add_argument(
        "--outage-interval",
        type=_seconds,
        help="heartbeat interval of the mass-outage fleet (default: 30 s, or machines / 5,000 "
        "s when longer; the deadline is 2 intervals)",
    )
    p.add_argument(
        "--outage-hold",
        type=_seconds,
        help="outage_hold of the mass-outage phase (default: 10 minutes, or 8 intervals when "
        "longer)",
    )
    p.add_argument(
        "--outage-restarts",
        type=_positive,
        default=3,
        help="kill + start runs of the mass-outage worker with a location held, each shorter "
        "than checkpoint_interval (default %(default)s)",
    )
    p.add_argument("--keep-topics", action="store_true", help="do not delete the run's topics")
    p.set_defaults(func=run, bench_parser=p)


def run(args: argparse.Namespace) -> int:
    try:
        report, errors = run_bench(args)
    except SettingsError:
        raise
    except KeyboardInterrupt:
        print("arcbeat bench: interrupted; workers stopped", file=sys.stderr)
        return 130
    if set(args.phases) != set(PHASES):
        # the phases left out keep their figures from the report written over
        report = merge_file(report, Path(args.out) / "latest.json", PHASES)
    md, js = write_report(report, args.out)
    print(f"arcbeat bench: report written to {md} and {js}", file=sys.stderr)
    for g in report["goals"]:
        state = {True: "met   ", False: "MISSED", None: "n/a   "}[g["met"]]
        print(f"  {state} {g['what']}: {g['measured']} (goal {g['goal']})", file=sys.stderr)
    if errors:
        print(f"arcbeat bench: {len(errors)} phase(s) failed: {errors}", file=sys.stderr)
        return 1
    complete = not args.quick and set(args.phases) == set(PHASES)
    if complete and Path(args.out).resolve() == readme.REPORT.parent:
        # a complete run into the repository's reports: the README shows its figures
        changed = readme.update(readme.REPO / "README.md", report)
        print(f"arcbeat bench: README.md {'updated' if changed else 'unchanged'}", file=sys.stderr)
    return 0
