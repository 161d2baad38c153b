"""Kafka records -> InfluxDB line protocol, as pure functions (no I/O, no clock).

Input is the decoded JSON wire format of the status records (docs/status-and-api.md) and the
``<prefix>.fleet`` contract (the wire format is the contract, so this module does not depend on how
the stream processor models records in Python). Every point's timestamp is the record's own time in
nanoseconds, never "now": writing the same record twice writes the same series at the same
timestamp, which InfluxDB treats as an overwrite. That is what makes re-delivery after a crash or an
InfluxDB outage idempotent.

Measurements (database/bucket ``arcbeat``)::

    transitions   tags resource_id (lower case), status, previous_status ("none" on
                  onboarding), reason, location, subscription_id, resource_group, os_type,
                  mass_outage ("true"/"false")
                  fields machine_name (string), transition_id (string), detection_delay
                  (float s, 0 if none), last_heartbeat_at (float unix s), flapping (bool),
                  maintenance (string: the window the machine was in, "" when none)
                  time = changedAt
    scope_events  tags scope, type (ScopeSilent/ScopeRecovered, ScopeDegraded/
                  ScopeDegradationCleared); field machines (int);
                  time = at
    fleet         tags scope, partition; fields connected, disconnected, expired (int);
                  time = snapshot at (aligned by the worker, so sum() over partitions per
                  time bucket is the fleet)
    availability  tags resource_id, subscription_id, location; fields received, expected
                  (int), availability (float, received/expected; absent when expected is 0),
                  planned_seconds (float s of the window inside maintenance windows, 0 if
                  none); time = windowStart. received and expected already leave planned time
                  out, so availability excludes planned downtime.
    capacity      tags kind, scope; fields used, limit (int), ratio (float, absent when
                  limit is 0); time = at (aligned by the emitter)
    maintenance   tag window_id; fields reason, created_by, selector (the selector as JSON),
                  recurrence (the weekly schedule as JSON, "" for a one-off window),
                  ended_by ("" unless ended early) (strings), start, end (float unix s;
                  end is when the window was ended if that was earlier, never before start);
                  time = start. One point per window: a change (a window ended early)
                  overwrites it. A recurring window is one point over its whole span; its
                  occurrences are in the recurrence field.

Capacity snapshots travel on ``<prefix>.fleet`` as
``{"type": "CapacitySnapshot", "at": "<RFC3339>", "kind": "...", "scope": "...",
"used": n, "limit": n}``. Maintenance windows are the values of the compacted
``<prefix>.maintenance`` topic (``{"id": "mw-...", "selector": {...}, "start": "<RFC3339>",
"end": "<RFC3339>", "recurrence": null | {...}, "reason": "...", "createdBy": "...",
"createdAt": "<RFC3339>", "endedBy": null | "...", "endedAt": null | "<RFC3339>"}``, no
``type``); :func:`maintenance_points` converts one.

Line protocol escaping follows InfluxDB 1.x's parser (also used by 2.x): in measurement
names commas and spaces are escaped; in tag keys, tag values and field keys commas, spaces
and equals signs are escaped and any other backslash is literal; in string field values
double quotes and backslashes are escaped. Two things cannot be written as a tag value at
all and raise :class:`PointError`: a line break, and a backslash that ends the value or
precedes a comma, space or equals sign. Empty tag values are omitted (line protocol has no
empty tag). The validated identifiers arcbeat uses as tags never contain either.

InfluxQL to read it back (also in :data:`QUERIES`)::

    -- last transitions (newest first)
    SELECT machine_name, transition_id, status, previous_status, reason, detection_delay
      FROM transitions WHERE time > now() - 1d ORDER BY time DESC LIMIT 100
    -- fleet by status over time (sum over the partitions of each aligned snapshot)
    SELECT sum(connected) AS connected, sum(disconnected) AS disconnected,
           sum(expired) AS expired
      FROM fleet WHERE scope = 'fleet' AND time > now() - 1d GROUP BY time(10s)
    -- availability of one machine per window (planned downtime excluded, and beside it)
    SELECT received, expected, availability, planned_seconds FROM availability
      WHERE resource_id = '<lower-case resource id>' AND time > now() - 7d
    -- maintenance windows that started in the last 30 days
    SELECT window_id, reason, created_by, selector, "end" FROM maintenance
      WHERE time > now() - 30d
    -- capacity use over time
    SELECT last(used) AS used, last("limit") AS "limit", last(ratio) AS ratio
      FROM capacity WHERE time > now() - 30d GROUP BY time(1h), kind, scope
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

import orjson

__all__ = [
    "QUERIES",
    "RECORD_TYPES",
    "PointError",
    "capacity_line",
    "decode",
    "escape_field_key",
    "escape_measurement",
    "escape_string_field",
    "escape_tag",
    "format_line",
    "maintenance_points",
    "record_to_lines",
    "rfc3339_to_ns",
    "value_to_lines",
]

FieldValue = str | int | float | bool

# Reasons counted in arcbeat_history_skipped_total{reason}.
REASON_EMPTY: Final = "empty"  # tombstone / empty value
REASON_INVALID_JSON: Final = "invalid_json"
REASON_UNKNOWN_TYPE: Final = "unknown_type"
REASON_SCHEMA: Final = "schema"  # a required field missing or of the wrong type
REASON_UNREPRESENTABLE: Final = "unrepresentable"  # value line protocol cannot carry
REASON_REJECTED: Final = "rejected"  # InfluxDB refused the point itself (HTTP 400)


class PointError(ValueError):
    """A record that cannot become a point. ``reason`` is the metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# --------------------------------------------------------------------------------------------
