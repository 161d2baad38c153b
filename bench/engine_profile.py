"""The engine alone: ``Engine.handle_message`` over pre-encoded records, in this process.

No Kafka, no Faust: a dict is the table. This is the ceiling of the decision logic itself
(decode, status machine, state encode, index, status record), and cProfile says where its
time goes. The same record mix as the throughput phase.
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
from arcbeat.streams.engine import Engine
from arcbeat.streams.partitioner import KeyPartitioner
from arcbeat.streams.settings import Settings


def _records(settings: Settings, machines: int, rounds: int) -> list[tuple[int, bytes, bytes]]:
    enc = FleetEncoder(settings, machines).encode(range(machines), rounds=rounds, block=1000)
    # back into log order per block: interleave partitions the way one consumer would see them
    out: list[tuple[int, bytes, bytes]] = []
    for p, records in sorted(enc.by_partition.items()):
        out.extend((p, k, v) for k, v, _ in records)
    return out


def _run(settings: Settings, records: list[tuple[int, bytes, bytes]]) -> tuple[Engine, float]:
    store: dict[str, bytes] = {}
    engine = Engine(settings, store)
    handle = engine.handle_message
    topic = settings.heartbeats_topic
    now = time.time()
    t0 = time.perf_counter()
    for i, (p, key, value) in enumerate(records):
        handle(p, i, key, value, now + i * 1e-5, topic=topic, wall_now=now)
    return engine, time.perf_counter() - t0


def _state_bytes(engine: Engine) -> int:
    store: Any = engine.store
    total = sys.getsizeof(store)
    for k, v in store.items():
        total += sys.getsizeof(k) + sys.getsizeof(v)
    return total


def _index_bytes(settings: Settings, store: dict[str, bytes]) -> tuple[int, int]:
    """Bytes allocated by the table values as stored, and by ``Engine.rebuild``'s index."""
    compact = {k: bytes(memoryview(v)) for k, v in store.items()}  # exact-size copies
    partitioner = KeyPartitioner(settings.partitions)
    parts = {k: int(partitioner(k.encode())) for k in compact}
    gc.collect()
    tracemalloc.start()
    engine = Engine(settings, compact)
    engine.rebuild(range(settings.partitions), parts.__getitem__)
    index, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del engine
    return index, len(compact)


def _value_allocation(snapshot: tracemalloc.Snapshot, machines: int) -> float | None:
    """Average block size of the allocation site that holds one block per machine and the
    most bytes: the encoded table values (``encode_machine``)."""
    best: tracemalloc.Statistic | None = None
    for stat in snapshot.statistics("lineno"):
        frame = stat.traceback[0]
        if (
            stat.count == machines
            and frame.filename.endswith("machines.py")
            and (best is None or stat.size > best.size)
        ):
            best = stat
    return round(best.size / best.count, 1) if best is not None else None


def run_engine_profile(settings: Settings, machines: int, rounds: int = 3) -> dict[str, Any]:
    records = _records(settings, machines, rounds)
    gc.collect()
    engine, seconds = _run(settings, records)
    n = len(records)
    table_bytes = _state_bytes(engine)
    del engine
    gc.collect()

    # memory: what the engine keeps per machine (table values + derived index)
    tracemalloc.start()
    engine, _ = _run(settings, records)
    traced, _peak = tracemalloc.get_traced_memory()
    snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()
    store: dict[str, bytes] = engine.store
    values = list(store.values())
    value_sizes = [sys.getsizeof(v) for v in values]
    # what the allocator holds for the stored values (tracemalloc sees the real block size)
    value_alloc = _value_allocation(snapshot, len(values))
    index_bytes, tracked = _index_bytes(settings, store)
    del engine, store, values
    gc.collect()

    profiler = cProfile.Profile()
    profiler.enable()
    _run(settings, records)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total_time = max(1e-9, sum(row[2] for row in stats.stats.values()))  # type: ignore[attr-defined]
    top: list[dict[str, Any]] = []
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    rows = [row for row in rows if "/bench/" not in row[0][0]]  # the harness itself
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in rows[:15]:
        where = filename.rsplit("/", 2)
        top.append(
            {
                "function": f"{func} ({'/'.join(where[-2:])}:{line})",
                "calls": ncalls,
                "selfShare": round(tottime / total_time, 4),
                "selfMicrosecondsPerRecord": round(tottime / n * 1e6, 2),
                "cumulativeShare": round(cumtime / total_time, 4),
            }
        )
    return {
        "machines": machines,
        "records": n,
        "seconds": round(seconds, 3),
        "rate": round(n / seconds, 1),
        "microsecondsPerRecord": round(seconds / n * 1e6, 2),
        "tableBytesPerMachine": round(table_bytes / machines, 1),
        "engineBytesPerMachine": round(traced / machines, 1),
        "storedValueBytes": round(sum(value_sizes) / max(1, len(value_sizes)), 1),
        "storedValueAllocationBytes": value_alloc,
        "rebuiltIndexBytesPerMachine": round(index_bytes / max(1, tracked), 1),
        "profile": top,
    }
