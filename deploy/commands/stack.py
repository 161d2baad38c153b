"""``arcbeat stack up | down | status``: the local single-machine stack."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from arcbeat.deploy.settings import Settings
from arcbeat.deploy.stack import ServiceStatus, Stack, StackError
from arcbeat.streams.settings import SettingsError

ACTIONS = ("up", "down", "status")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    stack = sub.add_parser(
        "stack",
        help="start/stop/inspect the local Kafka, Prometheus, Alertmanager, InfluxDB",
        description="The local single-machine stack, on loopback, state under ARCBEAT_STATE_DIR "
        "(default ./state).",
    )
    actions = stack.add_subparsers(dest="stack_command", required=True, metavar="{up,down,status}")
    up = actions.add_parser(
        "up",
        help="start every service and wait until healthy (idempotent)",
        description="Start every service that is not running, wait until all are healthy, "
        "and create the topics of ARCBEAT_TOPIC_PREFIX.",
    )
    up.add_argument(
        "--brokers",
        type=int,
        default=None,
        metavar="N",
        help="Kafka brokers (default: as the state folder was formatted, else 1); 3 gives a "
        "cluster that survives the loss of one broker: brokers on the first "
        "ARCBEAT_KAFKA_BOOTSTRAP port + 0, 100, 200, each also a KRaft controller",
    )
    actions.add_parser(
        "down",
        help="stop every service of the state folder",
        description="Stop every service of the state folder; no process is left behind.",
    )
    status = actions.add_parser(
        "status",
        help="pid, address and health of each service; each broker's partitions (leader of, "
        "under-replicated)",
        description="Pid, address and health of each service; exit code 1 unless all are healthy.",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    stack.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    action = args.stack_command
    try:
        if action == "up":
            return _up(args)
        if action == "down":
            Stack(Settings.load()).down(_print)
            return 0
        return _status(args)
    except (StackError, SettingsError) as exc:
        print(f"arcbeat stack {action}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"arcbeat stack {action}: interrupted; `arcbeat stack down` stops whatever was started",
            file=sys.stderr,
        )
        return 130


def _print(message: str) -> None:
    print(message, flush=True)


def _warn(message: str) -> None:
    print(f"stack: warning: {message}", file=sys.stderr, flush=True)


def _up(args: argparse.Namespace) -> int:
    stack = Stack(Settings.load(), brokers=args.brokers)
    stack.up(_print)
    stack.ensure_topics(warn=_warn)
    _print(f"stack: topics of prefix {stack.settings.kafka.topic_prefix!r} ready")
    return 0


def _status(args: argparse.Namespace) -> int:
    stack = Stack(Settings.load())
    statuses = stack.status()
    if args.json:
        print(json.dumps({n: s.as_dict() for n, s in statuses.items()}, indent=2))
    else:
        print(format_status(statuses, stack.state_dir))
    return 0 if all(s.healthy for s in statuses.values()) else 1


def format_status(statuses: dict[str, ServiceStatus], state_dir: Path) -> str:
    """A small table: service, pid, address, health, detail; then Kafka's partition health
    (under-replicated partitions of the whole cluster) when a broker answered."""
    rows = [("SERVICE", "PID", "ADDRESS", "HEALTHY", "DETAIL")]
    for s in statuses.values():
        rows.append((s.name, str(s.pid or "-"), s.address, "yes" if s.healthy else "no", s.detail))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
        for r in rows
    ]
    cluster = next((s.extra["cluster"] for s in statuses.values() if "cluster" in s.extra), None)
    if cluster is not None:
        lines.append(
            f"kafka: {len(cluster['brokers'])} broker(s) up {cluster['brokers']}, "
            f"{cluster['partitions']} partitions, {cluster['under_replicated']} "
            f"under-replicated, {cluster['offline']} offline"
            + (
                f", {cluster['under_min_isr']} below min.insync.replicas (acks=all writes fail)"
                if cluster["under_min_isr"]
                else ""
            )
        )
    lines.append(f"state: {state_dir}  (logs in {state_dir / 'logs'})")
    return "\n".join(lines)
