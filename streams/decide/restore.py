"""A partition's indexes derived from its restored machines in one pass (a checkpoint's
machines and rows: :mod:`arcbeat.streams.kafka.checkpoint`), without decoding a record.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Final

from arcbeat.streams.decide.deadlines import next_look
from arcbeat.streams.decide.degradation import part_scope
from arcbeat.streams.decide.machines import from_slot, scopes_of_location
from arcbeat.streams.decide.partition_index import PartitionIndex
from arcbeat.streams.decide.status import Status, Timing, deadline_of, flap_window

ADOPT_STEP: Final = 5_000  # machines restored between two yields of the event loop (~20 ms)
# per machine: status, location, os type, subscription, last status change, held since
IndexRow = tuple[str, str, str, str, float, float | None]
_STATUS: Final = {s.value: s for s in Status}


def build_index(
    idx: PartitionIndex,
    rows: Sequence[IndexRow],
    late: set[str],
    timing: Timing,
    late_after: float,
    counters_for: Callable[[PartitionIndex, str, str], list[float]],
    step: int = ADOPT_STEP,
) -> Iterator[int]:
    """Fill ``idx``'s indexes from its machines and their ``rows`` (in the machines' order);
    yields the machines done so far every ``step`` machines, and once at the end."""
    counts, windows = idx.counts, idx.windows
    schedule = idx.wheel.schedule
    # a machine's flap window is that of its last status change: one changed before the
    # window of the previous tick cannot be flapping now, so only the others are decoded
    previous_tick = idx.previous_tick
    recent = -math.inf if previous_tick is None else flap_window(previous_tick, timing)
    done = 0
    for (key, slot), (status, location, os_type, sub, changed, held) in zip(
        idx.machines.items(), rows, strict=True
    ):
        counts[(status, location, os_type, sub)] += 1
        st = _STATUS[status]
        if st is Status.DISCONNECTED:
            idx.disconnected.add(key)
            if changed >= recent:
                idx.mark_flapping(key, from_slot(slot).state, timing.flap_threshold)
        if held is not None:
            idx.hold(key, location)
        if key in late:
            idx.late.add(key)
            for s in scopes_of_location(location):
                idx.late_by_scope[s] += 1
            idx.late_by_part[part_scope(sub, location)] += 1
        if slot.wstart is not None:
            windows.setdefault(slot.wstart, set()).add(key)
        slot.loc = counters_for(idx, location, sub)
        at = deadline_of(st, slot.hb, changed, held, timing)
        if at is not None:
            # watched even if late: a late machine's look comes first
            watch = st is Status.CONNECTED and held is None
            schedule(key, next_look(at, slot.hb, late_after, watch=watch))
        done += 1
        if done % step == 0:
            yield done
    idx.counts_changed()
    yield done
