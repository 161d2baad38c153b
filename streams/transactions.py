"""Exactly-once outputs for sink topics.

faust-streaming's TransactionManager picks the transactional producer from the *destination*
topic's partition group, which only exists for topics the app consumes; arcbeat's sink topics
(status, DLQ, fleet) are not consumed, so a send would fail with KeyError. arcbeat sends every
output to the same partition number as the heartbeat (or tick) that caused it, and this
patch puts that send into the transaction of the source partition — the same transaction that
commits the source offset and the table changelog writes.
"""

from __future__ import annotations

from typing import Any

from faust.transport.consumer import TransactionManager
from faust.types import TP

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
    _installed = True
