"""M machines in state, all through the live path: worker memory, /metrics scrape, restart to
caught-up, and catch-up after the workers were stopped.

The state is what a real worker builds from the heartbeats topic: a day's worth of ticks
(the control records workers append every check_interval, produced in bulk), then every
machine's first three heartbeats (a connect and two heartbeats), produced as fast as the
producer goes while one worker processes them. Timing is long (interval 1 h, disconnect_after
3 h) so that nothing becomes due while the phase runs: the figures are those of a quiet,
fully loaded worker.

- memory: VmRSS of that worker after it caught up, minus its VmRSS before the load (the
  same process, started empty), divided by the machines it holds;
- scrape: GET /metrics of that worker;
- restart: once every partition has a checkpoint that covers the whole state, the fleet's
  own load for one checkpoint_interval (at the default heartbeat interval) is produced and
  processed: the log a restart replays at most. The worker is then stopped (SIGTERM) and
  started again: time from the process's start to /readyz 200. The log before the
  checkpoints (the day of ticks, the heartbeats that built the state) is never read again,
  so the same restart after a week of uptime replays no more than this one;
- catch-up (:func:`run_catchup`): the worker stopped, two heartbeats per machine are waiting
  (ten minutes of the fleet at a 5-minute interval), the worker started: time to /readyz 200.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from arcbeat.bench.context import Bench
from arcbeat.bench.fleetload import Encoded, FleetEncoder, produce_many, tick_chunks
from arcbeat.bench.kafka_admin import Committed, committed_offsets, create_deployment_topics
from arcbeat.bench.raw import end_offsets, read_to_end
from arcbeat.bench.startup import fleet_size
from arcbeat.bench.worker_process import (
    WorkerProcess,
    heartbeats_received,
    metric_value,
    series_count,
    wait_processed,
)
from arcbeat.streams.settings import Settings

LONG_INTERVAL = 3600.0
DAY = 86_400.0
CHUNK_MACHINES = 50_000  # machines encoded at a time (a million never sit in memory at once)
RECOVERED = re.compile(r"recovered partitions \[[^\]]*\] in ([\d.]+)s \((\d+) machines\)")


@dataclass
class BigDeployment:
    """What the catch-up phase reuses of the big-state phase."""

    settings: Settings
    worker: WorkerProcess
    machines: int
    next_sequence: int  # the next heartbeat sequence every machine may send


def _settle_rss(w: WorkerProcess, seconds: float = 3.0) -> int:
    """VmRSS after a short quiet spell (the median of a few samples)."""
    samples = []
    for _ in range(max(1, int(seconds))):
        time.sleep(1.0)
        w.check_alive()
        samples.append(w.rss_kib())
    return int(statistics.median(samples))


def heartbeat_chunks(
    enc: FleetEncoder,
    machines: range,
    *,
    rounds: int,
    first_kind: str,
    first_sequence: int,
) -> Iterator[Encoded]:
    """Heartbeats of ``machines``, ``CHUNK_MACHINES`` a time, rounds interleaved per block of
    1,000 machines."""
    for start in range(machines.start, machines.stop, CHUNK_MACHINES):
        yield enc.encode(
            range(start, min(start + CHUNK_MACHINES, machines.stop)),
            rounds=rounds,
            first_kind=first_kind,
            first_sequence=first_sequence,
            block=1000,
        )


def _produce(
    b: Bench, s: Settings, chunks: Iterator[Encoded], label: str, total: int
) -> dict[str, Any]:
    topic = s.topics.heartbeats
    figures = asyncio.run(
        produce_many(
            s, ((topic, c) for c in chunks), progress=b.say, label=label, total=total,
            progress_every=10.0,
        )
    )  # fmt: skip
    return {
        "records": figures.records,
        "seconds": round(figures.seconds, 1),
        "rate": round(figures.rate, 1),
    }


def recovery_lines(log: str) -> list[dict[str, float]]:
    """The worker's "recovered partitions ... in Xs (N machines)" lines (log level info)."""
    return [
        {"seconds": float(m.group(1)), "machines": int(m.group(2))} for m in RECOVERED.finditer(log)
    ]


def _log_since(w: WorkerProcess, offset: int) -> str:
    try:
        with w.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _log_size(w: WorkerProcess) -> int:
    try:
        return w.log_path.stat().st_size
    except OSError:
        return 0


def wait_checkpoints(
    s: Settings,
    covering: dict[int, int],
    timeout: float,
    say: Callable[[str], None],
    label: str = "restart",
) -> dict[int, Committed]:
    """Until every partition's latest checkpoint was taken at or after ``covering[p]``."""
    deadline = time.monotonic() + timeout
    next_say = time.monotonic() + 15
    while True:
        got = committed_offsets(s, s.kafka.partitions)
        short = [
            p
            for p, end in covering.items()
            if (c := got.get(p)) is None or c.pointer is None or c.pointer.offset < end
        ]
        if not short:
            return got
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"partitions {short} have no checkpoint covering the state after {timeout:.0f}s"
            )
        if time.monotonic() >= next_say:
            say(f"{label}: waiting for the checkpoints of partitions {short}")
            next_say = time.monotonic() + 15
        time.sleep(1.0)


