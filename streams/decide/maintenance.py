"""Maintenance windows (planned downtime): the model, its validation and its record
(docs/maintenance.md).

Pure: no Kafka, no I/O, no clock reads. Every time is a parameter in unix seconds. Windows are
stored in the compacted ``arcbeat.maintenance`` topic: key = window id (UTF-8), value =
:func:`encode`, a tombstone (no value) deletes. :class:`Book` is what a worker builds from it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson

from arcbeat.streams.decide.resource_ids import parse_resource_id
from arcbeat.streams.decide.timestamps import parse_rfc3339, rfc3339
from arcbeat.streams.settings import parse_duration as _settings_duration

DAY_NAMES: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_RECURRENCE: Final = 7 * 86400.0
MAX_REASON: Final = 1024
_MAX_TIME: Final = 253_370_764_800.0  # 9999-01-01: leaves room for date arithmetic
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ID_RE: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # the id goes into URLs and record keys
_AT_RE: Final = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?", re.ASCII)
_COMPOUND: Final = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+", re.ASCII)
_PIECE: Final = re.compile(r"\d+(?:\.\d+)?(?:ms|s|m|h|d|w)", re.ASCII)
_REQUEST_FIELDS: Final = ("selector", "start", "end", "duration", "recurrence", "reason")
_SELECTOR_FIELDS: Final = ("resourceIds", "subscriptionId", "resourceGroup", "location", "tags")
_RECURRENCE_FIELDS: Final = ("days", "at", "duration", "timeZone")


class MaintenanceError(ValueError):
    """A window, request or record is not acceptable; the message says what, where and the fix."""


def _fail(message: str) -> MaintenanceError:
    return MaintenanceError(f"maintenance: {message}")


def _when(ts: float) -> str:
    return rfc3339(ts).replace(".000Z", "Z")


def _check_time(name: str, ts: float) -> None:
    if not (math.isfinite(ts) and 0 <= ts < _MAX_TIME):
        raise _fail(f"{name} {ts!r} is out of range; give a time between 1970 and 9999")


@dataclass(frozen=True, slots=True)
class Selector:
    """Which machines a window covers: a set of Resource IDs, or a scope (all criteria match)."""

    resource_ids: frozenset[str] = frozenset()
    subscription_id: str | None = None
    resource_group: str | None = None
    location: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        ids = frozenset(r.lower() for r in self.resource_ids)
        tags = tuple(sorted(set(self.tags)))
        keys = [k for k, _ in tags]
        if "" in ids or "" in keys or len(set(keys)) != len(keys):
            raise _fail("selector has an empty resource ID or a repeated or empty tag name")
        scoped = any((self.subscription_id, self.resource_group, self.location, tags))
        if ids and scoped:
            raise _fail(
                "selector has both resourceIds and a scope; give either resourceIds or "
                "subscriptionId/resourceGroup/location/tags"
            )
        if not ids and not scoped:
            raise _fail(
                "selector is empty; give resourceIds or at least one of "
                "subscriptionId, resourceGroup, location, tags"
            )
        object.__setattr__(self, "resource_ids", ids)
        object.__setattr__(self, "tags", tags)
        if self.location is not None:
            object.__setattr__(self, "location", self.location.lower())

    def matches(
        self,
        resource_id: str,
        subscription_id: str,
        resource_group: str,
        location: str,
        tags: Mapping[str, str],
    ) -> bool:
        if self.resource_ids:
            return resource_id.lower() in self.resource_ids
        # Azure compares subscriptions, resource groups and regions case-insensitively
        return (
            (
                self.subscription_id is None
                or self.subscription_id.lower() == subscription_id.lower()
            )
            and (
                self.resource_group is None or self.resource_group.lower() == resource_group.lower()
            )
            and (self.location is None or self.location == location.lower())
            and all(tags.get(k) == v for k, v in self.tags)
        )


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):
        raise _fail(
            f"recurrence.timeZone {name!r} is not a known time zone; "
            "give an IANA name such as Europe/Berlin, America/New_York or UTC"
        ) from None


def _local_date(ts: float, zone: ZoneInfo) -> date:
    # not fromtimestamp: it refuses negative times on some platforms
    return (_EPOCH + timedelta(seconds=ts)).astimezone(zone).date()


@dataclass(frozen=True, slots=True)
class Recurrence:
    """A weekly schedule: on each of ``days`` (0 = Monday), at local time ``at`` in ``time_zone``.

    Occurrences follow the local clock, so 02:00 Europe/Berlin is 02:00 in winter and summer.
    ``duration`` is elapsed seconds. Local times that do not exist or exist twice use fold=0:
    a start in the spring-forward gap is read with the offset in force before the change, so
    it moves forward with the clock (02:30 on the last Sunday of March in Berlin starts at
    03:30 CEST); a start in the repeated autumn hour takes the first of the two (summer time),
    so an occurrence starts once, as early as the clock first shows ``at``.
    """

    days: frozenset[int]
    at: time
    duration: float
    time_zone: str

    def __post_init__(self) -> None:
        days = frozenset(self.days)
        if not days or not days <= set(range(7)):
            raise _fail("recurrence.days must list one or more of 0 (Monday) .. 6 (Sunday)")
        if self.at.tzinfo is not None or self.at.microsecond:
            raise _fail("recurrence.at must be a local time of day in whole seconds, no zone")
        if not (math.isfinite(self.duration) and 0 < self.duration <= MAX_RECURRENCE):
            raise _fail(
                f"recurrence.duration {self.duration!r}s is not allowed; give more than 0 "
                "and at most 7 days (604800 seconds)"
            )
        _zone(self.time_zone)
        object.__setattr__(self, "days", days)
        object.__setattr__(self, "at", self.at.replace(fold=0))

    def occurrences(self, t0: float, t1: float) -> list[tuple[float, float]]:
        """The occurrences ``(start, end)`` that intersect [t0, t1), not clipped, by start."""
        if not t0 < t1:
            return []
        zone = ZoneInfo(self.time_zone)
        # a day of margin on each side: UTC offsets move local dates by up to a day
        day = _local_date(t0 - self.duration, zone) - timedelta(days=1)
        last = _local_date(t1, zone) + timedelta(days=1)
        out: list[tuple[float, float]] = []
        while day <= last:
            if day.weekday() in self.days:
                start = datetime.combine(day, self.at, tzinfo=zone).timestamp()
                if start < t1 and start + self.duration > t0:
                    out.append((start, start + self.duration))
            day += timedelta(days=1)
        return sorted(out)


def _merge(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Union of intervals, sorted; touching intervals join (coverage has no gap there)."""
    out: list[tuple[float, float]] = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


