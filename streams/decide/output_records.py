"""The records a partition's processing writes (docs/status-and-api.md): StatusChanged,
ScopeSilent and ScopeRecovered, PartitionSnapshot, WindowCounts, each built as its JSON.

The heartbeat contract and the DLQ record are in :mod:`.records`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import orjson

from arcbeat.streams.decide import compact_json
from arcbeat.streams.decide.deadlines import ScopeCounts
from arcbeat.streams.decide.machines import MachineInfo
from arcbeat.streams.decide.status import Transition
from arcbeat.streams.decide.timestamps import rfc3339, rfc3339_of

Topic = Literal["status", "dlq", "fleet"]
CountKey = tuple[str, str, str, str]  # status, location, os_type, subscription_id


@dataclass(frozen=True, slots=True)
class Emit:
    """One record to write: its output topic (by role), key and value."""

    topic: Topic
    key: bytes | None
    value: bytes


def status_changed(
    key: str,
    info: MachineInfo,
    tr: Transition,
    changed_at: float,
    delay: float | None,
    maintenance: str | None,
) -> Emit:
    """A machine's transition, emitted at ``changed_at`` (``tr.at`` is when it was decided)."""
    record = {
        "type": "StatusChanged",
        # the decision time keeps ids unique across a Deleted -> re-onboarded machine
        "transitionId": f"{key}#{tr.number}@{round(tr.at * 1000)}",
        "resourceId": info.resource_id,
        "subscriptionId": info.subscription_id,
        "resourceGroup": info.resource_group,
        "machineName": info.machine_name,
        "location": info.location,
        "osType": info.os_type,
        "agentVersion": info.agent_version,
        "tags": info.tags,
        # StrEnums: orjson writes their values (no .value lookups: a release writes thousands)
        "previousStatus": tr.previous,
        "status": tr.status,
        "reason": tr.reason,
        "changedAt": rfc3339(changed_at),
        "decidedAt": rfc3339(tr.at),
        "lastHeartbeatAt": rfc3339_of(tr.last_heartbeat_at),
        "detectionDelaySeconds": delay,
        "flapping": tr.flapping,
        "massOutage": tr.mass_outage,
        # the maintenance window the machine was in when declared (planned: no page)
        "maintenance": maintenance,
    }
    # a release writes thousands at once: each at its exact size
    return Emit("status", key.encode(), compact_json.dumps(record))


def scope_changed(scope: str, silent: bool, total: ScopeCounts, now: float) -> Emit:
    """A scope's mass-silence verdict flipped: ScopeSilent or ScopeRecovered."""
    return Emit(
        "status",
        f"scope:{scope}".encode(),
        orjson.dumps(
            {
                "type": "ScopeSilent" if silent else "ScopeRecovered",
                "scope": scope,
                "machines": total.late,
                "connected": total.connected,
                "at": rfc3339(now),
            }
        ),
    )


def partition_snapshot(p: int, counts: Mapping[CountKey, int], at: float) -> Emit:
    """A partition's machines by status, per scope (the fleet, each location and
    subscription)."""
    scopes: dict[str, Counter[str]] = {}
    for (status, location, _os, sub), n in counts.items():
        for scope in ("fleet", f"location={location}", f"subscription={sub}"):
            scopes.setdefault(scope, Counter())[status] += n
    return Emit(
        "fleet",
        f"partition:{p}".encode(),
        orjson.dumps(
            {
                "type": "PartitionSnapshot",
                "partition": p,
                "at": rfc3339(at),
                "scopes": {s: dict(c) for s, c in scopes.items()},
            }
        ),
    )


def window_counts(
    key: str,
    info: MachineInfo,
    start: float,
    end: float,
    received: int,
    expected: int,
    planned: float,
) -> Emit:
    """A machine's heartbeats in one availability window, against those expected."""
    return Emit(
        "fleet",
        key.encode(),
        orjson.dumps(
            {
                "type": "WindowCounts",
                "resourceId": info.resource_id,
                "subscriptionId": info.subscription_id,
                "location": info.location,
                "windowStart": rfc3339(start),
                "windowEnd": rfc3339(end),
                "received": received,
                "expected": expected,
                "plannedSeconds": round(planned, 3),
            }
        ),
    )