def _replay(committed: dict[int, Committed]) -> dict[str, int]:
    """Records between each partition's checkpoint and its committed offset (what a restart
    replays), and records before the checkpoints (what it never reads again)."""
    replay = skipped = 0
    for c in committed.values():
        if c.pointer is not None:
            replay += max(0, c.offset - c.pointer.offset)
            skipped += c.pointer.offset
        else:
            replay += max(0, c.offset)
    return {"replayRecords": replay, "recordsBeforeCheckpoints": skipped}


def _offsets(s: Settings, topic: str) -> int:
    return sum(asyncio.run(end_offsets(s, topic)).values())


WEEK = 7 * DAY


def _week(
    s: Settings,
    restart_seconds: float,
    board_growth: float,
    replay: dict[str, int],
    live_n: int,
    newer: int,
) -> dict[str, Any]:
    """A restart after a week of uptime, from the design and this run's figures.

    What a restart reads: the latest checkpoint (its size follows the machines, not the
    uptime), the heartbeats log after it (at most checkpoint_interval of it: the measured
    restart replayed exactly that much of the fleet's own load), and the whole shared scope
    state topic. That topic is compacted, but compaction cleans only rolled segments (7 days
    or 256 MiB by default), and the decider writes one decision record (plus its transaction
    marker) per tick: within a week every one of them is still there to read. So the estimate
    is the measured restart plus the time to read what a week adds to that topic beyond what
    this restart read, at the rate this machine reads it.
    """
    offsets_now, records_now, read_seconds = asyncio.run(read_to_end(s, s.topics.scopes))
    rate = offsets_now / read_seconds if read_seconds > 0 else 0.0
    week_offsets = board_growth * WEEK
    extra = max(0.0, week_offsets - offsets_now)
    extra_seconds = extra / rate if rate > 0 else None
    full = replay["replayRecords"] >= live_n and newer == 0
    seconds = (
        round(restart_seconds + extra_seconds, 1) if extra_seconds is not None and full else None
    )
    how = (
        f"the restart replayed one checkpoint_interval of the fleet's load, the most a restart "
        f"after any uptime replays; what a week adds is the shared scope state: it grew "
        f"{board_growth:.2f} offsets/s while the worker ran in real time, "
        f"{week_offsets:,.0f} in a week (this restart read {offsets_now:,}), read at "
        f"{rate:,.0f} offsets/s: +{extra_seconds or 0:.1f}s"
    )
    if not full:
        how = (
            "not estimated: a checkpoint was taken after the load, so the measured restart "
            "replayed less than a checkpoint interval of the fleet's load"
        )
    return {
        "seconds": seconds,
        "scopesTopic": {
            "offsets": offsets_now,
            "records": records_now,
            "readSeconds": round(read_seconds, 2),
            "growthOffsetsPerSecond": round(board_growth, 2),
            "weekOffsets": round(week_offsets),
        },
        "how": how,
    }


def _restart(b: Bench, w: WorkerProcess, s: Settings, label: str) -> dict[str, Any]:
    """Stop the worker (SIGTERM), start it again, time it to /readyz 200."""
    stop_seconds = w.stop()
    committed = committed_offsets(s, s.kafka.partitions)
    replay = _replay(committed)
    b.say(
        f"{label}: worker stopped in {stop_seconds:.1f}s; {replay['replayRecords']:,} records "
        f"after the checkpoints to replay, {replay['recordsBeforeCheckpoints']:,} before them"
    )
    log_at = _log_size(w)
    w.start()
    ready = w.wait_ready(1800.0, progress=b.say, label=label)
    seconds = ready - w.started_at
    held = fleet_size(w)
    b.say(f"{label}: ready {seconds:.1f}s after start with {held:,} machines")
    return {
        "seconds": round(seconds, 2),
        "stopSeconds": round(stop_seconds, 2),
        "replay": replay,
        "recovery": recovery_lines(_log_since(w, log_at)),
        "machinesAfter": held,
        "committed": committed,
    }


