"""A reader of a one-partition compacted topic: from the beginning, then for as long as the
worker runs, every record handed to a callback (shared scope state, maintenance windows)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from arcbeat.streams.kafka.client import client_options
from arcbeat.streams.settings import Settings

log = logging.getLogger("arcbeat.compacted")

OnRecord = Callable[[str, bytes | None], None]  # key, value (None: a tombstone)


class CompactedReader:
    def __init__(self, settings: Settings, topic: str, *, name: str, on_record: OnRecord) -> None:
        self.settings = settings
        self.topic = topic
        self.name = name
        self.on_record = on_record
        self.position = 0
        self.ready = asyncio.Event()  # set once everything there was at start has been read
        self._tp = TopicPartition(topic, 0)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        s = self.settings
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            client_id=f"{s.kafka.app_id}-{self.name}-reader",
            **client_options(s.kafka),
        )
        await self._consumer.start()
        self._consumer.assign([self._tp])
        await self._consumer.seek_to_beginning(self._tp)
        self._task = asyncio.create_task(self._read(), name=f"arcbeat-{self.name}-reader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    async def sync(self, timeout: float = 30.0, *, past: int | None = None) -> None:
        """Wait until everything committed to the topic so far (or up to offset ``past``) has
        been read."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError(f"the {self.name} reader is not started")
        end = past + 1 if past is not None else (await consumer.end_offsets([self._tp]))[self._tp]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.position < end:
            if loop.time() > deadline:
                raise TimeoutError(
                    f"{self.topic}: read up to offset {self.position} of {end} in {timeout:g}s"
                )
            await asyncio.sleep(0.02)

    async def _read(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        tp = self._tp
        end = (await consumer.end_offsets([tp]))[tp]
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    self.on_record(r.key.decode() if r.key else "", r.value)
            # the position also moves over transaction markers, which carry no record
            self.position = await consumer.position(tp)
            if not self.ready.is_set() and self.position >= end:
                self.ready.set()
                log.info("%s: read %s up to offset %d", self.name, self.topic, self.position)
