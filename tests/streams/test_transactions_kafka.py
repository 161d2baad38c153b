"""A partition's outputs sent in its transaction, against the local stack's Kafka: a few
records, and many (a released location's, over several batches); each lands in order on its
partition (the source partition's number; the scope board's one partition), once, when the
transaction commits."""

from __future__ import annotations

import asyncio
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


async def test_a_background_commit_takes_what_was_sealed_and_no_more(stack: Stack) -> None:
    """The loop goes on processing while a sealed transaction commits: what it produces
    meanwhile waits for the next transaction, and the offset committed is the sealed one."""
    bootstrap = stack.settings.kafka.bootstrap
    run = uuid.uuid4().hex[:8]
    hb, status, board = f"test-txn-{run}.hb", f"test-txn-{run}.status", f"test-txn-{run}-b"
    group = f"test-txn-{run}"
    await _topics(bootstrap, (hb, P + 1), (status, P + 1), (board, 1))
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=f"test-txn-{run}",
        enable_idempotence=True,
    )
    await producer.start()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        o = Owned(P, TopicPartition(hb, P), producer=producer)
        first = [(status, b"m%d" % n, b"first %d" % n) for n in range(5)]
        o.sends.extend(first)
        o.position = 10
        sealed = await transactions.seal(o, board, None)
        assert (sealed.position, sealed.written, o.sends) == (10, None, [])
        committing = asyncio.create_task(transactions.finish(producer, o, sealed, group))
        # processed while it commits: kept for the next transaction
        later = [(status, b"m%d" % n, b"later %d" % n) for n in range(3)]
        o.sends.extend(later)
        o.position = 20
        transactions.committed(o, await committing)
        assert (o.committed, o.in_txn, len(o.sends)) == (10, False, 3)
        offsets = await admin.list_consumer_group_offsets(group)
        assert offsets[o.tp].offset == 10
        assert [r.value for r in read_topic(bootstrap, status)] == [v for _, _, v in first]

        transactions.committed(o, await transactions.finish(
            producer, o, await transactions.seal(o, board, None), group
        ))  # fmt: skip
        assert o.committed == 20
        offsets = await admin.list_consumer_group_offsets(group)
        assert offsets[o.tp].offset == 20
        got = read_topic(bootstrap, status)
        assert [r.value for r in got] == [v for _, _, v in first + later]
        assert {r.partition for r in got} == {P}
    finally:
        await admin.close()
        await producer.stop()
