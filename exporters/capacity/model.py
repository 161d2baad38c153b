"""The capacity checks, their limits and the report (pure data)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from arcbeat.exporters.capacity.settings import CapacitySettings

# Check kinds, as in the metric label `kind` of the arcbeat_capacity_* metrics.
RESOURCE_GROUPS_PER_SUBSCRIPTION: Final = "resource_groups_per_subscription"
MACHINES_PER_RESOURCE_GROUP: Final = "machines_per_resource_group"
TAGS_PER_MACHINE: Final = "tags_per_machine"
TENANT_OBJECTS: Final = "tenant_objects"
KINDS: Final = (
    RESOURCE_GROUPS_PER_SUBSCRIPTION,
    MACHINES_PER_RESOURCE_GROUP,
    TAGS_PER_MACHINE,
    TENANT_OBJECTS,
)

# Alert thresholds (ArcCapacityWarning / ArcCapacityCritical).
WARNING_RATIO: Final = 0.80
CRITICAL_RATIO: Final = 0.95

Level = Literal["ok", "warning", "critical", "over"]


@dataclass(frozen=True, slots=True)
class MachineSummary:
    """What capacity planning needs to know about one machine."""

    subscription_id: str
    resource_group: str
    location: str
    tag_count: int = 0
    os_name: str = ""
    os_version: str = ""
    agent_version: str = ""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> MachineSummary:
        """From a camelCase record (heartbeat, status event or worker API row).

        ``tags`` (an object) or ``tagCount`` give the tag count.
        """
        missing = [k for k in ("subscriptionId", "resourceGroup", "location") if not data.get(k)]
        if missing:
            raise ValueError(
                f"machine record lacks {', '.join(missing)}: capacity needs subscriptionId, "
                f"resourceGroup and location (got keys {sorted(data)})"
            )
        tags = data.get("tags")
        tag_count = len(tags) if isinstance(tags, Mapping) else int(data.get("tagCount", 0) or 0)
        return cls(
            subscription_id=str(data["subscriptionId"]),
            resource_group=str(data["resourceGroup"]),
            location=str(data["location"]),
            tag_count=tag_count,
            os_name=str(data.get("osName") or ""),
            os_version=str(data.get("osVersion") or ""),
            agent_version=str(data.get("agentVersion") or ""),
        )


@dataclass(frozen=True, slots=True)
class CapacityLimits:
    """Limits to compare with; 0 switches a check off (Arc machines are exempt from the
    per-resource-group limit today, so that one is commonly off)."""

    resource_groups_per_subscription: int = 980
    machines_per_resource_group: int = 800
    tags_per_machine: int = 50
    tenant_objects: int = 50_000

    @classmethod
    def from_settings(cls, capacity: CapacitySettings) -> CapacityLimits:
        return cls(
            resource_groups_per_subscription=capacity.limit_resource_groups_per_subscription,
            machines_per_resource_group=capacity.limit_machines_per_resource_group,
            tags_per_machine=capacity.limit_tags_per_machine,
            tenant_objects=capacity.limit_tenant_objects,
        )


@dataclass(frozen=True, slots=True)
class CapacityUse:
    """One check: ``used`` of ``limit`` in ``scope``."""

    kind: str
    scope: str
    used: int
    limit: int
    days_to_limit: float | None = None

    @property
    def headroom(self) -> int:
        return self.limit - self.used

    @property
    def ratio(self) -> float:
        return self.used / self.limit if self.limit > 0 else 0.0

    @property
    def level(self) -> Level:
        if self.used > self.limit:
            return "over"
        if self.ratio >= CRITICAL_RATIO:
            return "critical"
        if self.ratio >= WARNING_RATIO:
            return "warning"
        return "ok"


@dataclass(frozen=True, slots=True)
class OsCount:
    os_name: str
    os_version: str
    machines: int


@dataclass(frozen=True, slots=True)
class CapacityReport:
    generated_at: float
    machines: int
    limits: CapacityLimits
    checks: tuple[CapacityUse, ...]  # sorted: highest ratio first
    machines_per_subscription: Mapping[str, int]
    machines_per_resource_group: Mapping[str, int]  # key "<subscription>/<resource group>"
    machines_per_location: Mapping[str, int]
    max_tags: int
    machines_at_tag_limit: int  # tag count == limit: no tag can be added
    machines_over_tag_limit: int
    unsupported_os: tuple[OsCount, ...]
    unknown_os_machines: int
    supported_os: tuple[str, ...]
    unsupported_regions: Mapping[str, int]
    supported_regions: tuple[str, ...]
    agent_versions: Mapping[str, int]  # newest first
    latest_agent_version: str | None
    machines_not_on_latest_agent: int = 0
    notes: tuple[str, ...] = field(default=())

    @property
    def unsupported_os_machines(self) -> int:
        return sum(o.machines for o in self.unsupported_os)

    @property
    def unsupported_region_machines(self) -> int:
        return sum(self.unsupported_regions.values())

    def check(self, kind: str, scope: str) -> CapacityUse | None:
        for use in self.checks:
            if use.kind == kind and use.scope == scope:
                return use
        return None

    def worst(self, kind: str) -> CapacityUse | None:
        """The scope of ``kind`` closest to its limit."""
        return next((u for u in self.checks if u.kind == kind), None)


def subscription_scope(subscription_id: str) -> str:
    return f"subscription={subscription_id}"


def resource_group_scope(subscription_id: str, resource_group: str) -> str:
    return f"resource_group={subscription_id}/{resource_group}"


TENANT_SCOPE: Final = "tenant"