@dataclass(frozen=True, slots=True)
class Window:
    """A maintenance window: covers [start, effective_end), or only its recurring occurrences."""

    id: str
    selector: Selector
    start: float
    end: float
    recurrence: Recurrence | None
    reason: str
    created_by: str
    created_at: float
    ended_by: str | None = None
    ended_at: float | None = None

    def __post_init__(self) -> None:
        if not _ID_RE.fullmatch(self.id):
            raise _fail(f"window id {self.id!r} must be 1-128 of A-Z a-z 0-9 . _ : -")
        for name in ("start", "end", "created_at"):
            _check_time(name, getattr(self, name))
        if self.end <= self.start:
            raise _fail(
                f"end {_when(self.end)} is not after start {_when(self.start)}; "
                "give an end after the start"
            )
        if not self.reason.strip():
            raise _fail("reason is empty; say why the machines are down (e.g. 'OS patching')")
        if not self.created_by.strip() or (self.ended_by is not None and not self.ended_by.strip()):
            raise _fail("createdBy and endedBy must name who created or ended the window")
        if (self.ended_by is None) != (self.ended_at is None):
            raise _fail("endedBy and endedAt go together; give both or neither")
        if self.ended_at is not None:
            _check_time("endedAt", self.ended_at)

    @property
    def effective_end(self) -> float:
        return self.end if self.ended_at is None else min(self.end, self.ended_at)

    def _spans(self, t0: float, t1: float) -> list[tuple[float, float]]:
        """Covered intervals touching [t0, t1), clipped to the window but not to t0/t1."""
        lo, hi = max(t0, self.start), min(t1, self.effective_end)
        if not lo < hi:
            return []
        if self.recurrence is None:
            return [(self.start, self.effective_end)]
        clipped = (
            (max(s, self.start), min(e, self.effective_end))
            for s, e in self.recurrence.occurrences(lo, hi)
        )
        return _merge((s, e) for s, e in clipped if s < e)

    def intervals(self, t0: float, t1: float) -> list[tuple[float, float]]:
        """The covered intervals intersecting [t0, t1), clipped to it, disjoint and sorted."""
        clipped = ((max(s, t0), min(e, t1)) for s, e in self._spans(t0, t1))
        return [(s, e) for s, e in clipped if s < e]

    def active_at(self, t: float) -> bool:
        return any(s <= t < e for s, e in self._spans(t, math.nextafter(t, math.inf)))

    def ended(self, by: str, at: float) -> Window:
        """This window ended early at ``at`` (before its start: it never covers anything)."""
        if self.ended_at is not None:
            raise _fail(
                f"window {self.id} was already ended at {_when(self.ended_at)} by "
                f"{self.ended_by}; nothing to do"
            )
        if at >= self.end:
            raise _fail(
                f"window {self.id} is already over at {_when(at)}: its end is "
                f"{_when(self.end)}; nothing to end"
            )
        return dataclasses.replace(self, ended_by=by, ended_at=at)


