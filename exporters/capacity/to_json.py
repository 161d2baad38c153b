"""The ``arcbeat capacity --json`` document of a report."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from arcbeat.exporters.capacity.model import (
    MACHINES_PER_RESOURCE_GROUP,
    RESOURCE_GROUPS_PER_SUBSCRIPTION,
    TAGS_PER_MACHINE,
    TENANT_OBJECTS,
    CapacityReport,
    CapacityUse,
)


def iso_utc(ts: float) -> str:
    """Unix seconds as RFC 3339 UTC with a ``Z``."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _use_dict(u: CapacityUse) -> dict[str, Any]:
    return {
        "kind": u.kind,
        "scope": u.scope,
        "used": u.used,
        "limit": u.limit,
        "headroom": u.headroom,
        "ratio": round(u.ratio, 6),
        "level": u.level,
        "daysToLimit": None if u.days_to_limit is None else round(u.days_to_limit, 3),
    }


def report_to_dict(report: CapacityReport) -> dict[str, Any]:
    """The ``arcbeat capacity --json`` document (camelCase, like the wire format)."""
    return {
        "generatedAt": iso_utc(report.generated_at),
        "machines": report.machines,
        "limits": {
            RESOURCE_GROUPS_PER_SUBSCRIPTION: report.limits.resource_groups_per_subscription,
            MACHINES_PER_RESOURCE_GROUP: report.limits.machines_per_resource_group,
            TAGS_PER_MACHINE: report.limits.tags_per_machine,
            TENANT_OBJECTS: report.limits.tenant_objects,
        },
        "checks": [_use_dict(u) for u in report.checks],
        "machinesPerSubscription": dict(report.machines_per_subscription),
        "machinesPerResourceGroup": dict(report.machines_per_resource_group),
        "machinesPerLocation": dict(report.machines_per_location),
        "tags": {
            "max": report.max_tags,
            "limit": report.limits.tags_per_machine,
            "machinesAtLimit": report.machines_at_tag_limit,
            "machinesOverLimit": report.machines_over_tag_limit,
        },
        "unsupportedOs": {
            "machines": report.unsupported_os_machines,
            "unknown": report.unknown_os_machines,
            "supported": list(report.supported_os),
            "byOs": [
                {"osName": o.os_name, "osVersion": o.os_version, "machines": o.machines}
                for o in report.unsupported_os
            ],
        },
        "unsupportedRegions": {
            "machines": report.unsupported_region_machines,
            "supported": list(report.supported_regions),
            "byLocation": dict(report.unsupported_regions),
        },
        "agentVersions": {
            "latest": report.latest_agent_version,
            "machinesNotOnLatest": report.machines_not_on_latest_agent,
            "byVersion": dict(report.agent_versions),
        },
        "notes": list(report.notes),
    }


def report_to_json(report: CapacityReport) -> str:
    return orjson.dumps(report_to_dict(report), option=orjson.OPT_INDENT_2).decode() + "\n"
