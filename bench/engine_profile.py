"""The engine alone: ``Engine.handle_message`` over pre-encoded records, in this process.

No Kafka: the per-partition state in memory is all there is. This is the ceiling of the
decision logic itself (decode, status machine, slot update, status record), and cProfile says
where its time goes. Figures:

- the throughput mix (per block of 1,000 machines: one first heartbeat, two repeats);
- the fast path: one more heartbeat of every known Connected machine (nothing durable
  changes: only the slot's per-heartbeat fields move), against the same records with the
  fast path switched off (every heartbeat through ``on_message`` and a new slot);
- the fast path's share kept with early warning, the engine alone: the same heartbeats
  through an engine that keeps the delivery-delay bookkeeping and one without it
  (``delivery_delays=false``), interleaved in the same process, best of five each (the goal
  ``fastPathKept`` is the worker's ratio: :mod:`arcbeat.bench.delay_cost`);
- memory: what processing allocates per machine, and the slot itself;
- checkpoints: encoding every partition's state, decoding and restoring it (what a restart
  costs before it replays the log), and a tick over the state.
"""

from __future__ import annotations

import cProfile
import gc
import pstats
import sys
import time
import tracemalloc
from typing import Any

from arcbeat.bench.fleetload import FleetEncoder
from arcbeat.streams.decide.engine import Engine
from arcbeat.streams.kafka import checkpoint
from arcbeat.streams.settings import Settings

Records = list[tuple[int, bytes, bytes]]


def _log_order(enc: Any) -> Records:
    # partition by partition, the way one consumer's batches hand them to the engine
    out: Records = []
    for p, records in sorted(enc.by_partition.items()):
        out.extend((p, k, v) for k, v, _, _ in records)
    return out


def _records(settings: Settings, machines: int, rounds: int) -> tuple[Records, Records]:
    """The throughput mix, and one more heartbeat of every machine after it."""
    fleet = FleetEncoder(settings, machines)
    mix = fleet.encode(range(machines), rounds=rounds, block=1000)
    more = fleet.encode(range(machines), rounds=1, first_kind="heartbeat", first_sequence=rounds)
    return _log_order(mix), _log_order(more)


def _fast_path_kept(
    settings: Settings, machines: int, rounds: int, mix: Records, start: float, runs: int = 5
) -> dict[str, Any]:
    """Fast-path rate with early warning's delay bookkeeping against without it."""
    fleet = FleetEncoder(settings, machines)
    batches = [
        _log_order(
            fleet.encode(range(machines), rounds=1, first_kind="heartbeat", first_sequence=s)
        )
        for s in range(rounds, rounds + runs)
    ]
    engines = {
        True: Engine(settings.replace(delivery_delays=True)),
        False: Engine(settings.replace(delivery_delays=False)),
    }
    for e in engines.values():
        _run(e, settings, mix, start)
    best = {True: float("inf"), False: float("inf")}
    for j, batch in enumerate(batches):
        # alternate which goes first, so that neither always meets a warmer cache
        for on in (True, False) if j % 2 == 0 else (False, True):
            gc.collect()
            best[on] = min(best[on], _run(engines[on], settings, batch, start + 1 + j))
    n = len(batches[0])
    with_rate, without_rate = n / best[True], n / best[False]
    return {
        "rateWithEarlyWarning": round(with_rate, 1),
        "rateWithoutEarlyWarning": round(without_rate, 1),
        "kept": round(with_rate / without_rate, 3),
        "how": f"best of {runs} interleaved runs of {n:,} fast-path heartbeats each, "
        "same process and records; without: delivery_delays=false, the fast path less the "
        "delivery-delay bookkeeping (the engine alone: not the goal fastPathKept, which is "
        "the worker's)",
    }


def _run(engine: Engine, settings: Settings, records: Records, start: float) -> float:
    handle = engine.handle_message
    topic = settings.topics.heartbeats
    t0 = time.perf_counter()
    for i, (p, key, value) in enumerate(records):
        handle(p, i, key, value, start + i * 1e-5, topic=topic, wall_now=start)
    return time.perf_counter() - t0


def _profile(fn: Any, n: int, top: int = 15) -> list[dict[str, Any]]:
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    stats: Any = pstats.Stats(profiler)
    total_time = max(1e-9, sum(row[2] for row in stats.stats.values()))
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)
    rows = [row for row in rows if "/bench/" not in row[0][0]]  # the harness itself
    out: list[dict[str, Any]] = []
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in rows[:top]:
        where = filename.rsplit("/", 2)
        out.append(
            {
                "function": f"{func} ({'/'.join(where[-2:])}:{line})",
                "calls": ncalls,
                "selfShare": round(tottime / total_time, 4),
                "selfMicrosecondsPerRecord": round(tottime / n * 1e6, 2),
                "cumulativeShare": round(cumtime / total_time, 4),
            }
        )
    return out


