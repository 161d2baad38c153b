"""The names of a deployment's Kafka topics, in one value (see docs/operations.md, The parts,
topics and state): derived from ``topic_prefix`` (the pipeline's public topics) and ``app_id``
(the worker group's own state)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    heartbeats: str  # the agents' heartbeats (and the workers' ticks)
    status: str  # StatusChanged and scope events
    dlq: str  # rejected heartbeats with the reason
    fleet: str  # availability windows and partition snapshots
    maintenance: str  # maintenance windows (compacted)
    checkpoints: str  # the workers' per-partition checkpoints (compacted)
    scopes: str  # the workers' shared scope state (compacted)

    @classmethod
    def of(cls, prefix: str, app_id: str) -> Topics:
        return cls(
            heartbeats=f"{prefix}.heartbeats",
            status=f"{prefix}.status",
            dlq=f"{prefix}.heartbeats.dlq",
            fleet=f"{prefix}.fleet",
            maintenance=f"{prefix}.maintenance",
            checkpoints=f"{app_id}-checkpoints",
            scopes=f"{app_id}-scopes",
        )
