"""Every worker's copy of the maintenance windows: the compacted ``<prefix>.maintenance``
topic, read from the start and followed, and the writes of the HTTP API.

A window is one record keyed by its id; ending it early writes the window again with
``endedAt``/``endedBy``. Nothing is ever deleted by arcbeat, so the history stays listable
and a restart or a rebalance loses no window. A record that does not decode is logged and
skipped: the windows already read stay in force.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaProducer

from arcbeat.streams.decide.maintenance import Book, MaintenanceError, Window
from arcbeat.streams.decide.maintenance_codec import decode, encode, record_key
from arcbeat.streams.decide.maintenance_codec import to_json as window_json
from arcbeat.streams.kafka.client import client_options
from arcbeat.streams.kafka.compacted import CompactedReader
from arcbeat.streams.settings import Settings

log = logging.getLogger("arcbeat.maintenance")


class MaintenanceBoard:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topics.maintenance
        self.book = Book()
        self.bad_records = 0
        self._reader = CompactedReader(
            settings, self.topic, name="maintenance", on_record=self._apply
        )
        self._producer: AIOKafkaProducer | None = None

    @property
    def ready(self) -> asyncio.Event:
        """Set once every window there was at start has been read (as the scope board's)."""
        return self._reader.ready

    def _apply(self, key: str, value: bytes | None) -> None:
        try:
            self.book.apply(key, None if value is None else decode(value))
        except MaintenanceError as exc:
            self.bad_records += 1
            log.error("%s: record %r skipped: %s", self.topic, key, exc)

    def relevant(self, now: float) -> list[dict[str, Any]]:
        """The windows a tick at ``now`` carries: those covering any time since one
        availability window, a disconnect period and a hold ago (what a tick may decide or
        close), as JSON. A replay decides with exactly these."""
        s = self.settings
        since = now - (s.timing.window + s.timing.disconnect_after + s.timing.outage_hold)
        return [window_json(w) for w in self.book.all() if w.intervals(since, now + 1.0)]

    async def start(self) -> None:
        await self._reader.start()

    async def stop(self) -> None:
        await self._reader.stop()
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def put(self, window: Window, timeout: float = 15.0) -> None:
        """Store ``window`` (new, or ended early) and wait until this worker applies it, so
        that the caller reads its own write."""
        if self._producer is None:
            self._producer = AIOKafkaProducer(
                bootstrap_servers=self.settings.kafka.bootstrap,
                acks="all",
                enable_idempotence=True,
                client_id=f"{self.settings.kafka.app_id}-maintenance-writer",
                **client_options(self.settings.kafka),
            )
            await self._producer.start()
        meta = await self._producer.send_and_wait(
            self.topic, encode(window), key=record_key(window.id), partition=0
        )
        deadline = time.monotonic() + timeout
        await self._reader.sync(max(0.1, deadline - time.monotonic()), past=meta.offset)