def run_bigstate(
    b: Bench,
    machines: int,
    *,
    tick_hours: float = 24.0,
    checkpoint_interval: float | None = None,
    scrapes: int = 3,
    keep: Callable[[BigDeployment], None] | None = None,
) -> dict[str, Any]:
    s = b.phase_settings(
        "big",
        heartbeat_interval=LONG_INTERVAL,
        disconnect_after=3 * LONG_INTERVAL,
        checkpoint_interval=checkpoint_interval or b.settings.worker.checkpoint_interval,
    )
    create_deployment_topics(s)
    enc = FleetEncoder(s, machines)
    ticks_per_partition = max(1, round(tick_hours * 3600 / s.timing.check_interval))
    ticks = ticks_per_partition * s.kafka.partitions
    w = b.worker(s, "big", loglevel="info")

    # 1. the worker, empty
    w.start()
    w.wait_ready(300.0, progress=b.say, label="big-state worker")
    rss_idle = _settle_rss(w)
    b.say(f"memory: empty worker VmRSS {rss_idle / 1024:.0f} MiB")

    # 2. the state, through the live path: ticks first, then 3 heartbeats per machine
    total_hb = 3 * machines
    b.say(
        f"big state: producing {ticks:,} ticks ({tick_hours:g} h of {s.kafka.partitions} "
        f"partitions) and {total_hb:,} heartbeats of {machines:,} machines; the worker processes "
        "them"
    )
    t_load = time.time()
    cpu0 = w.cpu_seconds()
    load = _produce(
        b,
        s,
        itertools.chain(
            tick_chunks(s.kafka.partitions, ticks_per_partition),
            heartbeat_chunks(
                enc, range(machines), rounds=3, first_kind="connect", first_sequence=0
            ),
        ),
        "big state",
        ticks + total_hb,
    )
    ends_after_load = asyncio.run(end_offsets(s, s.topics.heartbeats))
    wait_processed(w, total_hb, 7200.0, progress=b.say, label="big-state worker", every=20.0)
    ready = w.wait_ready(1800.0, progress=b.say, label="big-state worker")
    build_seconds = ready - t_load
    build_cpu = w.cpu_seconds() - cpu0
    held = fleet_size(w)
    b.say(
        f"big state: {held:,} machines in state {build_seconds:.0f}s after the load started "
        f"({(total_hb + ticks) / build_seconds:,.0f} records/s)"
    )

    # 3. memory and /metrics of the worker that built the state
    rss = _settle_rss(w)
    hwm = w.hwm_kib()
    b.say(f"memory: VmRSS {rss / 1024:.0f} MiB with {held:,} machines")
    times, body = [], b""
    for i in range(scrapes):
        got = w.scrape(timeout=300)
        times.append(got.seconds)
        body = got.body
        b.say(f"scrape {i + 1}/{scrapes}: {got.seconds:.2f}s, {len(body) / 1e6:.1f} MB")

    # 4. every partition checkpointed with the whole state in it; meanwhile, how fast the
    # shared scope state grows while the worker runs in real time (one decision a tick)
    board = s.topics.scopes
    t_wait = time.monotonic()
    board0 = _offsets(s, board)
    before = wait_checkpoints(s, ends_after_load, s.worker.checkpoint_interval + 120.0, b.say)
    checkpoint_wait = time.monotonic() - t_wait
    time.sleep(max(0.0, 10.0 - checkpoint_wait))
    board_growth = (_offsets(s, board) - board0) / (time.monotonic() - t_wait)
    b.say(f"restart: every partition checkpointed the state ({checkpoint_wait:.0f}s wait)")

    # 5. restart right after the checkpoints: the restore alone (and the few ticks since)
    quick_restart = _restart(b, w, s, "restart after the checkpoints")
    rss_restored = _settle_rss(w)
    restored = quick_restart["machinesAfter"]

    # 6. the fleet's own load for one checkpoint interval, processed: the most a restart
    # replays (the restore set the next checkpoint a checkpoint_interval away)
    fleet_interval = b.settings.timing.heartbeat_interval
    live_n = min(machines, max(1, round(machines * s.worker.checkpoint_interval / fleet_interval)))
    c0 = heartbeats_received(w)
    t_live = time.monotonic()
    live = _produce(
        b,
        s,
        heartbeat_chunks(enc, range(live_n), rounds=1, first_kind="heartbeat", first_sequence=3),
        "restart load",
        live_n,
    )
    wait_processed(w, c0 + live_n, 1800.0, progress=b.say, label="big-state worker")
    w.wait_ready(600.0, progress=b.say, label="big-state worker")
    live["processedSeconds"] = round(time.monotonic() - t_live, 1)

    # 7. stop, then restart to ready with that log to replay
    cpu_total = w.cpu_seconds()
    full = _restart(b, w, s, "restart with a checkpoint interval to replay")
    newer = sum(
        1
        for p, c in full["committed"].items()
        if c.pointer is not None
        and (old := before.get(p)) is not None
        and old.pointer is not None
        and c.pointer.id != old.pointer.id
    )
    w.stop()
    replay = full["replay"]
    restart_seconds = full["seconds"]
    week = _week(s, restart_seconds, board_growth, replay, live_n, newer)
    b.say(f"restart after a week (estimate): {week['seconds']}s")
    if keep is not None:
        keep(BigDeployment(s, w, machines, next_sequence=4))

    offline_series = series_count(body, b"arcbeat_machine_offline{")
    return {
        "machines": machines,
        "timing": {
            "heartbeatInterval": s.timing.heartbeat_interval,
            "disconnectAfter": s.timing.disconnect_after,
            "checkpointInterval": s.worker.checkpoint_interval,
        },
        "load": {
            "ticks": ticks,
            "tickHours": tick_hours,
            "heartbeats": total_hb,
            **load,
        },
        "build": {
            "seconds": round(build_seconds, 1),
            "recordsPerSecond": round((total_hb + ticks) / build_seconds, 1),
            "heartbeatsPerSecond": round(total_hb / build_seconds, 1),
            "workerCpuSeconds": round(build_cpu, 1),
            "method": "from the first record produced to /readyz 200 with every record "
            "processed (the worker processes while the producer writes)",
        },
        "machinesInState": held,
        "memory": {
            "rssIdleKiB": rss_idle,
            "rssKiB": rss,
            "hwmKiB": hwm,
            "rssRestoredKiB": rss_restored,
            "bytesPerMachine": round((rss - rss_idle) * 1024 / held, 1) if held else None,
            "bytesPerMachineRestored": (
                round((rss_restored - rss_idle) * 1024 / restored, 1) if restored else None
            ),
        },
        "scrape": {
            "seconds": [round(t, 3) for t in times],
            "median": round(statistics.median(times), 3) if times else None,
            "bytes": len(body),
            "series": series_count(body),
            "arcbeatSeries": series_count(body, b"arcbeat_"),
            "offlineSeries": offline_series,
            "offlineCap": s.worker.max_machine_series,
            "overflow": metric_value(body, "arcbeat_machine_series_overflow"),
        },
        "checkpointWaitSeconds": round(checkpoint_wait, 1),
        "liveLoad": {
            "heartbeats": live_n,
            "fleetHeartbeatInterval": fleet_interval,
            **live,
        },
        "replay": {**replay, "newerCheckpoints": newer},
        "restartSeconds": restart_seconds,
        "restartAfterWeek": week,
        "recovery": full["recovery"],
        "machinesAfterRestart": full["machinesAfter"],
        "stopSeconds": full["stopSeconds"],
        "restartAfterCheckpoint": {
            k: v for k, v in quick_restart.items() if k not in ("committed", "machinesAfter")
        },
        "workerCpuSeconds": round(cpu_total, 1),
        "restartMethod": "every partition checkpointed with the state, the worker stopped "
        "(SIGTERM) and started again (restart after the checkpoints); then one "
        "checkpoint_interval of the fleet's own heartbeats processed, the worker stopped and "
        "started again (restart): time from the process's start to /readyz 200",
    }