def _slot_bytes(engine: Engine) -> float:
    """Average bytes of a machine's key, slot and record (sizes of the objects themselves)."""
    total = n = 0
    for idx in engine.partitions.values():
        for key, slot in idx.machines.items():
            total += sys.getsizeof(key) + sys.getsizeof(slot) + sys.getsizeof(slot.rec)
            n += 1
    return total / n if n else 0.0


def _checkpoint_figures(engine: Engine, settings: Settings, machines: int) -> dict[str, Any]:
    """Encode every partition's state as a checkpoint, decode it, restore it into a new engine."""
    t0 = time.perf_counter()
    encoded = {p: checkpoint.encode(idx, p, 0) for p, idx in engine.partitions.items()}
    t_encode = time.perf_counter() - t0
    size = sum(len(r) for records in encoded.values() for r in records)
    fresh = Engine(settings)
    t0 = time.perf_counter()
    decoded = {p: checkpoint.decode(records) for p, records in encoded.items()}
    t_decode = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p, restored in decoded.items():
        checkpoint.restore(fresh, p, restored)
    t_restore = time.perf_counter() - t0
    # a tick over the restored state: what each replayed or live tick costs
    now = time.time()
    ticks = 0
    t0 = time.perf_counter()
    for p in fresh.partitions:
        for j in range(20):
            fresh.handle_tick(p, now + j * 1e-3, {}, wall_now=now, decided_at=0.0)
            ticks += 1
    t_tick = time.perf_counter() - t0
    count_keys = max(len(idx.counts) for idx in fresh.partitions.values())
    return {
        "bytesPerMachine": round(size / machines, 1),
        "encodeMicrosecondsPerMachine": round(t_encode / machines * 1e6, 2),
        "decodeMicrosecondsPerMachine": round(t_decode / machines * 1e6, 2),
        "restoreMicrosecondsPerMachine": round(t_restore / machines * 1e6, 2),
        "tickMicroseconds": round(t_tick / ticks * 1e6, 1),
        "machinesPerPartition": round(machines / max(1, len(fresh.partitions))),
        "countKeysPerPartition": count_keys,
    }


def run_engine_profile(settings: Settings, machines: int, rounds: int = 3) -> dict[str, Any]:
    mix, more = _records(settings, machines, rounds)
    start = time.time()

    # the throughput mix, then the fast path (one more heartbeat per machine)
    gc.collect()
    engine = Engine(settings)
    seconds = _run(engine, settings, mix, start)
    fast_seconds = _run(engine, settings, more, start + 1)
    slot_bytes = _slot_bytes(engine)
    ckpt = _checkpoint_figures(engine, settings, machines)
    del engine
    gc.collect()

    # the same extra heartbeats through the general path (fast path off)
    slow = Engine(settings, fast_path=False)
    _run(slow, settings, mix, start)
    slow_seconds = _run(slow, settings, more, start + 1)
    del slow
    gc.collect()

    kept = _fast_path_kept(settings, machines, rounds, mix, start)
    gc.collect()

    # memory: what building the state by processing leaves allocated per machine
    tracemalloc.start()
    engine = Engine(settings)
    _run(engine, settings, mix, start)
    traced, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del engine
    gc.collect()

    def mix_run() -> None:
        _run(Engine(settings), settings, mix, start)

    warm = Engine(settings)
    _run(warm, settings, mix, start)

    def fast_run() -> None:
        _run(warm, settings, more, start + 2)

    profile = _profile(mix_run, len(mix))
    fast_profile = _profile(fast_run, len(more))
    n = len(mix)
    return {
        "machines": machines,
        "records": n,
        "seconds": round(seconds, 3),
        "rate": round(n / seconds, 1),
        "microsecondsPerRecord": round(seconds / n * 1e6, 2),
        "fastPath": {
            "records": len(more),
            "rate": round(len(more) / fast_seconds, 1),
            "microsecondsPerRecord": round(fast_seconds / len(more) * 1e6, 2),
            "generalPathMicrosecondsPerRecord": round(slow_seconds / len(more) * 1e6, 2),
            "earlyWarning": kept,
        },
        "engineBytesPerMachine": round(traced / machines, 1),
        "slotBytesPerMachine": round(slot_bytes, 1),
        "checkpoint": ckpt,
        "profile": profile,
        "fastPathProfile": fast_profile,
    }
