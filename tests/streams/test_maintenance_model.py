"""Maintenance windows (planned downtime): the pure model, its validation and codec."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcbeat.streams.decide.maintenance import Book, MaintenanceError, Recurrence, Selector, Window
from arcbeat.streams.decide.maintenance_codec import (
    decode,
    encode,
    new_window_id,
    parse_duration,
    parse_request,
    record_key,
    to_json,
)
from arcbeat.streams.decide.resource_ids import resource_id
from arcbeat.streams.decide.timestamps import parse_rfc3339
from tests.support.examples import examples

SUB = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
RID = resource_id(SUB, "rg-Prod", "web-01")
MACHINE = (RID, SUB, "rg-Prod", "westeurope", {"env": "prod", "role": "web"})
HOUR = 3600.0
DAY = 86400.0
DAY_I = 86400
T = parse_rfc3339("2026-06-01T00:00:00Z")  # a Monday


def _ts(text: str) -> float:
    return parse_rfc3339(text)


def _window(
    id: str = "mw-a",
    start: float = T,
    end: float = T + HOUR,
    selector: Selector | None = None,
    recurrence: Recurrence | None = None,
) -> Window:
    return Window(
        id=id,
        selector=selector or Selector(resource_ids=frozenset({RID})),
        start=start,
        end=end,
        recurrence=recurrence,
        reason="OS patching",
        created_by="alice",
        created_at=start - DAY,
    )


# --------------------------------------------------------------------------------------------
# selectors


def test_resource_ids_match_case_insensitively() -> None:
    sel = Selector(resource_ids=frozenset({RID.upper()}))
    assert sel.resource_ids == frozenset({RID.lower()})
    assert sel.matches(RID, *MACHINE[1:])
    assert not sel.matches(resource_id(SUB, "rg-Prod", "web-02"), *MACHINE[1:])


def test_scope_matches_all_criteria_case_insensitively_but_tag_values_exactly() -> None:
    sel = Selector(
        subscription_id=SUB.upper(),
        resource_group="RG-PROD",
        location="WestEurope",
        tags=(("env", "prod"),),
    )
    assert sel.location == "westeurope"
    assert sel.matches(*MACHINE)
    rid, sub, rg, loc, tags = MACHINE
    assert sel.matches(rid, sub.lower(), rg.lower(), "WESTEUROPE", tags)
    assert not sel.matches(rid, sub, "rg-other", loc, tags)
    assert not sel.matches(rid, sub, rg, "westus2", tags)
    assert not sel.matches(rid, sub, rg, loc, {"env": "Prod"})
    assert not sel.matches(rid, sub, rg, loc, {})
    assert Selector(tags=(("env", "prod"), ("role", "web"))).matches(*MACHINE)
    assert not Selector(tags=(("env", "prod"), ("role", "db"))).matches(*MACHINE)
    assert Selector(location="westeurope").matches(*MACHINE)


def test_selector_needs_exactly_one_kind_of_criteria() -> None:
    with pytest.raises(MaintenanceError, match="selector is empty"):
        Selector()
    with pytest.raises(MaintenanceError, match="both resourceIds and a scope"):
        Selector(resource_ids=frozenset({RID}), location="westeurope")


# --------------------------------------------------------------------------------------------
# one-off windows


def test_one_off_window_is_start_inclusive_end_exclusive() -> None:
    w = _window(start=T, end=T + HOUR)
    assert not w.active_at(T - 0.001)
    assert w.active_at(T)
    assert w.active_at(T + HOUR - 0.001)
    assert not w.active_at(T + HOUR)
    assert w.intervals(T - DAY, T + DAY) == [(T, T + HOUR)]
    assert w.intervals(T + 60, T + 120) == [(T + 60, T + 120)]
    assert w.intervals(T + HOUR, T + DAY) == []
    assert w.intervals(T + 120, T + 60) == []


def test_window_ended_early_stops_covering_then() -> None:
    w = _window(start=T, end=T + HOUR)
    e = w.ended("bob", T + 600)
    assert (e.ended_by, e.ended_at, e.effective_end) == ("bob", T + 600, T + 600)
    assert e.active_at(T + 599) and not e.active_at(T + 600)
    assert e.intervals(T - DAY, T + DAY) == [(T, T + 600)]
    assert w.ended_at is None  # frozen: the original is unchanged


def test_window_ended_before_its_start_covers_nothing() -> None:
    e = _window(start=T, end=T + HOUR).ended("bob", T - DAY)
    assert e.intervals(T - 2 * DAY, T + 2 * DAY) == []
    assert not e.active_at(T)


def test_ending_twice_or_after_the_end_is_a_clear_error() -> None:
    w = _window(start=T, end=T + HOUR)
    with pytest.raises(MaintenanceError, match="already ended at 2026-06-01T00:10:00Z by bob"):
        w.ended("bob", T + 600).ended("carol", T + 700)
    with pytest.raises(MaintenanceError, match="already over"):
        w.ended("bob", T + HOUR)
    with pytest.raises(MaintenanceError, match="already over"):
        w.ended("bob", T + 2 * HOUR)


# --------------------------------------------------------------------------------------------
# recurrences across daylight saving time


def _local(ts: float, zone: str) -> datetime:
    return datetime.fromtimestamp(ts, ZoneInfo(zone))


@pytest.mark.parametrize(
    ("first", "last", "offsets"),
    [
        ("2026-03-10T00:00:00Z", "2026-04-10T00:00:00Z", (1, 1, 1, 2, 2)),  # 29 March
        ("2026-10-06T00:00:00Z", "2026-11-06T00:00:00Z", (2, 2, 2, 1, 1)),  # 25 October
    ],
)
def test_berlin_weekly_window_stays_at_two_local_across_dst(
    first: str, last: str, offsets: tuple[int, ...]
) -> None:
    rec = Recurrence(frozenset({1}), time(2, 0), 2 * HOUR, "Europe/Berlin")  # Tuesdays
    w = _window(start=_ts(first), end=_ts(last), recurrence=rec)
    spans = w.intervals(_ts(first), _ts(last))
    assert len(spans) == len(offsets)
    for (s, e), offset in zip(spans, offsets, strict=True):
        local = _local(s, "Europe/Berlin")
        assert (local.weekday(), local.time()) == (1, time(2, 0))
        assert local.utcoffset() == timedelta(hours=offset)
        assert e - s == 2 * HOUR
        assert w.active_at(s) and w.active_at(e - 1) and not w.active_at(e)


def test_berlin_start_in_the_spring_gap_moves_forward_and_in_the_autumn_fold_takes_the_first() -> (
    None
):
    rec = Recurrence(frozenset({6}), time(2, 30), HOUR, "Europe/Berlin")  # Sundays
    [(spring, _)] = rec.occurrences(_ts("2026-03-29T00:00:00Z"), _ts("2026-03-30T00:00:00Z"))
    assert spring == _ts("2026-03-29T03:30:00+02:00")  # 02:30 does not exist that night
    [(autumn, _)] = rec.occurrences(_ts("2026-10-25T00:00:00Z"), _ts("2026-10-26T00:00:00Z"))
    assert autumn == _ts("2026-10-25T02:30:00+02:00")  # the first of the two 02:30s


def test_new_york_recurrence_follows_local_time_across_dst() -> None:
    rec = Recurrence(frozenset({5, 6}), time(23, 0), 4 * HOUR, "America/New_York")  # weekends
    # DST starts 8 March 2026 and ends 1 November 2026 in the United States
    for first, last, offsets in (
        ("2026-03-01T00:00:00Z", "2026-03-16T00:00:00Z", (-5, -5, -5, -4, -4)),
        ("2026-10-24T00:00:00Z", "2026-11-09T00:00:00Z", (-4, -4, -4, -5, -5)),
    ):
        starts = [s for s, _ in rec.occurrences(_ts(first), _ts(last))]
        locals_ = [_local(s, "America/New_York") for s in starts]
        assert all(d.time() == time(23, 0) and d.weekday() in (5, 6) for d in locals_)
        assert [d.utcoffset() for d in locals_][-5:] == [timedelta(hours=h) for h in offsets]


def test_recurrence_is_clipped_to_the_window_and_its_early_end() -> None:
    rec = Recurrence(frozenset(range(7)), time(1, 0), 2 * HOUR, "UTC")  # daily 01:00-03:00
    w = _window(start=T + 2 * HOUR, end=T + 3 * DAY + 2 * HOUR, recurrence=rec)
    assert w.intervals(T, T + 4 * DAY) == [
        (T + 2 * HOUR, T + 3 * HOUR),
        (T + DAY + HOUR, T + DAY + 3 * HOUR),
        (T + 2 * DAY + HOUR, T + 2 * DAY + 3 * HOUR),
        (T + 3 * DAY + HOUR, T + 3 * DAY + 2 * HOUR),
    ]
    e = w.ended("bob", T + DAY + 2 * HOUR)
    assert e.intervals(T, T + 4 * DAY) == [
        (T + 2 * HOUR, T + 3 * HOUR),
        (T + DAY + HOUR, T + DAY + 2 * HOUR),
    ]
    assert not w.active_at(T + 5 * HOUR)


def test_recurrence_rejects_bad_values() -> None:
    with pytest.raises(MaintenanceError, match="timeZone 'Mars/Olympus'"):
        Recurrence(frozenset({0}), time(2), HOUR, "Mars/Olympus")
    with pytest.raises(MaintenanceError, match=r"recurrence\.duration"):
        Recurrence(frozenset({0}), time(2), 7 * DAY + 1, "UTC")
    with pytest.raises(MaintenanceError, match=r"recurrence\.days"):
        Recurrence(frozenset({7}), time(2), HOUR, "UTC")


# --------------------------------------------------------------------------------------------
# the book: overlapping windows merge


def _book(*windows: Window) -> Book:
    book = Book()
    for w in windows:
        book.apply(w.id, w)
    return book


def test_overlapping_and_adjacent_windows_merge() -> None:
    book = _book(
        _window("mw-b", T + 5, T + 20),
        _window("mw-a", T, T + 10),
        _window("mw-c", T + 20, T + 30),  # adjacent to mw-b: no gap
        _window("mw-d", T + 40, T + 50),
        _window("mw-x", T, T + 100, selector=Selector(location="westus2")),  # other machines
    )
    assert book.window_for(*MACHINE, T + 7) == "mw-a"  # the lowest id of the two
    assert book.window_for(*MACHINE, T + 15) == "mw-b"
    assert book.window_for(*MACHINE, T + 35) is None
    assert book.covered_until(*MACHINE, T + 2) == T + 30
    assert book.covered_until(*MACHINE, T + 45) == T + 50
    assert book.covered_until(*MACHINE, T + 30) is None
    assert book.planned_seconds(*MACHINE, T, T + 100) == 40
    assert book.planned_seconds(*MACHINE, T + 8, T + 42) == 22 + 2
    assert [w.id for w in book.active(T + 7)] == ["mw-a", "mw-b", "mw-x"]


def test_covered_until_follows_a_long_chain_of_recurrences() -> None:
    # daily 00:00 for 24 h: coverage without a gap for 60 days, past the first search horizon
    rec = Recurrence(frozenset(range(7)), time(0, 0), DAY, "UTC")
    book = _book(_window("mw-a", T, T + 60 * DAY, recurrence=rec))
    assert book.covered_until(*MACHINE, T + 3 * DAY + 5) == T + 60 * DAY


def test_changes_between_reports_starts_and_ends_in_the_half_open_range() -> None:
    rec = Recurrence(frozenset({0}), time(2, 0), HOUR, "UTC")  # Mondays 02:00-03:00
    book = _book(_window("mw-a", T + 10, T + 20), _window("mw-r", T, T + 30 * DAY, recurrence=rec))
    assert book.changes_between(T, T + 10)  # mw-a starts at T + 10
    assert book.changes_between(T + 15, T + 20)  # mw-a ends at T + 20
    assert not book.changes_between(T + 10, T + 15)
    assert not book.changes_between(T + 20, T + 2 * HOUR - 1)
    assert book.changes_between(T + 2 * HOUR - 1, T + 2 * HOUR)  # an occurrence starts
    assert book.changes_between(T + 3 * HOUR - 1, T + 3 * HOUR + 1)  # and ends
    assert not book.changes_between(T + 3 * HOUR, T + 7 * DAY)


def test_book_apply_tombstone_get_and_all() -> None:
    book = _book(_window("mw-b"), _window("mw-a"))
    assert len(book) == 2 and [w.id for w in book.all()] == ["mw-a", "mw-b"]
    assert book.get("mw-a") == _window("mw-a") and book.get("mw-z") is None
    book.apply("mw-a", None)
    book.apply("mw-z", None)  # deleting an unknown id is harmless (compaction replays)
    assert len(book) == 1 and book.get("mw-a") is None
    with pytest.raises(MaintenanceError, match="differs from the window id"):
        book.apply("mw-c", _window("mw-b"))


_ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata")
_BASE = _ts("2026-03-01T00:00:00Z")


@st.composite
def _windows(draw: st.DrawFn, id: str) -> Window:
    start = _BASE + draw(st.integers(0, 60 * 24)) * 60.0
    end = start + draw(st.integers(1, 20 * 24 * 60)) * 60.0
    rec = None
    if draw(st.booleans()):
        rec = Recurrence(
            frozenset(draw(st.sets(st.integers(0, 6), min_size=1))),
            time(draw(st.integers(0, 23)), draw(st.sampled_from([0, 15, 30, 59]))),
            draw(st.integers(1, 3 * 24 * 60)) * 60.0,
            draw(st.sampled_from(_ZONES)),
        )
    w = _window(id, start, end, selector=Selector(location="westeurope"), recurrence=rec)
    if draw(st.booleans()):
        w = w.ended("bob", start + draw(st.integers(-DAY_I, int(end - start) - 1)))
    return w


_books = st.integers(0, 4).flatmap(lambda n: st.tuples(*(_windows(f"mw-{i}") for i in range(n))))
_offsets = st.integers(-DAY_I, 30 * DAY_I)


@settings(max_examples=60, deadline=None)
@given(_books, _offsets, _offsets)
def test_planned_seconds_is_the_measure_of_the_union(
    windows: tuple[Window, ...], a: int, b: int
) -> None:
    book = _book(*windows)
    t0, t1 = _BASE + min(a, b), _BASE + max(a, b)
    planned = book.planned_seconds(*MACHINE, t0, t1)
    # brute force: coverage is constant between consecutive interval ends, so sample midpoints
    cuts = sorted({t0, t1, *(x for w in windows for iv in w.intervals(t0, t1) for x in iv)})
    brute = sum(
        hi - lo for lo, hi in pairwise(cuts) if any(w.active_at((lo + hi) / 2) for w in windows)
    )
    assert planned == pytest.approx(brute, abs=1e-6)
    assert 0 <= planned <= t1 - t0 + 1e-6


@settings(max_examples=60, deadline=None)
@given(_books, _offsets)
def test_covered_until_is_the_end_of_the_gapless_coverage(
    windows: tuple[Window, ...], a: int
) -> None:
    book = _book(*windows)
    t = _BASE + a
    until = book.covered_until(*MACHINE, t)
    assert (until is None) == (book.window_for(*MACHINE, t) is None)
    if until is not None:
        assert until > t
        assert book.window_for(*MACHINE, until) is None
        assert book.planned_seconds(*MACHINE, t, until) == pytest.approx(until - t)


# --------------------------------------------------------------------------------------------
# the record codec

_text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=20).filter(str.strip)
_MAX_MS = 4_000_000_000_000
_millis = st.integers(0, _MAX_MS).map(lambda ms: ms / 1000)


@st.composite
def _any_window(draw: st.DrawFn) -> Window:
    if draw(st.booleans()):
        ids = draw(st.sets(st.sampled_from(["web-01", "DB-02", "x.y"]), min_size=1))
        selector = Selector(resource_ids=frozenset(resource_id(SUB, "rg", m) for m in ids))
    else:
        selector = Selector(
            subscription_id=draw(st.none() | st.just(SUB)),
            resource_group=draw(st.none() | st.just("Rg-1")),
            location="westeurope",
            tags=tuple(draw(st.dictionaries(_text, _text, max_size=3)).items()),
        )
    start_ms = draw(st.integers(0, _MAX_MS))
    end_ms = start_ms + draw(st.integers(1, 10**10))  # times in whole ms round-trip exactly
    rec = draw(
        st.none()
        | st.builds(
            Recurrence,
            st.frozensets(st.integers(0, 6), min_size=1),
            st.times().map(lambda t: t.replace(microsecond=0)),
            st.floats(0.001, 7 * DAY),
            st.sampled_from(_ZONES),
        )
    )
    w = Window(
        id=draw(st.from_regex(r"[A-Za-z0-9._:-]{1,40}", fullmatch=True)),
        selector=selector,
        start=start_ms / 1000,
        end=end_ms / 1000,
        recurrence=rec,
        reason=draw(_text),
        created_by=draw(_text),
        created_at=draw(_millis),
    )
    if draw(st.booleans()):
        w = w.ended(draw(_text), draw(st.integers(0, end_ms - 1)) / 1000)
    return w


@settings(max_examples=examples(200))
@given(_any_window())
def test_codec_round_trips(window: Window) -> None:
    raw = encode(window)
    assert decode(raw) == window
    assert orjson.loads(raw) == to_json(window)
    assert record_key(window.id) == window.id.encode()


def test_record_shape() -> None:
    rec = Recurrence(frozenset({6, 0}), time(2, 0), 2 * HOUR, "Europe/Berlin")
    w = _window(recurrence=rec, selector=Selector(location="WestEurope", tags=(("env", "p"),)))
    assert to_json(w.ended("bob", T + 60)) == {
        "id": "mw-a",
        "selector": {"location": "westeurope", "tags": {"env": "p"}},
        "start": "2026-06-01T00:00:00.000Z",
        "end": "2026-06-01T01:00:00.000Z",
        "recurrence": {
            "days": ["mon", "sun"],
            "at": "02:00",
            "duration": 7200.0,
            "timeZone": "Europe/Berlin",
        },
        "reason": "OS patching",
        "createdBy": "alice",
        "createdAt": "2026-05-31T00:00:00.000Z",
        "endedBy": "bob",
        "endedAt": "2026-06-01T00:01:00.000Z",
    }


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"{", "not JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"selector": {"location": "x"}}', "bad record: id is missing"),
    ],
)
def test_bad_records_are_clear_errors(raw: bytes, match: str) -> None:
    with pytest.raises(MaintenanceError, match=match):
        decode(raw)


def test_bad_record_field_is_named() -> None:
    obj = to_json(_window())
    obj["start"] = "yesterday"
    with pytest.raises(MaintenanceError, match="bad record: start 'yesterday'"):
        decode(orjson.dumps(obj))


# --------------------------------------------------------------------------------------------
# requests from the API and the command line

NOW = _ts("2026-11-28T12:00:00Z")


def _request(**changes: Any) -> dict[str, Any]:
    req: dict[str, Any] = {
        "selector": {"resourceIds": [RID]},
        "start": "2026-11-29T02:00:00Z",
        "end": "2026-11-29T04:00:00+00:00",
        "reason": "kernel update",
    }
    req.update(changes)
    return {k: v for k, v in req.items() if v is not None}


def _parse(req: dict[str, Any]) -> Window:
    return parse_request(req, window_id="mw-1", created_by="alice", now=NOW)


def test_parse_request_builds_the_window() -> None:
    w = _parse(_request())
    assert w == Window(
        "mw-1",
        Selector(resource_ids=frozenset({RID})),
        _ts("2026-11-29T02:00:00Z"),
        _ts("2026-11-29T04:00:00Z"),
        None,
        "kernel update",
        "alice",
        NOW,
    )
    scoped = _parse(
        _request(
            selector={"subscriptionId": SUB, "location": "WestEurope", "tags": {"env": "prod"}},
            start=None,
            end=None,
            duration="1d12h",
            recurrence={"days": ["Sat", "sun"], "at": "02:00", "duration": "2h"},
        )
    )
    assert (scoped.start, scoped.end) == (NOW, NOW + 1.5 * DAY)
    assert scoped.selector == Selector(
        subscription_id=SUB, location="westeurope", tags=(("env", "prod"),)
    )
    assert scoped.recurrence == Recurrence(frozenset({5, 6}), time(2, 0), 7200, "UTC")


@pytest.mark.parametrize(
    ("value", "seconds"), [(90, 90.0), ("90m", 5400.0), ("2h", 7200.0), ("1h30m", 5400.0)]
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


_REC = {"days": ["mon"], "at": "02:00", "duration": 3600, "timeZone": "Europe/Berlin"}


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"colour": "red"}, "unknown field colour"),
        ({"selector": None}, "selector is missing"),
        ({"selector": {}}, "selector is empty"),
        ({"selector": {"tags": {}}}, "selector is empty"),
        ({"selector": {"resourceIds": []}}, "selector.resourceIds must be a non-empty list"),
        ({"selector": {"resourceIds": ["web-01"]}}, r"selector.resourceIds\[0\]"),
        ({"selector": {"resourceIds": [RID], "location": "x"}}, "both resourceIds and a scope"),
        ({"selector": {"site": "x"}}, "unknown field selector.site"),
        (
            {"end": "2026-11-29T01:00:00Z"},
            "end 2026-11-29T01:00:00Z is before start 2026-11-29T02:00:00Z; give an end after",
        ),
        ({"end": "2026-11-29T02:00:00Z"}, "is the same as start"),
        ({"end": None}, "end is missing"),
        ({"duration": "2h"}, "both end and duration"),
        ({"end": None, "duration": 0}, "duration 0 must be a finite number"),
        ({"end": None, "duration": "soon"}, "duration 'soon' is not a duration"),
        ({"start": "2026-11-29T02:00:00"}, "start '2026-11-29T02:00:00' is not an RFC 3339"),
        ({"end": "tomorrow"}, "end 'tomorrow' is not an RFC 3339"),
        ({"start": "2026-11-01T00:00:00Z", "end": "2026-11-28T12:00:00Z"}, "entirely in the past"),
        ({"reason": None}, "reason is missing"),
        ({"reason": "  "}, "reason must be a non-empty string"),
        ({"recurrence": {**_REC, "timeZone": "Europe/Atlantis"}}, "timeZone 'Europe/Atlantis'"),
        ({"recurrence": {**_REC, "days": ["mon", "funday"]}}, r"recurrence.days\[1\] 'funday'"),
        ({"recurrence": {**_REC, "days": []}}, "recurrence.days must be a non-empty list"),
        ({"recurrence": {**_REC, "at": "25:00"}}, "recurrence.at '25:00'"),
        ({"recurrence": {**_REC, "at": "2 am"}}, "recurrence.at '2 am'"),
        ({"recurrence": {**_REC, "duration": 0}}, "recurrence.duration 0 must be a finite number"),
        ({"recurrence": {**_REC, "duration": "8d"}}, "recurrence.duration '8d' is over 7 days"),
        ({"recurrence": {**_REC, "every": "week"}}, "unknown field recurrence.every"),
        ({"recurrence": {**_REC, "days": ["tue"]}}, "recurrence never occurs"),
    ],
)
def test_request_errors_name_the_field(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(MaintenanceError, match=match) as info:
        _parse(_request(**changes))
    assert str(info.value).startswith("maintenance: ")


def test_new_window_id_is_pure_and_sorts_by_creation() -> None:
    assert new_window_id(_ts("2026-11-29T02:00:59Z"), bytes.fromhex("ab12cd99")) == (
        "mw-20261129-0200-ab12cd"
    )
    assert new_window_id(NOW, b"\0\0\0") < new_window_id(NOW + 60, b"\0\0\0")
    with pytest.raises(MaintenanceError, match="entropy"):
        new_window_id(NOW, b"ab")


def test_unknown_zone_in_the_model_is_an_error_before_any_use() -> None:
    with pytest.raises(MaintenanceError, match="IANA name"):
        Recurrence(frozenset({0}), time(2), HOUR, "")


def test_times_are_reported_in_utc() -> None:
    w = _parse(_request(start="2026-11-29T03:00:00+01:00"))
    assert datetime.fromtimestamp(w.start, UTC) == datetime(2026, 11, 29, 2, tzinfo=UTC)
