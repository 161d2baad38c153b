"""Exactly-once outputs for sink topics.

faust-streaming's TransactionManager picks the transactional producer from the *destination*
topic's partition group, which only exists for topics the app consumes; arcbeat's sink topics
(status, DLQ, fleet) are not consumed, so a send would fail with KeyError. arcbeat sends every
output to the same partition number as the heartbeat (or tick) that caused it, and this
patch puts that send into the transaction of the source partition — the same transaction that
commits the source offset and the table changelog writes.
"""

from __future__ import annotations

import logging
from typing import Any

from faust.transport.consumer import TransactionManager
from faust.types import TP

log = logging.getLogger("arcbeat.transactions")
_installed = False


def install_source_partition_transactions() -> None:
    global _installed
    if _installed:
        return
    original = TransactionManager.send

    async def send(
        self: TransactionManager,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
        *,
        transactional_id: str | None = None,
    ) -> Any:
        from faust.streams import current_event

        assignor: Any = self.app.assignor  # faust's concrete assignor: _topic_groups
        if topic in assignor._topic_groups:  # a table changelog or consumed topic
            return await original(
                self,
                topic,
                key,
                value,
                partition,
                timestamp,
                headers,
                transactional_id=transactional_id,
            )
        event = current_event()
        if event is None:
            raise RuntimeError(
                f"arcbeat: transactional send to {topic} outside of stream processing"
            )
        src: TP = event.message.tp
        tid = f"{self.app.conf.id}-{assignor.group_for_topic(src.topic)}-{src.partition}"
        return await self.producer.send(
            topic,
            key,
            value,
            partition if partition is not None else src.partition,
            timestamp,
            headers,
            transactional_id=tid,
        )

    TransactionManager.send = send  # type: ignore[method-assign]
    _install_broker_highwaters()
    _install_concurrent_commits()
    _installed = True


def _install_concurrent_commits() -> None:
    """Commit the partitions' transactions concurrently, not one after the other.

    faust gives every partition its own transactional producer and commits them in a loop:
    three broker round trips each (offsets, EndTxn, a new transaction), during which sends
    to that partition wait. With a dozen partitions a commit took a dozen times longer than
    one; each producer keeps its own lock, so running them together changes no ordering.
    """
    import asyncio

    from faust.transport.drivers.aiokafka import Producer

    async def commit_transactions(
        self: Producer,
        tid_to_offset_map: Any,
        group_id: str,
        start_new_transaction: bool = True,
    ) -> None:
        async def one(transactional_id: str, offsets: Any) -> None:
            async with self._trn_locks[transactional_id]:
                producer = self._transaction_producers.get(transactional_id)
                if producer is None:  # as faust: a partition revoked meanwhile
                    log.warning("commit invoked for unknown transaction %s", transactional_id)
                    return
                await producer.send_offsets_to_transaction(offsets, group_id)
                await producer.commit_transaction()
                if start_new_transaction:
                    await producer.begin_transaction()

        await asyncio.gather(*(one(tid, offs) for tid, offs in tid_to_offset_map.items()))

    Producer.commit_transactions = commit_transactions  # type: ignore[method-assign]


def _install_broker_highwaters() -> None:
    """Changelog highwaters from the broker when the consumer has not fetched them yet.

    Under exactly-once, faust takes a partition's highwater from the consumer's cached Last
    Stable Offset, which is unknown (None, read as -1) right after a rebalance until the
    partition is fetched again; table recovery then fails with ConsistencyError ("persisted
    offset ... is higher than the last offset", robinhood/faust#658) and the worker crashes
    when a second worker joins. For those partitions only, a read_committed consumer's
    ``end_offsets`` asks the broker for the same Last Stable Offset (the cached values stay
    in use otherwise: the lag gauge reads them every tick).
    """
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    original = AIOKafkaConsumerThread._highwaters

    async def _highwaters(self: AIOKafkaConsumerThread, partitions: Any) -> Any:
        if not self.consumer.in_transaction:
            return await original(self, partitions)
        consumer = self._ensure_consumer()
        out = {tp: consumer.last_stable_offset(tp) for tp in partitions}
        unknown = [tp for tp, lso in out.items() if lso is None]
        if unknown:
            out.update(await consumer.end_offsets(unknown))
        return out

    AIOKafkaConsumerThread._highwaters = _highwaters  # type: ignore[method-assign]