# escaping

_MEASUREMENT_SPECIAL = re.compile(r"([, ])")
_TAG_SPECIAL = re.compile(r"([,= ])")
# A backslash 1.x's parser would read as an escape (or as escaping the separator after it).
_TAG_BAD_BACKSLASH = re.compile(r"\\(?=[,= ]|$)")


def escape_measurement(name: str) -> str:
    if not name or "\n" in name or "\r" in name:
        raise PointError(REASON_UNREPRESENTABLE, f"bad measurement name {name!r}")
    return _MEASUREMENT_SPECIAL.sub(r"\\\1", name)


def escape_tag(value: str) -> str:
    """Escape a tag key or tag value; raises PointError for what 1.x cannot carry."""
    if "\n" in value or "\r" in value:
        raise PointError(
            REASON_UNREPRESENTABLE,
            f"tag {value!r} contains a line break, which line protocol cannot carry in a tag",
        )
    if _TAG_BAD_BACKSLASH.search(value):
        raise PointError(
            REASON_UNREPRESENTABLE,
            f"tag {value!r} has a backslash at its end or before ',', ' ' or '=', "
            "which InfluxDB's line protocol parser cannot carry",
        )
    return _TAG_SPECIAL.sub(r"\\\1", value)


escape_field_key = escape_tag


