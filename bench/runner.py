"""The benchmark run behind ``arcbeat bench``: every phase, one report (``bench/reports/latest.*``).

Phases (each on its own topics under one unique prefix, deleted at the end):

1. engine: ``Engine.handle_message`` in this process (mix and fast path), with cProfile;
   checkpoint encode/decode/restore;
2. throughput: N machines' heartbeats loaded, then read by aiokafka, kcat and a real
   ``arcbeat worker`` (plus variants with one setting changed); then ``arcbeat replay``'s
   engine over the same log (replayRate);
3. detection: N machines put in state by their own heartbeats, live load in compressed
   time, silent machines declared and resuming, measured from the status topic;
4. startup: a worker with a small fleet in state stopped or killed and started again: time to
   /readyz 200;
5. big state: M machines in state through the live path (a day of ticks, 3 heartbeats each):
   memory, /metrics scrape, restart to /readyz 200;
6. catch-up: the big-state worker stopped while 2 heartbeats per machine wait, started again;
7. agent: the machine agent's installed size, idle memory and CPU per heartbeat.
8. mass outage: a big fleet in state, one location and then the whole fleet silent and held
   (CPU while held, tick time, event loop lag, readiness, restarts, release at the hold's end).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from arcbeat.bench import environment
from arcbeat.bench.agent import run_agent_footprint
from arcbeat.bench.bigstate import BigDeployment, run_bigstate, run_catchup
from arcbeat.bench.context import Bench
from arcbeat.bench.delay_cost import PAIRS
from arcbeat.bench.detection import detection_interval, run_detection
from arcbeat.bench.engine_profile import run_engine_profile
from arcbeat.bench.goals import evaluate
from arcbeat.bench.kafka_admin import delete_topics_with_prefix, run_prefix
from arcbeat.bench.massoutage import run_massoutage
from arcbeat.bench.replay import run_replay
from arcbeat.bench.startup import run_startup
from arcbeat.bench.throughput import run_throughput
from arcbeat.deploy.settings import Settings
from arcbeat.streams.decide.timestamps import rfc3339

DEFAULT_OUT = Path("bench/reports")


PHASES = (
    "engine",
    "throughput",
    "replay",
    "detection",
    "startup",
    "bigState",
    "catchUp",
    "agent",
    "massOutage",
)


def _phase(
    b: Bench,
    name: str,
    wanted: tuple[str, ...],
    report: dict[str, Any],
    errors: list[str],
    fn: Callable[[], Any],
) -> Any:
    if name not in wanted:
        report[name] = {"skipped": True}
        return None
    b.say(f"== {name}")
    t0 = time.monotonic()
    try:
        result = fn()
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        b.say(f"{name} failed: {detail}")
        errors.append(f"{name}: {detail}")
        report[name] = {"error": detail, "traceback": traceback.format_exc()[-4000:]}
        return None
    finally:
        b.stop_all()  # a failed phase leaves no worker behind
    if isinstance(result, dict):
        result["phaseSeconds"] = round(time.monotonic() - t0, 1)
        result["cpuPressureAtEnd"] = environment.cpu_pressure()
    report[name] = result
    b.say(f"{name} done in {time.monotonic() - t0:.0f}s")
    return result


def command_line(args: argparse.Namespace, argv: list[str]) -> str:
    """The exact command of this run: as typed (``arcbeat bench ...``), or rebuilt from the
    parsed options when the bench was called from Python."""
    if len(argv) > 1 and Path(argv[0]).name == "arcbeat" and argv[1] == "bench":
        return " ".join(["arcbeat", "bench", *(shlex.quote(a) for a in argv[2:])])
    parser: argparse.ArgumentParser | None = getattr(args, "bench_parser", None)
    words = ["arcbeat", "bench"]
    for action in parser._actions if parser is not None else []:
        if not action.option_strings or action.dest == "help":
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default or value is None:
            continue
        flag = action.option_strings[0]
        if isinstance(action, argparse.BooleanOptionalAction):
            words.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, bool):
            words.append(flag)
        elif isinstance(value, tuple | list):
            words += [flag, ",".join(str(v) for v in value)]
        else:
            words += [flag, shlex.quote(str(value))]
    return " ".join(words)


def run_bench(
    args: argparse.Namespace, argv: list[str] | None = None
) -> tuple[dict[str, Any], list[str]]:
    settings = Settings.load()
    quick = bool(args.quick)
    wanted: tuple[str, ...] = tuple(args.phases)
    machines = args.machines or (20_000 if quick else 100_000)
    big = args.big or (machines if quick else 1_000_000)
    tick_hours = args.tick_hours or (1.0 if quick else 24.0)
    tput_window = args.throughput_window or (20.0 if quick else 45.0)
    detect_window = args.detect_window or (40.0 if quick else 75.0)
    silent = args.silent or max(10, min(2000, machines // 50))
    variants = (not quick) if args.variants is None else bool(args.variants)
    delay_pairs = int(getattr(args, "delay_pairs", PAIRS))
    outage = getattr(args, "outage_machines", None) or (100_000 if quick else 1_000_000)
    workdir = Path(tempfile.mkdtemp(prefix="arcbeat-bench-"))
    b = Bench(settings, run_prefix(), workdir)
    started = time.time()
    report: dict[str, Any] = {
        "schema": 2,
        "startedAt": rfc3339(started),
        "command": command_line(args, sys.argv if argv is None else argv),
        "quick": quick,
        "machine": environment.machine(),
        "versions": environment.versions(settings),
        "settings": {
            "kafkaBootstrap": settings.kafka.bootstrap,
            "partitions": settings.kafka.partitions,
            "processing": "exactly-once (per-partition transactions)",
            "commitInterval": settings.worker.commit_interval,
            "checkpointInterval": settings.worker.checkpoint_interval,
            "bigCheckpointInterval": args.checkpoint_interval
            or settings.worker.checkpoint_interval,
            "checkInterval": settings.timing.check_interval,
            "heartbeatInterval": settings.timing.heartbeat_interval,
            "producerLinger": settings.worker.producer_linger,
            "availabilityWindows": settings.worker.availability_windows,
            "maxMachineSeries": settings.worker.max_machine_series,
            "machines": machines,
            "big": big,
            "startMachines": args.start_machines,
            "restarts": args.restarts,
            "tickHours": tick_hours,
            "rounds": args.rounds,
            "throughputWindow": tput_window,
            "detectWindow": detect_window,
            "detectInterval": args.detect_interval,
            "agentWindow": args.agent_window,
            "silent": silent,
            "outageMachines": outage,
            "outageInterval": getattr(args, "outage_interval", None),
            "outageHold": getattr(args, "outage_hold", None),
            "outageRestarts": getattr(args, "outage_restarts", 3),
            "variants": variants,
            "delayPairs": delay_pairs,
            "phases": list(wanted),
            "topicPrefix": b.prefix,
            "workdir": str(workdir),
        },
    }
    errors: list[str] = []
    kept: list[BigDeployment] = []
    b.say(f"run {b.prefix}: logs in {workdir}")
    try:
        _phase(
            b,
            "engine",
            wanted,
            report,
            errors,
            lambda: run_engine_profile(settings, min(machines, 20_000), args.rounds),
        )
        tput = _phase(
            b,
            "throughput",
            wanted,
            report,
            errors,
            lambda: run_throughput(
                b,
                machines,
                args.rounds,
                tput_window,
                variants=variants,
                profile_seconds=(min(30.0, tput_window) if args.profile else 0.0),
                delay_pairs=delay_pairs,
            ),
        )
        if "replay" in wanted and tput is None:
            report["replay"] = {"error": "needs the throughput phase, which did not complete"}
            errors.append("replay: needs the throughput phase, which did not complete")
        else:
            _phase(b, "replay", wanted, report, errors, lambda: run_replay(b))
        w = (tput or {}).get("worker") or {}
        measured = float(w.get("steadyRate") or w.get("rate") or 0.0)
        rate_hint = measured or 2000.0  # an assumption when the throughput run did not run
        interval = args.detect_interval or detection_interval(machines, rate_hint, 0.25)
        _phase(
            b,
            "detection",
            wanted,
            report,
            errors,
            lambda: run_detection(b, machines, rate_hint, detect_window, silent, interval=interval),
        )
        _phase(
            b,
            "startup",
            wanted,
            report,
            errors,
            lambda: run_startup(b, args.start_machines, runs=args.restarts),
        )
        _phase(
            b,
            "bigState",
            wanted,
            report,
            errors,
            lambda: run_bigstate(
                b,
                big,
                tick_hours=tick_hours,
                checkpoint_interval=args.checkpoint_interval,
                keep=kept.append,
            ),
        )
        if "catchUp" in wanted and not kept:
            report["catchUp"] = {"error": "needs the bigState phase, which did not complete"}
            errors.append("catchUp: needs the bigState phase, which did not complete")
        else:
            _phase(b, "catchUp", wanted, report, errors, lambda: run_catchup(b, kept[0]))
        _phase(
            b,
            "agent",
            wanted,
            report,
            errors,
            lambda: run_agent_footprint(
                b, idle_seconds=args.agent_window, busy_seconds=args.agent_window / 2
            ),
        )
        _phase(
            b,
            "massOutage",
            wanted,
            report,
            errors,
            lambda: run_massoutage(
                b,
                outage,
                interval=getattr(args, "outage_interval", None),
                hold=getattr(args, "outage_hold", None),
                restarts=getattr(args, "outage_restarts", 3),
                checkpoint_interval=args.checkpoint_interval,
            ),
        )
    finally:
        b.stop_all()
        if not args.keep_topics:
            try:
                deleted = delete_topics_with_prefix(settings, b.prefix)
                b.say(f"deleted {len(deleted)} topics of {b.prefix}")
            except Exception as exc:
                b.say(f"could not delete the topics of {b.prefix}: {exc!r}")
    report["machine"]["loadAverageEnd"] = environment.load_average()
    report["machine"]["cpuPressureEnd"] = environment.cpu_pressure()
    report["seconds"] = round(time.time() - started, 1)
    report["notes"] = [
        "The machine is shared: the load average above includes other processes, and every "
        "figure here moves with it from run to run.",
        "Every machine in state got there through the heartbeats topic, processed by a real "
        "`arcbeat worker` process; no state is written behind the worker's back.",
        "Throughput is measured by processing a backlog (records loaded first). The detection "
        "run compresses time (a heartbeat interval of seconds) because the broker stamps "
        "arrival times (LogAppendTime): a deadline is real time after a real heartbeat.",
        "Connected latency and detection delay as a downstream consumer sees them include "
        "the transaction commit (records are visible to read_committed consumers only after "
        "it).",
        f"Worker logs and py-spy output of this run: {workdir}.",
        *[f"phase error: {e}" for e in errors],
    ]
    report["goals"] = evaluate(report)
    return report, errors
