"""A heartbeats partition this worker owns (its phase, offsets, producer, pending sends),
and one it gave back but may get again."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaProducer, TopicPartition

from arcbeat.streams.decide.deadlines import ScopeCounts
from arcbeat.streams.decide.partition_index import PartitionIndex
from arcbeat.streams.kafka.checkpoint import Pointer

if TYPE_CHECKING:
    from arcbeat.streams.kafka.transactions import Sealed


@dataclass
class Owned:
    """A heartbeats partition this worker was assigned."""

    p: int
    tp: TopicPartition
    state: str = "recovering"  # recovering -> replaying -> live
    producer: AIOKafkaProducer | None = None
    in_txn: bool = False
    # its sealed transaction committing in the background (None: none); the loop goes on
    # processing it meanwhile, and sends its new records once the commit is done
    committing: asyncio.Task[Sealed] | None = None
    position: int = 0  # next offset to process
    committed: int = -1  # offset committed with its outputs
    replay_until: int = 0  # outputs of records before this offset were committed already
    pointer: Pointer | None = None
    # monotonic time of the latest checkpoint, or of the latest one skipped because the state
    # had not moved (its turn comes again a checkpoint_interval later: turns stay spread out)
    checkpoint_at: float = 0.0
    written_at: float = 0.0  # monotonic time of the latest checkpoint written
    # the state moved since the latest checkpoint: a heartbeat, or a tick that looked at a
    # machine, emitted a machine's record or brought other maintenance windows
    changed: bool = True
    # only quiet ticks (as for ``changed``) were read since the latest commit
    quiet: bool = False
    committed_at: float = 0.0  # monotonic time of the latest commit
    tick_records: int = 0  # records its latest tick emitted (a burst defers its checkpoint)
    sends: list[tuple[str, bytes | None, bytes | None]] = field(default_factory=list)
    published: dict[str, ScopeCounts] = field(default_factory=dict)


@dataclass
class Parked:
    """A revoked partition's state, kept in case the next assignment gives it back."""

    idx: PartitionIndex
    position: int