class Book:
    """The known windows (id -> Window), as a worker builds them from the compacted topic."""

    def __init__(self) -> None:
        self._windows: dict[str, Window] = {}
        self._sorted: list[Window] = []  # by id; windows change rarely, machines ask often

    def apply(self, id: str, value: Window | None) -> None:
        """Store a window under its id; ``None`` (a tombstone) deletes it."""
        if value is None:
            self._windows.pop(id, None)
        elif value.id != id:
            raise _fail(f"record key {id!r} differs from the window id {value.id!r}")
        else:
            self._windows[id] = value
        self._sorted = [self._windows[k] for k in sorted(self._windows)]

    def __len__(self) -> int:
        return len(self._windows)

    def get(self, id: str) -> Window | None:
        return self._windows.get(id)

    def all(self) -> list[Window]:
        return list(self._sorted)

    def active(self, t: float) -> list[Window]:
        return [w for w in self._sorted if w.active_at(t)]

    def _matching(
        self, rid: str, sub: str, rg: str, loc: str, tags: Mapping[str, str]
    ) -> list[Window]:
        return [w for w in self._sorted if w.selector.matches(rid, sub, rg, loc, tags)]

    def window_for(
        self,
        resource_id: str,
        subscription_id: str,
        resource_group: str,
        location: str,
        tags: Mapping[str, str],
        t: float,
    ) -> str | None:
        """The id of a window covering the machine at ``t`` (the lowest id if several)."""
        for w in self._matching(resource_id, subscription_id, resource_group, location, tags):
            if w.active_at(t):
                return w.id
        return None

    def covered_until(
        self,
        resource_id: str,
        subscription_id: str,
        resource_group: str,
        location: str,
        tags: Mapping[str, str],
        t: float,
    ) -> float | None:
        """End of the coverage containing ``t``, through overlapping and adjacent windows."""
        ws = self._matching(resource_id, subscription_id, resource_group, location, tags)
        if not any(w.active_at(t) for w in ws):
            return None
        last = max(w.effective_end for w in ws)
        horizon = 8 * 86400.0  # a week of recurrences and then some; doubled while covered
        while True:
            h = min(t + horizon, last)
            first = _merge(iv for w in ws for iv in w.intervals(t, h))[0]
            if first[1] < h or h >= last:
                return first[1]
            horizon *= 2

    def planned_seconds(
        self,
        resource_id: str,
        subscription_id: str,
        resource_group: str,
        location: str,
        tags: Mapping[str, str],
        t0: float,
        t1: float,
    ) -> float:
        """Seconds of [t0, t1) the machine is covered; overlapping windows count once."""
        ws = self._matching(resource_id, subscription_id, resource_group, location, tags)
        return sum(e - s for s, e in _merge(iv for w in ws for iv in w.intervals(t0, t1)))

    def changes_between(self, t0: float, t1: float) -> bool:
        """Whether any window's coverage starts or ends in (t0, t1]."""
        hi = math.nextafter(t1, math.inf)  # a coverage starting exactly at t1 counts
        return any(t0 < s <= t1 or t0 < e <= t1 for w in self._sorted for s, e in w._spans(t0, hi))


# --------------------------------------------------------------------------------------------
# the API/CLI request and the record (same camelCase shape)


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