def run_catchup(b: Bench, big: BigDeployment, *, rounds: int = 2) -> dict[str, Any]:
    """The big-state worker stopped; ``rounds`` heartbeats per machine produced meanwhile; the
    worker started again: time from its start to /readyz 200."""
    s, w, machines = big.settings, big.worker, big.machines
    enc = FleetEncoder(s, machines)
    waiting = rounds * machines
    b.say(f"catch-up: {waiting:,} heartbeats produced while the worker is stopped")
    load = _produce(
        b,
        s,
        heartbeat_chunks(
            enc,
            range(machines),
            rounds=rounds,
            first_kind="heartbeat",
            first_sequence=big.next_sequence,
        ),
        "catch-up load",
        waiting,
    )
    committed = committed_offsets(s, s.kafka.partitions)
    ends = asyncio.run(end_offsets(s, s.topics.heartbeats))
    behind = sum(max(0, ends.get(p, 0) - c.offset) for p, c in committed.items())
    replay = _replay(committed)
    log_at = _log_size(w)
    w.start()
    try:
        ready = w.wait_ready(3600.0, progress=b.say, label="catch-up")
        seconds = ready - w.started_at
        cpu = w.cpu_seconds()
        recovered = recovery_lines(_log_since(w, log_at))
        held = fleet_size(w)
        rss = w.rss_kib()
    finally:
        w.stop()
    b.say(f"catch-up: ready {seconds:.1f}s after start ({behind:,} records behind)")
    return {
        "machines": machines,
        "heartbeatsWaiting": waiting,
        "load": load,
        "recordsBehind": behind,
        "replay": replay,
        "seconds": round(seconds, 2),
        "recovery": recovered,
        "recordsPerSecond": round((behind + replay["replayRecords"]) / seconds, 1),
        "workerCpuSeconds": round(cpu, 1),
        "machinesAfter": held,
        "rssKiB": rss,
        "method": "Worker stopped (SIGTERM) after the restart; two heartbeats per machine "
        "produced; worker started: time from the process's start to /readyz 200",
    }
