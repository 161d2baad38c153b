"""Table classes arcbeat needs beyond faust's own."""

from __future__ import annotations

import time
from heapq import heappop
from typing import Any

import faust


class PerPartitionWindowTable(faust.Table[Any, Any]):
    """A windowed table that closes each partition's windows on their own.

    faust keeps a single ``last_closed_window`` for the whole table: once one partition closes
    a window, the same window of every other partition is dropped without ``on_window_close``
    (robinhood/faust#662), so most machines would never report their window counts. Each
    windowed key is closed exactly once here, when its partition's window goes stale.
    """

    async def _del_old_keys(self) -> None:
        window: Any = self.window
        for partition, timestamps in self._partition_timestamps.items():
            while timestamps and window.stale(timestamps[0], time.time()):
                timestamp = heappop(timestamps)
                keys = self._partition_timestamp_keys.pop((partition, timestamp), None)
                for key in keys or ():
                    value = self.data.pop(key, None)
                    if value is not None:
                        await self.on_window_close(key, value)
