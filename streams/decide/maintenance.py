"""Maintenance windows (planned downtime): the model, its validation and its record
(docs/maintenance.md).

Pure: no Kafka, no I/O, no clock reads. Every time is a parameter in unix seconds. Windows are
stored in the compacted ``arcbeat.maintenance`` topic: key = window id (UTF-8), value =
:func:`~.maintenance_codec.encode`, a tombstone (no value) deletes (requests and records:
:mod:`.maintenance_codec`). :class:`Book` is what a worker builds from it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from arcbeat.streams.decide.timestamps import rfc3339

DAY_NAMES: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_RECURRENCE: Final = 7 * 86400.0
MAX_REASON: Final = 1024
_MAX_TIME: Final = 253_370_764_800.0  # 9999-01-01: leaves room for date arithmetic
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ID_RE: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # the id goes into URLs and record keys


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
