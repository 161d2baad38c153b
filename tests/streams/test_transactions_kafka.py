"""A partition's outputs sent in its transaction, against the local stack's Kafka: a few
records, and many (a released location's, over several batches); each lands in order on its
partition (the source partition's number; the scope board's one partition), once, when the
transaction commits."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from arcbeat.deploy.stack import Stack
from arcbeat.streams.kafka import transactions
from arcbeat.streams.kafka.owned import Owned
from tests.support.kafka import read_topic

pytestmark = pytest.mark.services

P = 2  # the source partition


async def _flush_and_commit(
    bootstrap: str, sends: list[tuple[str, bytes | None, bytes | None]], board: str
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=f"test-txn-{uuid.uuid4().hex[:8]}",
        enable_idempotence=True,
        max_batch_size=64 * 1024,  # so that many records fill several batches
    )
    await producer.start()
    try:
        o = Owned(P, TopicPartition("hb", P), producer=producer)
        o.sends.extend(sends)
        await transactions.flush(o, board)
        assert o.sends == [] and o.in_txn
        await producer.commit_transaction()
    finally:
        await producer.stop()


async def _topics(bootstrap: str, *specs: tuple[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, n, 1) for name, n in specs])
    finally:
        await admin.close()


@pytest.mark.parametrize("records", [10, 3 * transactions.SEND_STEP])
async def test_outputs_land_in_order_on_their_partitions(stack: Stack, records: int) -> None:
    bootstrap = stack.settings.kafka.bootstrap
    run = uuid.uuid4().hex[:8]
    status, fleet, board = f"test-txn-{run}.status", f"test-txn-{run}.fleet", f"test-txn-{run}-b"
    await _topics(bootstrap, (status, 4), (fleet, 4), (board, 1))
    sends: list[tuple[str, bytes | None, bytes | None]] = []
    for n in range(records):
        sends.append((status, f"m{n}".encode(), b"%d:" % n + b"x" * (n % 700)))
        if n % 7 == 0:
            sends.append((board, f"scope{n}".encode(), b"%d" % n))
        if n % 50 == 0:
            sends.append((fleet, None, b"%d" % n))
    await _flush_and_commit(bootstrap, sends, board)

    for topic, partition in ((status, P), (fleet, P), (board, 0)):
        got = read_topic(bootstrap, topic)
        assert {r.partition for r in got} == {partition}
        want = [(k, v) for t, k, v in sends if t == topic]
        assert [(r.key, r.value) for r in got] == want, topic