def escape_string_field(value: str) -> str:
    """A string field value, quotes included."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _format_field(key: str, value: FieldValue) -> str:
    k = escape_field_key(key)
    if isinstance(value, bool):  # before int: bool is an int subclass
        return f"{k}={'true' if value else 'false'}"
    if isinstance(value, int):
        return f"{k}={value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PointError(REASON_UNREPRESENTABLE, f"field {key} is {value!r}")
        return f"{k}={value!r}"
    return f"{k}={escape_string_field(value)}"


def format_line(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, FieldValue],
    time_ns: int,
) -> str:
    """One line of line protocol. Tags are sorted (InfluxDB's preferred order); empty tag
    values are left out; at least one field is required."""
    if not fields:
        raise PointError(REASON_SCHEMA, f"{measurement}: a point needs at least one field")
    parts = [escape_measurement(measurement)]
    for key in sorted(tags):
        value = tags[key]
        if value != "":
            parts.append(f"{escape_tag(key)}={escape_tag(value)}")
    head = ",".join(parts)
    body = ",".join(_format_field(k, v) for k, v in fields.items())
    return f"{head} {body} {time_ns}"


# --------------------------------------------------------------------------------------------
# time

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rfc3339_to_ns(text: str) -> int:
    """Exact nanoseconds since the epoch (digits beyond 9 are truncated, deterministically)."""
    m = _RFC3339.match(text)
    if not m:
        raise ValueError(f"expected an RFC 3339 timestamp like 2024-05-01T12:00:00Z, got {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    frac = (m.group(7) or "")[:9].ljust(9, "0")
    if m.group(8):
        offset = timedelta(0)
    else:
        sign = -1 if m.group(9) == "-" else 1
        offset = sign * timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
    try:
        dt = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=timezone(offset))
    except ValueError as exc:
        raise ValueError(f"bad timestamp {text!r}: {exc}") from exc
    seconds = (dt - _EPOCH) // timedelta(seconds=1)
    return seconds * 1_000_000_000 + int(frac)


# --------------------------------------------------------------------------------------------
# field access with clear errors


def _req_str(rec: Mapping[str, Any], key: str) -> str:
    value = rec.get(key)
    if not isinstance(value, str) or not value:
        raise PointError(REASON_SCHEMA, f"field {key!r} must be a non-empty string, got {value!r}")
    return value


def _opt_str(rec: Mapping[str, Any], key: str) -> str:
    value = rec.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PointError(REASON_SCHEMA, f"field {key!r} must be a string, got {value!r}")
    return value


def _req_int(rec: Mapping[str, Any], key: str) -> int:
    value = rec.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PointError(REASON_SCHEMA, f"field {key!r} must be an integer, got {value!r}")
    return value


def _opt_float(rec: Mapping[str, Any], key: str, default: float) -> float:
    value = rec.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PointError(REASON_SCHEMA, f"field {key!r} must be a finite number, got {value!r}")
    return float(value)


def _opt_bool(rec: Mapping[str, Any], key: str) -> bool:
    value = rec.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise PointError(REASON_SCHEMA, f"field {key!r} must be true or false, got {value!r}")
    return value


def _req_time(rec: Mapping[str, Any], key: str) -> int:
    text = _req_str(rec, key)
    try:
        return rfc3339_to_ns(text)
    except ValueError as exc:
        raise PointError(REASON_SCHEMA, f"field {key!r}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# records -> lines


def decode(value: bytes | None) -> Mapping[str, Any]:
    """A Kafka message value -> JSON object, or PointError(empty/invalid_json/schema)."""
    if not value:
        raise PointError(REASON_EMPTY, "empty message value (tombstone?)")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise PointError(REASON_INVALID_JSON, f"value is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise PointError(REASON_SCHEMA, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _status_changed(rec: Mapping[str, Any]) -> list[str]:
    time_ns = _req_time(rec, "changedAt")
    resource_id = _req_str(rec, "resourceId")
    last_hb = rec.get("lastHeartbeatAt")
    fields: dict[str, FieldValue] = {}
    machine_name = _opt_str(rec, "machineName") or resource_id.rsplit("/", 1)[-1]
    fields["machine_name"] = machine_name
    transition_id = _opt_str(rec, "transitionId")
    if transition_id:
        fields["transition_id"] = transition_id
    fields["detection_delay"] = _opt_float(rec, "detectionDelaySeconds", 0.0)
    if last_hb is not None:
        fields["last_heartbeat_at"] = _req_time(rec, "lastHeartbeatAt") / 1e9
    fields["flapping"] = _opt_bool(rec, "flapping")
    fields["maintenance"] = _opt_str(rec, "maintenance")  # the window id, "" when none
    tags = {
        "resource_id": resource_id.lower(),
        "status": _req_str(rec, "status"),
        "previous_status": _opt_str(rec, "previousStatus") or "none",
        "reason": _req_str(rec, "reason"),
        "location": _opt_str(rec, "location"),
        "subscription_id": _opt_str(rec, "subscriptionId"),
        "resource_group": _opt_str(rec, "resourceGroup"),
        "os_type": _opt_str(rec, "osType"),
        "mass_outage": "true" if _opt_bool(rec, "massOutage") else "false",
    }
    return [format_line("transitions", tags, fields, time_ns)]


def _scope_event(rec: Mapping[str, Any]) -> list[str]:
    tags = {"scope": _req_str(rec, "scope"), "type": _req_str(rec, "type")}
    fields: dict[str, FieldValue] = {"machines": _req_int(rec, "machines")}
    return [format_line("scope_events", tags, fields, _req_time(rec, "at"))]


_SNAPSHOT_FIELDS = (
    ("Connected", "connected"),
    ("Disconnected", "disconnected"),
    ("Expired", "expired"),
)


def _partition_snapshot(rec: Mapping[str, Any]) -> list[str]:
    time_ns = _req_time(rec, "at")
    partition = _req_int(rec, "partition")
    scopes = rec.get("scopes")
    if not isinstance(scopes, dict):
        raise PointError(REASON_SCHEMA, f"field 'scopes' must be an object, got {scopes!r}")
    lines = []
    for scope, counts in sorted(scopes.items()):
        if not isinstance(counts, dict):
            raise PointError(REASON_SCHEMA, f"scopes[{scope!r}] must be an object, got {counts!r}")
        fields: dict[str, FieldValue] = {}
        for wire, name in _SNAPSHOT_FIELDS:
            value = counts.get(wire, 0)
            if isinstance(value, bool) or not isinstance(value, int):
                raise PointError(
                    REASON_SCHEMA, f"scopes[{scope!r}][{wire!r}] must be an integer, got {value!r}"
                )
            fields[name] = value
        tags = {"scope": scope, "partition": str(partition)}
        lines.append(format_line("fleet", tags, fields, time_ns))
    return lines


def _window_counts(rec: Mapping[str, Any]) -> list[str]:
    received = _req_int(rec, "received")
    expected = _req_int(rec, "expected")
    fields: dict[str, FieldValue] = {"received": received, "expected": expected}
    if expected > 0:
        fields["availability"] = received / expected
    fields["planned_seconds"] = _opt_float(rec, "plannedSeconds", 0.0)
    tags = {
        "resource_id": _req_str(rec, "resourceId").lower(),
        "subscription_id": _opt_str(rec, "subscriptionId"),
        "location": _opt_str(rec, "location"),
    }
    return [format_line("availability", tags, fields, _req_time(rec, "windowStart"))]


def capacity_line(kind: str, scope: str, used: int, limit: int, time_ns: int) -> str:
    fields: dict[str, FieldValue] = {"used": used, "limit": limit}
    if limit > 0:
        fields["ratio"] = used / limit
    return format_line("capacity", {"kind": kind, "scope": scope}, fields, time_ns)


def _capacity_snapshot(rec: Mapping[str, Any]) -> list[str]:
    return [
        capacity_line(
            _req_str(rec, "kind"),
            _req_str(rec, "scope"),
            _req_int(rec, "used"),
            _req_int(rec, "limit"),
            _req_time(rec, "at"),
        )
    ]


def _json_text(value: Any) -> str:
    """A JSON object as a compact string field, keys sorted so a rewrite writes the same."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def maintenance_points(value: Mapping[str, Any]) -> list[str]:
    """The ``maintenance`` point of one decoded ``<prefix>.maintenance`` value (a window);
    PointError(schema, ...) when a required field is missing or of the wrong type."""
    try:
        window_id = _req_str(value, "id")
        selector = value.get("selector")
        if not isinstance(selector, dict) or not selector:
            raise PointError(
                REASON_SCHEMA, f"field 'selector' must be a non-empty object, got {selector!r}"
            )
        recurrence = value.get("recurrence")
        if recurrence is not None and not isinstance(recurrence, dict):
            raise PointError(
                REASON_SCHEMA, f"field 'recurrence' must be an object or null, got {recurrence!r}"
            )
        start_ns = _req_time(value, "start")
        end_ns = _req_time(value, "end")
        if value.get("endedAt") is not None:
            end_ns = min(end_ns, _req_time(value, "endedAt"))
        fields: dict[str, FieldValue] = {
            "reason": _opt_str(value, "reason"),
            "created_by": _opt_str(value, "createdBy"),
            "selector": _json_text(selector),
            "recurrence": "" if recurrence is None else _json_text(recurrence),
            "ended_by": _opt_str(value, "endedBy"),
            "start": start_ns / 1e9,
            # ended before it started: it covered nothing
            "end": max(start_ns, end_ns) / 1e9,
        }
        return [format_line("maintenance", {"window_id": window_id}, fields, start_ns)]
    except PointError as exc:
        raise PointError(exc.reason, f"maintenance window: {exc.detail}") from exc


_CONVERTERS = {
    "StatusChanged": _status_changed,
    "ScopeSilent": _scope_event,
    "ScopeRecovered": _scope_event,
    # early warning (docs/early-warning.md): same shape, in the same measurement
    "ScopeDegraded": _scope_event,
    "ScopeDegradationCleared": _scope_event,
    "PartitionSnapshot": _partition_snapshot,
    "WindowCounts": _window_counts,
    "CapacitySnapshot": _capacity_snapshot,
}

RECORD_TYPES: Final[Sequence[str]] = tuple(_CONVERTERS)


def record_to_lines(record: Mapping[str, Any]) -> list[str]:
    """Lines for one decoded record; PointError(reason, detail) when it cannot be written."""
    rtype = record.get("type")
    converter = _CONVERTERS.get(rtype) if isinstance(rtype, str) else None
    if converter is None:
        raise PointError(
            REASON_UNKNOWN_TYPE,
            f"unknown record type {rtype!r}; expected one of {', '.join(RECORD_TYPES)}",
        )
    try:
        return converter(record)
    except PointError as exc:
        raise PointError(exc.reason, f"{rtype}: {exc.detail}") from exc


def value_to_lines(value: bytes | None) -> list[str]:
    """A raw Kafka message value -> lines (decode + convert)."""
    return record_to_lines(decode(value))


# --------------------------------------------------------------------------------------------
# InfluxQL for dashboards and the README (InfluxDB 1.x, 2.x via DBRP and 3.x all answer it).

QUERIES: Final[Mapping[str, str]] = {
    "last_transitions": (
        "SELECT machine_name, transition_id, status, previous_status, reason, detection_delay "
        "FROM transitions WHERE time > now() - 1d ORDER BY time DESC LIMIT 100"
    ),
    "transitions_over_time": (
        "SELECT count(transition_id) FROM transitions WHERE time > now() - 1d "
        "GROUP BY time(5m), status"
    ),
    "machine_timeline": (
        "SELECT status, previous_status, reason, transition_id FROM transitions "
        "WHERE resource_id = '<lower-case resource id>' AND time > now() - 30d"
    ),
    "detection_delay": (
        "SELECT percentile(detection_delay, 99) FROM transitions "
        "WHERE reason = 'heartbeat_timeout' AND time > now() - 1d GROUP BY time(5m)"
    ),
    "scope_events": (
        "SELECT machines, type FROM scope_events WHERE time > now() - 7d GROUP BY scope"
    ),
    "fleet_over_time": (
        "SELECT sum(connected) AS connected, sum(disconnected) AS disconnected, "
        "sum(expired) AS expired FROM fleet WHERE scope = 'fleet' AND time > now() - 1d "
        "GROUP BY time(10s)"
    ),
    "location_over_time": (
        "SELECT sum(connected) AS connected, sum(disconnected) AS disconnected FROM fleet "
        "WHERE scope =~ /^location=/ AND time > now() - 1d GROUP BY time(10s), scope"
    ),
    "machine_availability": (
        "SELECT received, expected, availability, planned_seconds FROM availability "
        "WHERE resource_id = '<lower-case resource id>' AND time > now() - 7d"
    ),
    "fleet_availability": (
        "SELECT sum(received) / sum(expected) AS availability, "
        "sum(planned_seconds) AS planned_seconds FROM availability "
        "WHERE time > now() - 7d GROUP BY time(1h)"
    ),
    "maintenance_windows": (
        'SELECT window_id, reason, created_by, selector, recurrence, "start", "end", ended_by '
        "FROM maintenance WHERE time > now() - 30d"
    ),
    "capacity_over_time": (
        'SELECT last(used) AS used, last("limit") AS "limit", last(ratio) AS ratio '
        "FROM capacity WHERE time > now() - 30d GROUP BY time(1h), kind, scope"
    ),
}
