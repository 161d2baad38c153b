"""Maintenance windows as requests and records: parsing an API/CLI request (with a clear
error for anything wrong), and the camelCase JSON record of the compacted maintenance topic
(:func:`encode`, :func:`decode`). The model itself is :mod:`.maintenance`."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, time
from typing import Any, Final

import orjson

from arcbeat.streams.decide.maintenance import (
    DAY_NAMES,
    MAX_REASON,
    MAX_RECURRENCE,
    MaintenanceError,
    Recurrence,
    Selector,
    Window,
    _check_time,
    _fail,
    _when,
)
from arcbeat.streams.decide.resource_ids import parse_resource_id
from arcbeat.streams.decide.timestamps import parse_rfc3339, rfc3339
from arcbeat.streams.settings import parse_duration as _settings_duration

_AT_RE: Final = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?", re.ASCII)
_COMPOUND: Final = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+", re.ASCII)
_PIECE: Final = re.compile(r"\d+(?:\.\d+)?(?:ms|s|m|h|d|w)", re.ASCII)
_REQUEST_FIELDS: Final = ("selector", "start", "end", "duration", "recurrence", "reason")
_SELECTOR_FIELDS: Final = ("resourceIds", "subscriptionId", "resourceGroup", "location", "tags")
_RECURRENCE_FIELDS: Final = ("days", "at", "duration", "timeZone")


def parse_duration(value: object, name: str = "duration") -> float:
    """Seconds from a number or a string such as ``90m``, ``2h``, ``1h30m``; must be > 0."""
    try:
        if isinstance(value, str) and _COMPOUND.fullmatch(value.strip()):
            seconds = sum(_settings_duration(p) for p in _PIECE.findall(value))
        else:
            seconds = _settings_duration(value)
    except ValueError:
        raise _fail(
            f"{name} {value!r} is not a duration; give seconds or e.g. '90m', '2h', '1h30m'"
        ) from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise _fail(f"{name} {value!r} must be a finite number of seconds, more than 0")
    return seconds


def _text(obj: Mapping[str, Any], name: str) -> str:
    value = obj.get(name)
    if name not in obj:
        raise _fail(f"{name} is missing; give a non-empty string")
    if not isinstance(value, str) or not value.strip():
        raise _fail(f"{name} must be a non-empty string, got {value!r}")
    return value


def _time(obj: Mapping[str, Any], name: str) -> float:
    value = obj.get(name)
    try:
        if not isinstance(value, str):
            raise ValueError
        ts = parse_rfc3339(value)
    except ValueError:
        raise _fail(
            f"{name} {value!r} is not an RFC 3339 time with a zone; "
            "give e.g. 2026-11-29T02:00:00Z or 2026-11-29T03:00:00+01:00"
        ) from None
    _check_time(name, ts)
    return ts


def _unknown(obj: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
    extra = sorted(set(obj) - set(known))
    if extra:
        raise _fail(f"unknown field {where}{extra[0]}; accepted fields: {', '.join(known)}")


def _object(value: object, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(f"{name} must be a JSON object, got {value!r}")
    return value


def _selector(value: object) -> Selector:
    obj = _object(value, "selector")
    _unknown(obj, _SELECTOR_FIELDS, "selector.")
    ids = obj.get("resourceIds")
    if ids is not None and not (isinstance(ids, list) and ids):
        raise _fail("selector.resourceIds must be a non-empty list of machine Resource IDs")
    for i, rid in enumerate(ids or ()):
        try:
            parse_resource_id(rid)
        except ValueError as exc:
            raise _fail(f"selector.resourceIds[{i}]: {exc}") from None
    scope = {k: obj[k] for k in ("subscriptionId", "resourceGroup", "location") if k in obj}
    for k, v in scope.items():
        if not isinstance(v, str) or not v:
            raise _fail(f"selector.{k} must be a non-empty string, got {v!r}")
    tags = _object(obj.get("tags", {}), "selector.tags")
    for k, v in tags.items():
        if not k or not isinstance(v, str):
            raise _fail(f"selector.tags {k!r}: give a non-empty name and a string value")
    return Selector(
        resource_ids=frozenset(ids or ()),
        subscription_id=scope.get("subscriptionId"),
        resource_group=scope.get("resourceGroup"),
        location=scope.get("location"),
        tags=tuple(tags.items()),
    )


def _day(value: object, i: int) -> int:
    if isinstance(value, str) and value.lower() in DAY_NAMES:
        return DAY_NAMES.index(value.lower())
    raise _fail(f"recurrence.days[{i}] {value!r} is not a day; use {', '.join(DAY_NAMES)}")


def _recurrence(value: object) -> Recurrence:
    obj = _object(value, "recurrence")
    _unknown(obj, _RECURRENCE_FIELDS, "recurrence.")
    days = obj.get("days")
    if not isinstance(days, list) or not days:
        raise _fail(
            f"recurrence.days must be a non-empty list such as ['sat', 'sun'], got {days!r}"
        )
    at = obj.get("at")
    m = _AT_RE.fullmatch(at) if isinstance(at, str) else None
    if m is None:
        raise _fail(f"recurrence.at {at!r} is not a time of day; give HH:MM such as '02:00'")
    duration = parse_duration(obj.get("duration"), "recurrence.duration")
    if duration > MAX_RECURRENCE:
        raise _fail(f"recurrence.duration {obj.get('duration')!r} is over 7 days; give less")
    tz = obj.get("timeZone", "UTC")
    return Recurrence(
        days=frozenset(_day(d, i) for i, d in enumerate(days)),
        at=time(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)),
        duration=duration,
        time_zone=tz if isinstance(tz, str) else repr(tz),
    )


def parse_request(obj: Mapping[str, Any], *, window_id: str, created_by: str, now: float) -> Window:
    """A new window from an API/CLI request::

    {"selector": {"resourceIds": [...]} | {"subscriptionId", "resourceGroup", "location",
                  "tags": {"k": "v"}} (any of them),
     "start": RFC 3339 (default now), "end": RFC 3339 | "duration": "2h" or seconds,
     "recurrence": {"days": ["mon", ...], "at": "02:00", "duration": "2h",
                    "timeZone": "Europe/Berlin" (default UTC)} (optional),
     "reason": "..."}
    """
    obj = _object(obj, "the request")
    _unknown(obj, _REQUEST_FIELDS, "")
    if "selector" not in obj:
        raise _fail("selector is missing; give resourceIds or a scope (subscriptionId, ...)")
    selector = _selector(obj["selector"])
    start = _time(obj, "start") if "start" in obj else now
    if "end" in obj and "duration" in obj:
        raise _fail("both end and duration given; give one of them")
    if "end" in obj:
        end = _time(obj, "end")
    elif "duration" in obj:
        end = start + parse_duration(obj["duration"])
    else:
        raise _fail("end is missing; give end (RFC 3339) or duration (e.g. '2h')")
    if end <= start:
        how = "before" if end < start else "the same as"
        raise _fail(f"end {_when(end)} is {how} start {_when(start)}; give an end after the start")
    if end <= now:
        raise _fail(
            f"the window is entirely in the past (end {_when(end)} is not after now, "
            f"{_when(now)}); give an end in the future"
        )
    recurrence = _recurrence(obj["recurrence"]) if obj.get("recurrence") is not None else None
    reason = _text(obj, "reason")
    if len(reason) > MAX_REASON:
        raise _fail(f"reason is {len(reason)} characters; at most {MAX_REASON} allowed")
    window = Window(window_id, selector, start, end, recurrence, reason, created_by, now)
    if recurrence is not None and not window.intervals(start, end):
        raise _fail("recurrence never occurs between start and end; widen them or change days/at")
    return window


def _selector_json(s: Selector) -> dict[str, Any]:
    if s.resource_ids:
        return {"resourceIds": sorted(s.resource_ids)}
    scope = {
        "subscriptionId": s.subscription_id,
        "resourceGroup": s.resource_group,
        "location": s.location,
        "tags": dict(s.tags) or None,
    }
    return {k: v for k, v in scope.items() if v is not None}


def to_json(window: Window) -> dict[str, Any]:
    """The window as JSON (camelCase, RFC 3339 UTC times): the record value and the API view."""
    r = window.recurrence
    return {
        "id": window.id,
        "selector": _selector_json(window.selector),
        "start": rfc3339(window.start),
        "end": rfc3339(window.end),
        "recurrence": None
        if r is None
        else {
            "days": [DAY_NAMES[d] for d in sorted(r.days)],
            "at": r.at.strftime("%H:%M:%S" if r.at.second else "%H:%M"),
            "duration": float(r.duration),
            "timeZone": r.time_zone,
        },
        "reason": window.reason,
        "createdBy": window.created_by,
        "createdAt": rfc3339(window.created_at),
        "endedBy": window.ended_by,
        "endedAt": None if window.ended_at is None else rfc3339(window.ended_at),
    }


def encode(window: Window) -> bytes:
    return orjson.dumps(to_json(window))


def record_key(window_id: str) -> bytes:
    return window_id.encode("utf-8")


def decode(raw: bytes) -> Window:
    """A window from a record value (see :func:`from_json`)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _fail(f"bad record: not JSON ({exc}); the writer must send encode(window)") from None
    return from_json(obj)


