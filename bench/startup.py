"""A small deployment's worker started again: after a stop (SIGTERM) and after SIGKILL.

A worker processes ``machines`` machines' heartbeats (three each, through the live path),
then is stopped and started again ``runs`` times: each time, the figure is the time from the
process's start to /readyz 200 (partitions owned, state restored from its checkpoint plus
the log after it, lag 0). Then the same after SIGKILL, started again at once: the killed
worker's open transactions are aborted when the new one's producers start (fencing), and
static group membership gives it its partitions back without waiting for the session
timeout. Before each kill every machine sends one more heartbeat, so the worker is killed
with fresh work behind it.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import urllib.request
from typing import Any

from arcbeat.bench.context import Bench
from arcbeat.bench.fleetload import FleetEncoder, produce
from arcbeat.bench.kafka_admin import create_deployment_topics
from arcbeat.bench.worker_process import WorkerProcess, heartbeats_received, wait_processed


def fleet_size(w: WorkerProcess) -> int:
    """Machines the worker holds (its own partitions)."""
    with urllib.request.urlopen(w.url + "/fleet?local=1", timeout=120) as r:
        data = json.loads(r.read())
    return sum(int(v) for v in data.get("byStatus", {}).values())


def _figures(times: list[float]) -> dict[str, Any]:
    return {
        "seconds": [round(t, 2) for t in times],
        "median": round(statistics.median(times), 2) if times else None,
        "max": round(max(times), 2) if times else None,
    }


def run_startup(b: Bench, machines: int, *, runs: int = 3) -> dict[str, Any]:
    s = b.phase_settings("start")
    create_deployment_topics(s)
    w = b.worker(s, "start", loglevel="info")
    w.start()
    first = w.wait_ready(180.0, progress=b.say, label="start worker") - w.started_at
    b.say(f"startup: empty worker ready {first:.1f}s after start; loading {machines:,} machines")
    enc = FleetEncoder(s, machines)
    asyncio.run(produce(s, s.topics.heartbeats, enc.encode(range(machines), rounds=3, block=1000)))
    sent = 3 * machines
    wait_processed(w, sent, 300.0, progress=b.say, label="start worker")
    w.wait_ready(300.0)
    held = fleet_size(w)
    try:
        # stopped (SIGTERM: outputs and offsets committed on the way out) and started again
        after_stop: list[float] = []
        for i in range(runs):
            w.stop()
            w.start()
            after_stop.append(
                w.wait_ready(300.0, progress=b.say, label="start worker") - w.started_at
            )
            b.say(f"startup: stop + start {i + 1}/{runs}: ready in {after_stop[-1]:.2f}s")
        restored = fleet_size(w)
        # killed (SIGKILL) right after processing one more heartbeat per machine
        after_kill: list[float] = []
        for i in range(runs):
            seq = 3 + i
            before = heartbeats_received(w)  # replay included: the worker is ready
            asyncio.run(
                produce(
                    s,
                    s.topics.heartbeats,
                    enc.encode(range(machines), first_kind="heartbeat", first_sequence=seq),
                )
            )
            sent += machines
            wait_processed(w, before + machines, 120.0)
            time.sleep(0.2)
            w.kill()
            w.start()
            after_kill.append(
                w.wait_ready(300.0, progress=b.say, label="start worker") - w.started_at
            )
            b.say(f"startup: kill -9 + start {i + 1}/{runs}: ready in {after_kill[-1]:.2f}s")
        after_kills = fleet_size(w)
    finally:
        w.stop()
    return {
        "machines": machines,
        "heartbeatsSent": sent,
        "emptyWorkerReadySeconds": round(first, 2),
        "machinesInState": held,
        "machinesAfterRestarts": restored,
        "machinesAfterKills": after_kills,
        "afterStop": _figures(after_stop),
        "afterKill": _figures(after_kill),
        "method": "Time from the process's start to /readyz 200; stopped with SIGTERM (or "
        "killed with SIGKILL) and started again at once under the same app id and instance id",
    }
