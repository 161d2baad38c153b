"""The replay phase: ``arcbeat replay``'s engine over the throughput phase's log.

The throughput phase leaves a heartbeats topic of N machines' onboarding and steady-state
heartbeats, with the worker's ticks among them and its offsets committed. The replay reads
it all back read-only, partitions split over the cores' processes, through the same engine,
and reports heartbeats per second of wall time (process start and Kafka connections
included), and what that makes of a day of a 100,000-machine fleet (28.8 M heartbeats).
"""

from __future__ import annotations

import time
from typing import Any

from arcbeat.bench.context import Bench
from arcbeat.deploy.replay_run import default_jobs, run

DAY_OF_100K = 100_000 * 288  # a heartbeat every 5 minutes for a day


def run_replay(b: Bench) -> dict[str, Any]:
    s = b.phase_settings("tput")
    jobs = default_jobs()
    b.say(f"replay: the throughput phase's log, {jobs} processes")
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 5.0:
            last[0] = now
            b.say(f"replay: {done:,}/{total:,} records")

    r = run(s, since=0.0, until=time.time() + 3600, jobs=jobs, recorded=False,
            on_progress=progress)  # fmt: skip
    rate = r.rate
    b.say(f"replay: {r.heartbeats:,} heartbeats in {r.seconds:.1f}s = {rate:,.0f}/s")
    return {
        "heartbeats": r.heartbeats,
        "records": r.records,
        "ticks": sum(x.ticks for x in r.results),
        "transitions": sum(len(x.changes) for x in r.results),
        "seconds": round(r.seconds, 2),
        "processes": r.jobs,
        "rate": round(rate),
        "dayOf100kSeconds": round(DAY_OF_100K / rate, 1) if rate > 0 else None,
        # what the processes cost, whatever else ran on the machine: heartbeats per second
        # of one process's CPU time, and so what the cores would do if they were free
        "cpuSeconds": round(r.cpu_seconds, 2),
        "ratePerCpuSecond": round(r.heartbeats / r.cpu_seconds) if r.cpu_seconds else None,
        "rateOnFreeCores": (
            round(r.jobs * r.heartbeats / r.cpu_seconds) if r.cpu_seconds else None
        ),
        "how": "wall time of `arcbeat replay`'s run (processes started, Kafka read "
        "read_committed, every record through the engine, results gathered)",
    }
