"""How far behind the log's end the owned partitions are, and whether the worker is ready
(``/readyz``): read up to within one tick of the end, with Kafka answering."""

from __future__ import annotations

import time
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer

from arcbeat.streams.kafka.owned import Owned


class LogEnds:
    """The heartbeats log's end per owned partition, as read at the latest tick."""

    def __init__(self) -> None:
        self.end_offsets: dict[int, int] = {}
        # the log ends read one tick earlier: a worker that has read that far is within one
        # tick of the log end, which is ready (the tick just written is read a moment later)
        self.previous_ends: dict[int, int] = {}
        self.ends_at = 0.0  # monotonic time end_offsets were read

    async def refresh(self, consumer: AIOKafkaConsumer | None, owned: Mapping[int, Owned]) -> None:
        if consumer is None or not owned:
            self.end_offsets = {}
            return
        tps = [o.tp for o in owned.values()]
        try:
            ends = await consumer.end_offsets(tps)
        except Exception:  # reporting only; never let it stop ticking (readiness sees it)
            return
        self.previous_ends = self.end_offsets
        self.end_offsets = {tp.partition: end for tp, end in ends.items()}
        self.ends_at = time.monotonic()

    def lag(self, owned: Mapping[int, Owned]) -> dict[int, int]:
        return {
            p: max(0, end - o.position)
            for p, end in self.end_offsets.items()
            if (o := owned.get(p)) is not None
        }

    def readiness(
        self, owned: Mapping[int, Owned], last_loop_at: float, check_interval: float
    ) -> tuple[bool, str]:
        """Ready once every owned partition is recovered and read up to within one tick of
        the log's end (the loop has started and read the scope board: the caller's check)."""
        if not owned:
            return False, "no partitions"
        if any(o.state == "recovering" for o in owned.values()):
            return False, "recovering"
        if not self.end_offsets:
            return False, "catching up: lag unknown"
        # the log's end is known from a recent tick, and the loop polls: else Kafka is away
        stale = max(10.0, 5 * check_interval)
        now = time.monotonic()
        if now - self.ends_at > stale:
            return False, f"waiting for Kafka: log end not read for {now - self.ends_at:.0f}s"
        if now - last_loop_at > stale:
            return False, f"waiting for Kafka: no poll for {now - last_loop_at:.0f}s"
        lag = sum(self.lag(owned).values())
        replaying = [o for o in owned.values() if o.state == "replaying"]
        if replaying or (lag > 0 and not self._within_one_tick(owned)):
            return False, f"catching up: lag {lag}"
        return True, "ready"

    def _within_one_tick(self, owned: Mapping[int, Owned]) -> bool:
        """Every owned partition read up to its log end as of the previous tick: what is left
        is at most the latest tick (and what arrived with it), read a moment later."""
        ends = self.previous_ends
        return all(p in ends and o.position >= ends[p] for p, o in owned.items()) and len(ends) > 0