def from_json(obj: object) -> Window:
    """A window from its JSON (:func:`to_json`'s shape, as a record or a tick carries it).

    Unknown top-level fields are ignored, so a newer writer can add some; unknown selector or
    recurrence fields are errors, since ignoring a criterion would cover unintended machines.
    """
    try:
        rec_obj = _object(obj, "the record")
        ended_at = rec_obj.get("endedAt")
        ended_by = rec_obj.get("endedBy")
        rec = rec_obj.get("recurrence")
        return Window(
            id=_text(rec_obj, "id"),
            selector=_selector(rec_obj.get("selector")),
            start=_time(rec_obj, "start"),
            end=_time(rec_obj, "end"),
            recurrence=None if rec is None else _recurrence(rec),
            reason=_text(rec_obj, "reason"),
            created_by=_text(rec_obj, "createdBy"),
            created_at=_time(rec_obj, "createdAt"),
            ended_by=None if ended_by is None else _text(rec_obj, "endedBy"),
            ended_at=None if ended_at is None else _time(rec_obj, "endedAt"),
        )
    except MaintenanceError as exc:
        detail = str(exc).removeprefix("maintenance: ")
        raise MaintenanceError(f"maintenance: bad record: {detail}") from None


def new_window_id(now: float, entropy: bytes) -> str:
    """``mw-20261129-0200-ab12cd``: creation time (UTC, sorts by age) and 3 bytes of entropy."""
    if len(entropy) < 3:
        raise _fail("a window id needs at least 3 bytes of entropy")
    return f"mw-{datetime.fromtimestamp(now, UTC):%Y%m%d-%H%M}-{entropy[:3].hex()}"
