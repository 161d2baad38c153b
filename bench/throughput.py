"""Sustained processing rate of one real worker, against raw consumers of the same records.

The records are loaded first (pre-encoded, as fast as the producer goes), so the worker reads
a backlog: its rate is limited by itself, not by the producer. The log has two parts:

- onboarding: rounds interleaved per block of 1,000 machines, so every stretch holds the
  same mix: one first heartbeat (onboarding: a transition, a status record and a new slot)
  per two repeat heartbeats. A fleet goes through this once, when arcbeat is deployed;
- steady state: more heartbeats of the same, now known, machines: what a running fleet sends
  every day (the fast path: the slot's per-heartbeat fields move, nothing is written).

The sustained rate is the steady-state part's; the onboarding part's rate is reported beside
it. The worker runs with the default settings: exactly-once, every partition's outputs and
offsets committed in one transaction every commit_interval.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from arcbeat.bench import pyspy
from arcbeat.bench.context import Bench
from arcbeat.bench.delay_cost import run_delay_cost
from arcbeat.bench.fleetload import FleetEncoder, produce
from arcbeat.bench.kafka_admin import create_deployment_topics
from arcbeat.bench.raw import ConsumeFigures, run_raw
from arcbeat.bench.worker_process import WorkerProcess, metric_value
from arcbeat.deploy.settings import Settings

HEARTBEATS = "arcbeat_heartbeats_received_total"
POLL = 0.25  # seconds between two reads of the worker's counter


# one setting changed from the defaults each (exactly-once is the only processing mode)
VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("no_availability_windows", {"availability_windows": False}),
    ("commit_interval_2s", {"commit_interval": 2.0}),
)


def timeline_stats(timeline: list[tuple[float, float]]) -> dict[str, float]:
    """Longest spell without progress and best 10-second rate, from (seconds, count) samples."""
    stall = longest = 0.0
    for (t0, c0), (t1, c1) in itertools.pairwise(timeline):
        stall = stall + (t1 - t0) if c1 <= c0 else 0.0
        longest = max(longest, stall)
    peak = 0.0
    j = 0
    for i, (t0, c0) in enumerate(timeline):
        j = max(j, i + 1)
        while j < len(timeline) and timeline[j][0] - t0 < 10.0:
            j += 1
        if j < len(timeline):
            t1, c1 = timeline[j]
            peak = max(peak, (c1 - c0) / (t1 - t0))
    return {"longestStallSeconds": round(longest, 2), "peakRate10s": round(peak, 1)}


def segment_rate(timeline: list[tuple[float, float]], lo: float, hi: float) -> float | None:
    """Records per second between the samples where the count first reached ``lo`` and
    ``hi`` (or the last sample); None when the run did not get that far."""
    start = next((pt for pt in timeline if pt[1] >= lo), None)
    if start is None:
        return None
    end = next((pt for pt in timeline if pt[1] >= hi), timeline[-1])
    if end[0] <= start[0]:
        return None
    return (end[1] - start[1]) / (end[0] - start[0])


def _count(w: WorkerProcess) -> float:
    return float(metric_value(w.scrape(timeout=30).body, HEARTBEATS))


def measure_worker(
    b: Bench,
    settings: Settings,
    name: str,
    total: int,
    window: float,
    *,
    profile_seconds: float = 0.0,
    split: int | None = None,
) -> dict[str, Any]:
    """Start a worker on the loaded topic and time it from its first record.

    Ends when it has processed all ``total`` records or after ``window`` seconds of
    consumption, whichever comes first. ``split``: the records before it are the onboarding
    part, the rest the steady state (rated apart; the first 5 % of each left out, as the
    partitions do not cross the boundary at the same moment).
    """
    w = b.worker(settings, name)
    spawned = time.time()
    w.start()
    recorder: pyspy.Recorder | None = None
    try:
        first = 0.0
        while True:  # first consumption: lastEventAt leaves the epoch
            w.check_alive()
            h = w.health()
            if h is not None and h.last_event_at > 0:
                first = time.time()
                break
            if time.time() - spawned > 180:
                raise TimeoutError(f"worker {name}: no record consumed within 180s")
            time.sleep(0.05)
        c0, cpu0, rss0 = _count(w), w.cpu_seconds(), w.rss_kib()
        _, queued0 = w.schedstat()
        t0 = time.time()
        b.say(f"{name}: consuming (startup {first - spawned:.1f}s)")
        if profile_seconds > 0 and pyspy.available():
            recorder = pyspy.Recorder(
                w.pid, min(profile_seconds, window), b.workdir / f"pyspy-{name}.txt"
            )
        timeline: list[tuple[float, float]] = [(0.0, c0)]
        next_say = t0 + 10
        while True:
            time.sleep(POLL)
            w.check_alive()
            now, c = time.time(), _count(w)
            timeline.append((round(now - t0, 2), c))
            if c >= total or now - t0 >= window:
                break
            if now >= next_say:
                back = timeline[max(0, len(timeline) - round(10 / POLL) - 1)]
                rate = (c - back[1]) / max(1e-9, now - t0 - back[0])
                b.say(f"{name}: {c:,.0f}/{total:,} records ({rate:,.0f}/s)")
                next_say = now + 10
        t1 = time.time()
        c1, cpu1, rss1 = c, w.cpu_seconds(), w.rss_kib()
        _, queued1 = w.schedstat()
        transitions = metric_value(
            w.scrape(timeout=30).body, "arcbeat_transitions_total", {"reason": "onboarded"}
        )
    finally:
        profile = recorder.finish() if recorder is not None else None
        w.stop()
    seconds = t1 - t0
    processed = c1 - c0
    # steady: leave out the first 20% of the window (warm-up: JIT-less Python still has
    # first-time costs, fetch pipelines filling up)
    cut = next((pt for pt in timeline if pt[0] >= 0.2 * timeline[-1][0]), timeline[0])
    steady = (c1 - cut[1]) / (timeline[-1][0] - cut[0]) if timeline[-1][0] > cut[0] else 0.0
    out: dict[str, Any] = {
        "settings": {
            "availabilityWindows": settings.worker.availability_windows,
            "commitInterval": settings.worker.commit_interval,
        },
        "startupSeconds": round(first - spawned, 2),
        "records": int(processed),
        "seconds": round(seconds, 2),
        "rate": round(processed / seconds, 1) if seconds > 0 else 0.0,
        "steadyRate": round(steady, 1),
        "caughtUp": c1 >= total,
        "cpuSeconds": round(cpu1 - cpu0, 2),
        "cpuUtilisation": round((cpu1 - cpu0) / seconds, 3) if seconds > 0 else 0.0,
        # ready to run but no CPU free (the machine is shared): time the worker lost to others
        "runQueueShare": round((queued1 - queued0) / seconds, 3) if seconds > 0 else 0.0,
        "cpuMicrosecondsPerRecord": round((cpu1 - cpu0) / processed * 1e6, 1)
        if processed
        else None,
        "machinesOnboarded": int(transitions),
        "rssGrowthKiB": rss1 - rss0,
        "rssGrowthBytesPerRecord": round((rss1 - rss0) * 1024 / processed, 1)
        if processed
        else None,
        **timeline_stats(timeline),
        "timeline": timeline[:: max(1, len(timeline) // 60)],
    }
    if split is not None:
        rest = total - split
        onboarding = segment_rate(timeline, c0 + 0.05 * split, c0 + split)
        steady_state = segment_rate(timeline, c0 + split + 0.05 * rest, c0 + total)
        out["onboardingRate"] = round(onboarding, 1) if onboarding is not None else None
        out["steadyStateRate"] = round(steady_state, 1) if steady_state is not None else None
    if profile_seconds > 0:
        out["pyspy"] = pyspy.profile_json(profile)
    b.say(
        f"{name}: {processed:,.0f} records in {seconds:.1f}s = {out['rate']:,.0f}/s "
        f"(steady {steady:,.0f}/s, CPU {out['cpuUtilisation']:.0%} of a core, waiting for a "
        f"CPU {out['runQueueShare']:.0%} of the time)"
    )
    return out


def _consume_json(c: ConsumeFigures | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {
        "tool": c.tool,
        "records": c.records,
        "seconds": round(c.seconds, 3),
        "rate": round(c.rate, 1),
        "detail": c.detail,
    }


def run_throughput(
    b: Bench,
    machines: int,
    rounds: int,
    window: float,
    *,
    variants: bool,
    profile_seconds: float,
    steady_rounds: int = 10,
    delay_pairs: int = 0,
) -> dict[str, Any]:
    s = b.phase_settings("tput")
    create_deployment_topics(s)
    b.say(
        f"throughput: encoding {machines:,} machines x {rounds} rounds (onboarding), then "
        f"x {steady_rounds} rounds (steady state)"
    )
    fleet = FleetEncoder(s, machines)
    enc = fleet.encode(range(machines), rounds=rounds, block=1000)
    split = enc.count
    fleet.encode(
        range(machines),
        rounds=steady_rounds,
        first_kind="heartbeat",
        first_sequence=rounds,
        into=enc,
    )
    total, size = enc.count, enc.size
    load = asyncio.run(produce(s, s.topics.heartbeats, enc, progress=b.say, label="load"))
    del enc
    b.say("throughput: raw consumers (aiokafka getmany, kcat) over the same records")
    # read_committed, as the worker reads
    _, aio, kc = run_raw(s, s.topics.heartbeats, "read_committed")
    b.say(
        f"aiokafka: {aio.rate:,.0f}/s; kcat: {kc.rate:,.0f}/s"
        if kc
        else f"aiokafka {aio.rate:,.0f}/s"
    )
    worker = measure_worker(
        b, s, "tput", total, window, profile_seconds=profile_seconds, split=split
    )
    # a run too short to rate its steady part apart (bench smoke) is rated whole
    sustained = worker.get("steadyStateRate") or worker.get("rate")
    out: dict[str, Any] = {
        "machines": machines,
        "rounds": rounds,
        "steadyRounds": steady_rounds,
        "records": total,
        "onboardingRecords": split,
        "recordBytes": round(size / total, 1),
        "mix": "onboarding: per block of 1,000 machines 1 first heartbeat (onboarded: "
        "transition, status record, new slot) : 2 repeat heartbeats; then steady state: "
        f"{steady_rounds} more heartbeats of every known machine (fast path: slot fields "
        "updated, nothing written)",
        "window": window,
        "load": {
            "records": load.records,
            "seconds": round(load.seconds, 2),
            "rate": round(load.rate, 1),
        },
        "worker": worker,
        "aiokafka": _consume_json(aio),
        "kcat": _consume_json(kc),
        "sustainedRate": sustained,
        "ratioWorkerToAiokafka": round(sustained / aio.rate, 4) if aio.rate and sustained else None,
    }
    if delay_pairs:
        # the goal fastPathKept: what early warning's delay bookkeeping costs this worker
        def measure(ws: Settings, name: str) -> dict[str, Any]:
            return measure_worker(b, ws, name, total, window, split=split)

        out["delayCost"] = run_delay_cost(measure, s, total, delay_pairs, b.say)
    if variants:
        # Same records, one knob changed each: what the defaults cost.
        out["variants"] = {}
        for name, change in VARIANTS:
            vs = s.replace(app_id=f"{s.kafka.app_id}-{name.replace('_', '-')}", **change)
            out["variants"][name] = measure_worker(
                b, vs, f"tput-{name}", total, max(15.0, window / 3), split=split
            )
    return out
