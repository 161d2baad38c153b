"""A million machines in state: worker memory, start and restart to caught-up, /metrics scrape.

State is seeded into the changelog (:mod:`arcbeat.bench.seeding`): the machines table, each
machine with an open availability window, ``disconnected`` of them Disconnected. Timing is long
(interval 1 h, disconnect_after 3 h) so that nothing becomes due while the phase runs: the
figures are those of a quiet, fully loaded worker.

- memory: VmRSS after the worker has recovered the state and caught up, minus VmRSS of an
  idle worker (same settings, empty state), divided by the machines;
- restart: the idle worker is stopped (SIGTERM), the state written to its changelogs, and the
  worker started again: time to caught-up (/healthz: every partition assigned, lag 0, and a
  tick appended after the start processed);
- scrape: GET /metrics (Disconnected machines as per-machine series, capped).
"""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import time
import urllib.request
from typing import Any

from arcbeat.bench.context import Bench
from arcbeat.bench.detection import wait_caught_up
from arcbeat.bench.fleetload import produce_many
from arcbeat.bench.kafka_admin import create_compacted, create_deployment_topics
from arcbeat.bench.seeding import StateSeeder, machines_changelog
from arcbeat.bench.worker_process import WorkerProcess, metric_value, series_count
from arcbeat.streams.status import Status

LONG_INTERVAL = 3600.0


def _settle_rss(w: WorkerProcess, seconds: float = 3.0) -> int:
    """VmRSS after a short quiet spell (the median of a few samples)."""
    samples = []
    for _ in range(max(1, int(seconds))):
        time.sleep(1.0)
        w.check_alive()
        samples.append(w.rss_kib())
    return int(statistics.median(samples))


def _fleet(w: WorkerProcess) -> dict[str, int]:
    with urllib.request.urlopen(w.url + "/fleet?local=1", timeout=60) as r:
        data = json.loads(r.read())
    return {str(k): int(v) for k, v in data.get("byStatus", {}).items()}


def _start_caught_up(b: Bench, w: WorkerProcess, partitions: int, label: str) -> float:
    spawned = time.time()
    w.start()
    b.say(f"{label}: worker started, waiting until caught up")
    ready = wait_caught_up(w, partitions, spawned, timeout=1800.0)
    b.say(f"{label}: caught up in {ready - spawned:.1f}s")
    return float(ready - spawned)


def run_bigstate(b: Bench, machines: int, disconnected: int, *, scrapes: int = 3) -> dict[str, Any]:
    s = b.phase_settings(
        "big", heartbeat_interval=LONG_INTERVAL, disconnect_after=3 * LONG_INTERVAL
    )
    create_deployment_topics(s)
    create_compacted(s, [machines_changelog(s.app_id)])

    # 1. an idle worker: same settings, nothing in state
    idle = b.worker(s, "big-idle")
    try:
        _start_caught_up(b, idle, s.partitions, "memory (idle worker)")
        rss_idle = _settle_rss(idle)
    finally:
        idle.stop()
    b.say(f"memory: idle worker VmRSS {rss_idle / 1024:.0f} MiB")

    # 2. the state: `disconnected` machines spread over the fleet are Disconnected
    now = time.time()
    step = max(1, machines // max(1, disconnected)) if disconnected else 0
    disc = set(range(0, machines, step)[:disconnected]) if disconnected else set()
    seeder = StateSeeder(s, machines)

    def status_of(m: int) -> Status:
        return Status.DISCONNECTED if m in disc else Status.CONNECTED

    def last_of(m: int) -> float:
        if m in disc:
            return float(now - s.disconnect_after - 600.0)
        return float(now - (m / machines) * s.heartbeat_interval)

    def parts() -> Any:
        for table in seeder.chunks(
            range(machines), status_of=status_of, last_heartbeat_of=last_of, window_counts=True
        ):
            yield machines_changelog(s.app_id), table

    b.say(f"memory: seeding {machines:,} machines ({len(disc):,} Disconnected) into the changelogs")
    seeded = asyncio.run(produce_many(s, parts(), progress=b.say, label="seed", total=machines))

    # 3. restart: the idle worker was stopped (SIGTERM); start it again with the state in its
    # changelogs, time it to caught-up; then measure memory and scrape /metrics
    w = b.worker(s, "big")
    try:
        restart_seconds = _start_caught_up(b, w, s.partitions, "restart with state")
        fleet = _fleet(w)
        rss = _settle_rss(w)
        hwm = w.hwm_kib()
        b.say(f"memory: VmRSS {rss / 1024:.0f} MiB with {sum(fleet.values()):,} machines")
        times, body = [], b""
        for i in range(scrapes):
            got = w.scrape(timeout=300)
            times.append(got.seconds)
            body = got.body
            b.say(f"scrape {i + 1}/{scrapes}: {got.seconds:.2f}s, {len(body) / 1e6:.1f} MB")
        rss_after_scrape = w.rss_kib()
        cpu = w.cpu_seconds()
        stop_seconds = w.stop(signal.SIGTERM)
    finally:
        w.stop()
    tracked = sum(fleet.values())
    offline_series = series_count(body, b"arcbeat_machine_offline{")
    return {
        "machines": machines,
        "disconnected": len(disc),
        "seeded": {"records": seeded.records, "seconds": round(seeded.seconds, 1)},
        "timing": {
            "heartbeatInterval": s.heartbeat_interval,
            "disconnectAfter": s.disconnect_after,
        },
        "fleetAfterRestart": fleet,
        "memory": {
            "rssIdleKiB": rss_idle,
            "rssKiB": rss,
            "hwmKiB": hwm,
            "rssAfterScrapesKiB": rss_after_scrape,
            "bytesPerMachine": round((rss - rss_idle) * 1024 / tracked, 1) if tracked else None,
        },
        "restartSeconds": round(restart_seconds, 2),
        "restartMethod": "worker stopped with SIGTERM, state in its changelogs, started again; "
        "time from process start to /healthz with every partition, lag 0 and a tick "
        "appended after the start processed",
        "workerCpuSeconds": round(cpu, 1),
        "stopSeconds": round(stop_seconds, 2),
        "scrape": {
            "seconds": [round(t, 3) for t in times],
            "median": round(statistics.median(times), 3) if times else None,
            "bytes": len(body),
            "series": series_count(body),
            "arcbeatSeries": series_count(body, b"arcbeat_"),
            "offlineSeries": offline_series,
            "offlineCap": s.max_machine_series,
            "overflow": metric_value(body, "arcbeat_machine_series_overflow"),
        },
    }
