"""How far behind the log's end the owned partitions are, and whether the worker is ready
(``/readyz``): read everything that was in the log ``ready_max_lag`` ago (at least up to the
end as of the previous tick), with Kafka answering."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping

from aiokafka import AIOKafkaConsumer

from arcbeat.streams.kafka.owned import Owned


class LogEnds:
    """The heartbeats log's end per owned partition, as read at the latest tick."""

    def __init__(self, max_lag: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_lag = max_lag  # ready_max_lag
        self.clock = clock
        self.end_offsets: dict[int, int] = {}
        # the log ends as read at each tick (monotonic time, ends), oldest first, back to the
        # newest read at least max_lag old: a worker that has read that far is ready
        self.history: deque[tuple[float, dict[int, int]]] = deque()
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
        self.end_offsets = {tp.partition: end for tp, end in ends.items()}
        self.ends_at = now = self.clock()
        history = self.history
        history.append((now, self.end_offsets))
        while len(history) > 2 and history[1][0] <= now - self.max_lag:
            history.popleft()

    def lag(self, owned: Mapping[int, Owned]) -> dict[int, int]:
        return {
            p: max(0, end - o.position)
            for p, end in self.end_offsets.items()
            if (o := owned.get(p)) is not None
        }

    def behind(self, o: Owned) -> bool:
        """Whether the partition has not read up to its log end as read at the previous
        tick: it is more than a tick behind (the latest end is not asked: the tick just
        written is read a moment later)."""
        if len(self.history) < 2:
            return False
        end = self.history[-2][1].get(o.p)
        return end is not None and o.position < end

    def readiness(
        self, owned: Mapping[int, Owned], last_loop_at: float, check_interval: float
    ) -> tuple[bool, str]:
        """Ready once every owned partition is recovered and has read what was in the log
        ``max_lag`` ago, or at least up to the end as of the previous tick (the loop has
        started and read the scope board: the caller's check)."""
        if not owned:
            return False, "no partitions"
        if any(o.state == "recovering" for o in owned.values()):
            return False, "recovering"
        if not self.end_offsets:
            return False, "catching up: lag unknown"
        # the log's end is known from a recent tick, and the loop polls: else Kafka is away
        stale = max(10.0, 5 * check_interval)
        now = self.clock()
        if now - self.ends_at > stale:
            return False, f"waiting for Kafka: log end not read for {now - self.ends_at:.0f}s"
        if now - last_loop_at > stale:
            return False, f"waiting for Kafka: no poll for {now - last_loop_at:.0f}s"
        lag = sum(self.lag(owned).values())
        replaying = [o for o in owned.values() if o.state == "replaying"]
        if replaying or (lag > 0 and not self._read_far_enough(owned, now)):
            return False, f"catching up: lag {lag}"
        return True, "ready"

    def _read_far_enough(self, owned: Mapping[int, Owned], now: float) -> bool:
        """Every owned partition read up to its log end as read ``max_lag`` ago (the newest
        read at least that old), or as first read since it was assigned when that is younger;
        never the latest read: the tick just written is read a moment later, and must not
        make readiness flicker. What is left arrived after it (a tick, a burst being worked
        off)."""
        earlier = list(self.history)[:-1]
        if not earlier:
            return False
        threshold = now - self.max_lag
        for p, o in owned.items():
            end: int | None = None
            for at, ends in earlier:  # oldest first
                if p not in ends:
                    continue
                if end is not None and at > threshold:
                    break
                end = ends[p]
            if end is None or o.position < end:
                return False
        return True
