"""``arcbeat worker``: one stream processor, with its HTTP API and Prometheus metrics."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from arcbeat.deploy.kafka_admin import KafkaAdminError
from arcbeat.deploy.settings import Settings
from arcbeat.deploy.worker import Worker, worker_number
from arcbeat.streams.kafka.startup import Deadline, StartupError, retry_start


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "worker",
        help="run a stream processor (start as many as you like: one consumer group)",
        description=(
            "The stream processor: a batched heartbeat loop in a Faust worker process. "
            "Web API, /healthz, /readyz and /metrics on ARCBEAT_WEB_PORT + id."
        ),
    )
    p.add_argument(
        "--id",
        type=int,
        default=None,
        help="worker number when several run on one host: web port = base + id (default: the "
        "ordinal of ARCBEAT_WORKER_ID with the port as is, else 0)",
    )
    p.add_argument("--loglevel", default="warning", help="debug, info, warning, error")
    p.add_argument(
        "--print-transitions", action="store_true", help="print each status record emitted"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Declare the topics, then run the worker until it is stopped (the process exits)."""
    settings = Settings.load()  # a SettingsError: arcbeat's main says so, exit 2
    number, offset_port = worker_number(settings, args.id)
    deadline = Deadline(settings.kafka.startup_deadline)
    worker = Worker.build(settings, number, offset_port=offset_port, deadline=deadline)
    say = worker.pipeline.say
    try:
        asyncio.run(retry_start("topic check", worker.declare_topics, deadline=deadline, say=say))
    except (KafkaAdminError, StartupError) as exc:
        print(f"arcbeat worker: {exc}", file=sys.stderr)
        return 2
    if args.print_transitions:
        worker.pipeline.on_emit.append(
            lambda e: _print_transition(e.value) if e.topic == "status" else None
        )
    logging.getLogger("arcbeat").setLevel(args.loglevel.upper())
    worker.run(args.loglevel)
    return 0  # not reached: faust's worker exits the process


def _print_transition(value: bytes) -> None:
    print(value.decode(), flush=True)
