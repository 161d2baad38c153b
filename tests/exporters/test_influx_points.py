"""Records -> line protocol: exact lines per measurement, escaping round-trips, bad input.

Pure: no I/O. The round-trip parser below follows InfluxDB 1.x's own parser (models/points.go):
in tags and field keys a backslash consumes the next character while scanning and only
``\\,`` ``\\ `` ``\\=`` are unescaped; in string fields only ``\\\\`` and ``\\"`` are.
tests/exporters/test_history.py checks the same escaping against a real influxd.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcbeat.exporters.influx_points import (
    QUERIES,
    FieldValue,
    PointError,
    capacity_line,
    decode,
    escape_measurement,
    escape_string_field,
    escape_tag,
    format_line,
    maintenance_points,
    record_to_lines,
    rfc3339_to_ns,
    value_to_lines,
)
from tests.support.examples import examples

# ------------------------------------------------------------------------------ a parser


def _scan(text: str, i: int, stops: str) -> tuple[str, int]:
    """Raw token from i up to an unescaped stop character (a backslash takes the next char)."""
    start = i
    while i < len(text) and text[i] not in stops:
        i += 2 if text[i] == "\\" else 1
    return text[start:i], min(i, len(text))


def _unescape_tag(raw: str) -> str:
    out, i = [], 0
    while i < len(raw):
        if raw[i] == "\\" and i + 1 < len(raw) and raw[i + 1] in ",= ":
            out.append(raw[i + 1])
            i += 2
        else:
            out.append(raw[i])
            i += 1
    return "".join(out)


def _unescape_measurement(raw: str) -> str:
    return raw.replace("\\,", ",").replace("\\ ", " ")


def _parse_field_value(text: str, i: int) -> tuple[object, int]:
    if text[i] == '"':
        out, i = [], i + 1
        while text[i] != '"':
            if text[i] == "\\" and text[i + 1] in '\\"':
                out.append(text[i + 1])
                i += 2
            else:
                out.append(text[i])
                i += 1
        return "".join(out), i + 1
    raw, j = _scan(text, i, ", ")
    if raw in ("true", "false"):
        return raw == "true", j
    if raw.endswith("i"):
        return int(raw[:-1]), j
    return float(raw), j


def parse_line(text: str) -> tuple[str, dict[str, str], dict[str, object], int]:
    assert "\n" not in text.split(" ", 1)[0], "no line break before the fields"
    raw, i = _scan(text, 0, ", ")
    measurement = _unescape_measurement(raw)
    tags: dict[str, str] = {}
    while text[i] == ",":
        key, i = _scan(text, i + 1, "=")
        value, i = _scan(text, i + 1, ", ")
        assert value, "empty tag value"
        tags[_unescape_tag(key)] = _unescape_tag(value)
    assert text[i] == " "
    i += 1
    fields: dict[str, object] = {}
    while True:
        key, i = _scan(text, i, "=")
        fvalue, i = _parse_field_value(text, i + 1)
        fields[_unescape_tag(key)] = fvalue
        if text[i] == " ":
            break
        assert text[i] == ","
        i += 1
    return measurement, tags, fields, int(text[i + 1 :])


# ------------------------------------------------------------------------------ escaping

# Text with the characters that matter, plus anything else (unicode included).
_special = st.sampled_from([",", " ", "=", '"', "\\", "é", "🚀", "\t", "'"])
_text = st.lists(st.one_of(_special, st.characters(exclude_categories=["Cs"])), max_size=30).map(
    "".join
)


def _tag_representable(value: str) -> bool:
    if "\n" in value or "\r" in value:
        return False
    return not any(
        value[i] == "\\" and (i + 1 == len(value) or value[i + 1] in ",= ")
        for i in range(len(value))
    )


@given(_text)
def test_tag_value_round_trips_or_is_refused(value: str) -> None:
    if not _tag_representable(value):
        with pytest.raises(PointError) as exc:
            escape_tag(value)
        assert exc.value.reason == "unrepresentable"
        return
    line = format_line("m", {"k": value}, {"f": 1}, 5)
    _, tags, fields, ts = parse_line(line)
    assert tags == ({"k": value} if value else {})
    assert fields == {"f": 1} and ts == 5


@given(_text)
def test_string_field_round_trips(value: str) -> None:
    line = format_line("m", {}, {"s": value}, 0)
    assert parse_line(line)[2] == {"s": value}


@given(
    st.dictionaries(_text.filter(lambda s: s and _tag_representable(s)), _text, max_size=5),
    st.dictionaries(
        _text.filter(lambda s: s and _tag_representable(s)),
        st.one_of(
            _text,
            st.integers(-(2**63), 2**63 - 1),
            st.floats(allow_nan=False, allow_infinity=False),
            st.booleans(),
        ),
        min_size=1,
        max_size=5,
    ),
    st.integers(-(2**62), 2**62),
)
@settings(max_examples=examples(200))
def test_whole_line_round_trips(
    tags: dict[str, str], fields: dict[str, FieldValue], ts: int
) -> None:
    tags = {k: v for k, v in tags.items() if _tag_representable(v)}
    line = format_line("my measurement,x", tags, fields, ts)
    m, parsed_tags, parsed_fields, parsed_ts = parse_line(line)
    assert m == "my measurement,x"
    assert parsed_tags == {k: v for k, v in tags.items() if v}
    assert parsed_ts == ts
    assert parsed_fields.keys() == fields.keys()
    for key, value in fields.items():
        got = parsed_fields[key]
        assert type(got) is type(value) and got == value


def test_known_good_escapes() -> None:
    assert escape_tag("a b,c=d") == r"a\ b\,c\=d"
    assert escape_tag(r"a\b") == r"a\b"  # a lone backslash is literal in tags
    assert escape_string_field('say "hi" \\o/') == r'"say \"hi\" \\o/"'
    assert escape_measurement("cpu load,x") == r"cpu\ load\,x"
    with pytest.raises(PointError, match="line break"):
        escape_tag("a\nb")
    with pytest.raises(PointError, match="backslash"):
        escape_tag("trailing\\")


def test_float_and_int_fields() -> None:
    line = format_line("m", {}, {"f": 0.1, "g": 1e-7, "i": 3, "z": 0.0, "b": False}, 1)
    assert line == "m f=0.1,g=1e-07,i=3i,z=0.0,b=false 1"
    with pytest.raises(PointError):
        format_line("m", {}, {"f": math.inf}, 1)
    with pytest.raises(PointError, match="at least one field"):
        format_line("m", {"t": "x"}, {}, 1)


# ------------------------------------------------------------------------------ time


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1)))
def test_rfc3339_to_ns_is_exact(dt: datetime) -> None:
    dt = dt.replace(tzinfo=UTC)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    expected = (dt - epoch) // timedelta(microseconds=1) * 1000
    assert rfc3339_to_ns(dt.isoformat().replace("+00:00", "Z")) == expected


def test_rfc3339_variants() -> None:
    assert rfc3339_to_ns("1970-01-01T00:00:01.123456789Z") == 1_123_456_789
    assert rfc3339_to_ns("1970-01-01T01:00:00+01:00") == 0
    assert rfc3339_to_ns("1970-01-01 00:00:00.5z") == 500_000_000
    with pytest.raises(ValueError, match="RFC 3339"):
        rfc3339_to_ns("2024-05-01 12:00")  # no zone


# ------------------------------------------------------------------------------ records

SUB = "00000000-0000-0000-0000-0000000000aa"
RID = (
    f"/subscriptions/{SUB}/resourceGroups/Prod-RG/providers/Microsoft.HybridCompute/machines/Web 1"
)


def status_changed(**over: object) -> dict[str, object]:
    rec: dict[str, object] = {
        "type": "StatusChanged",
        "transitionId": f"{RID.lower()}#2",
        "resourceId": RID,
        "subscriptionId": SUB,
        "resourceGroup": "Prod-RG",
        "machineName": "Web 1",
        "location": "westeurope",
        "osType": "linux",
        "agentVersion": "1.0",
        "tags": {"env": "prod"},
        "previousStatus": "Connected",
        "status": "Disconnected",
        "reason": "heartbeat_timeout",
        "changedAt": "2024-05-01T12:15:00.250Z",
        "lastHeartbeatAt": "2024-05-01T12:00:00Z",
        "detectionDelaySeconds": 0.25,
        "flapping": False,
        "massOutage": True,
    }
    rec.update(over)
    return rec


def test_status_changed_line() -> None:
    (line,) = record_to_lines(status_changed())
    rid = RID.lower().replace(" ", "\\ ")
    assert line == (
        f"transitions,location=westeurope,mass_outage=true,os_type=linux,"
        f"previous_status=Connected,reason=heartbeat_timeout,resource_group=Prod-RG,"
        f"resource_id={rid},status=Disconnected,subscription_id={SUB} "
        f'machine_name="Web 1",transition_id="{RID.lower()}#2",detection_delay=0.25,'
        f'last_heartbeat_at=1714564800.0,flapping=false,maintenance="" 1714565700250000000'
    )


def test_onboarding_has_previous_status_none_and_zero_delay() -> None:
    rec = status_changed(previousStatus=None, status="Connected", reason="onboarded")
    rec["detectionDelaySeconds"] = None
    _, tags, fields, _ = parse_line(record_to_lines(rec)[0])
    assert tags["previous_status"] == "none"
    assert fields["detection_delay"] == 0.0
    assert tags["mass_outage"] == "true"


def test_same_record_same_line() -> None:
    """Idempotent re-writes: the point depends only on the record (no clock)."""
    value = orjson.dumps(status_changed())
    assert value_to_lines(value) == value_to_lines(value)


def test_scope_events() -> None:
    for kind in ("ScopeSilent", "ScopeRecovered", "ScopeDegraded", "ScopeDegradationCleared"):
        rec = {
            "type": kind,
            "scope": "location=westeurope",
            "machines": 1234,
            "at": "1970-01-01T00:00:10Z",
        }
        assert record_to_lines(rec) == [
            f"scope_events,scope=location\\=westeurope,type={kind} machines=1234i 10000000000"
        ]


def test_partition_snapshot() -> None:
    rec = {
        "type": "PartitionSnapshot",
        "partition": 3,
        "at": "1970-01-01T00:00:20Z",
        "scopes": {
            "fleet": {"Connected": 5, "Disconnected": 2, "Expired": 1},
            "location=westeurope": {"Connected": 5},
        },
    }
    assert record_to_lines(rec) == [
        "fleet,partition=3,scope=fleet connected=5i,disconnected=2i,expired=1i 20000000000",
        "fleet,partition=3,scope=location\\=westeurope connected=5i,disconnected=0i,expired=0i "
        "20000000000",
    ]


def test_window_counts() -> None:
    rec = {
        "type": "WindowCounts",
        "resourceId": RID,
        "subscriptionId": SUB,
        "location": "westeurope",
        "windowStart": "1970-01-01T01:00:00Z",
        "windowEnd": "1970-01-01T02:00:00Z",
        "received": 11,
        "expected": 12,
    }
    (line,) = record_to_lines(rec)
    _, tags, fields, ts = parse_line(line)
    assert tags == {"resource_id": RID.lower(), "subscription_id": SUB, "location": "westeurope"}
    # no plannedSeconds: no planned downtime in the window
    assert fields == {
        "received": 11,
        "expected": 12,
        "availability": 11 / 12,
        "planned_seconds": 0.0,
    }
    assert ts == 3600 * 10**9
    (line,) = record_to_lines({**rec, "expected": 0, "received": 0})
    assert "availability=" not in line


def test_window_counts_with_planned_downtime() -> None:
    """received/expected already leave planned time out; plannedSeconds is written beside."""
    rec = {
        "type": "WindowCounts",
        "resourceId": RID,
        "windowStart": "1970-01-01T01:00:00Z",
        "windowEnd": "1970-01-01T02:00:00Z",
        "received": 6,
        "expected": 6,
        "plannedSeconds": 1800,
    }
    _, _, fields, _ = parse_line(record_to_lines(rec)[0])
    assert fields["availability"] == 1.0
    assert fields["planned_seconds"] == 1800.0 and isinstance(fields["planned_seconds"], float)
    # a window entirely in maintenance expects nothing: no availability, only planned time
    _, _, fields, _ = parse_line(
        record_to_lines({**rec, "received": 0, "expected": 0, "plannedSeconds": 3600.0})[0]
    )
    assert fields == {"received": 0, "expected": 0, "planned_seconds": 3600.0}
    with pytest.raises(PointError, match="plannedSeconds") as exc:
        record_to_lines({**rec, "plannedSeconds": "1h"})
    assert exc.value.reason == "schema"


def window(**over: object) -> dict[str, object]:
    """A ``<prefix>.maintenance`` value (the maintenance window contract)."""
    rec: dict[str, object] = {
        "id": "mw-20240501-1200-ab12cd",
        "selector": {"subscriptionId": SUB, "resourceGroup": "Prod-RG", "tags": {"env": "prod"}},
        "start": "2024-05-01T12:00:00Z",
        "end": "2024-05-01T14:00:00Z",
        "recurrence": None,
        "reason": 'patching "May"',
        "createdBy": "alice",
        "createdAt": "2024-05-01T11:00:00Z",
        "endedBy": None,
        "endedAt": None,
    }
    rec.update(over)
    return rec


def test_maintenance_point() -> None:
    (line,) = maintenance_points(window())
    measurement, tags, fields, ts = parse_line(line)
    assert measurement == "maintenance"
    assert tags == {"window_id": "mw-20240501-1200-ab12cd"}
    assert fields == {
        "reason": 'patching "May"',
        "created_by": "alice",
        "selector": orjson.dumps(
            {"resourceGroup": "Prod-RG", "subscriptionId": SUB, "tags": {"env": "prod"}}
        ).decode(),
        "recurrence": "",
        "ended_by": "",
        "start": 1714564800.0,
        "end": 1714572000.0,
    }
    assert ts == 1714564800 * 10**9  # time = start
    # re-delivery writes the same line (selector keys sorted, no clock)
    shuffled = window(
        selector={"tags": {"env": "prod"}, "resourceGroup": "Prod-RG", "subscriptionId": SUB}
    )
    assert maintenance_points(shuffled) == [line]


def test_maintenance_point_of_an_ended_recurring_window() -> None:
    recurrence = {
        "days": ["sat", "sun"],
        "at": "02:00",
        "duration": 7200.0,
        "timeZone": "Europe/Berlin",
    }
    rec = window(
        selector={"resourceIds": [RID]},
        end="2024-06-01T00:00:00Z",
        recurrence=recurrence,
        endedBy="bob",
        endedAt="2024-05-10T08:30:00Z",
    )
    _, _, fields, ts = parse_line(maintenance_points(rec)[0])
    assert fields["ended_by"] == "bob"
    # ended early: the point ends when it was ended (same series and time: an overwrite)
    assert fields["end"] == datetime(2024, 5, 10, 8, 30, tzinfo=UTC).timestamp()
    assert orjson.loads(str(fields["recurrence"])) == recurrence
    assert orjson.loads(str(fields["selector"])) == {"resourceIds": [RID]}
    assert ts == 1714564800 * 10**9
    # ended before it began: it covered nothing, end = start
    _, _, fields, _ = parse_line(
        maintenance_points(window(endedBy="bob", endedAt="2024-05-01T10:00:00Z"))[0]
    )
    assert fields["end"] == fields["start"]


@pytest.mark.parametrize(
    ("over", "words"),
    [
        ({"id": ""}, "'id'"),
        ({"selector": None}, "'selector'"),
        ({"selector": {}}, "'selector'"),
        ({"start": "soon"}, "'start'"),
        ({"end": None}, "'end'"),
        ({"endedAt": "later"}, "'endedAt'"),
        ({"reason": 7}, "'reason'"),
        ({"recurrence": "weekly"}, "'recurrence'"),
        ({"id": "mw-1\\"}, "backslash"),
        ({"id": "mw-\n1"}, "line break"),
    ],
)
def test_bad_maintenance_windows_say_why(over: dict[str, object], words: str) -> None:
    with pytest.raises(PointError) as exc:
        maintenance_points(window(**over))
    assert exc.value.reason in ("schema", "unrepresentable")
    assert str(exc.value).startswith("maintenance window: ")
    assert words in str(exc.value)


def test_capacity() -> None:
    assert capacity_line(
        "machines_per_resource_group", f"resource_group={SUB}/rg", 400, 800, 7
    ) == (
        f"capacity,kind=machines_per_resource_group,scope=resource_group\\={SUB}/rg "
        "used=400i,limit=800i,ratio=0.5 7"
    )
    rec = {
        "type": "CapacitySnapshot",
        "at": "1970-01-01T00:00:00Z",
        "kind": "tenant_objects",
        "scope": "tenant",
        "used": 1,
        "limit": 0,
    }
    assert record_to_lines(rec) == ["capacity,kind=tenant_objects,scope=tenant used=1i,limit=0i 0"]


@pytest.mark.parametrize(
    ("value", "reason", "words"),
    [
        (None, "empty", "tombstone"),
        (b"", "empty", "tombstone"),
        (b"{not json", "invalid_json", "not JSON"),
        (b"[1]", "schema", "JSON object"),
        (b'{"type":"Bogus"}', "unknown_type", "unknown record type 'Bogus'"),
        (b'{"status":"x"}', "unknown_type", "unknown record type None"),
        (orjson.dumps(status_changed(changedAt="yesterday")), "schema", "changedAt"),
        (orjson.dumps(status_changed(resourceId=None)), "schema", "resourceId"),
        (orjson.dumps(status_changed(flapping="no")), "schema", "flapping"),
        (
            orjson.dumps(status_changed(detectionDelaySeconds="1")),
            "schema",
            "detectionDelaySeconds",
        ),
        (orjson.dumps(status_changed(location="west\neurope")), "unrepresentable", "line break"),
        (
            b'{"type":"ScopeSilent","scope":"fleet","machines":1.5,"at":"1970-01-01T00:00:00Z"}',
            "schema",
            "machines",
        ),
        (
            b'{"type":"PartitionSnapshot","partition":1,"at":"1970-01-01T00:00:00Z","scopes":[]}',
            "schema",
            "scopes",
        ),
    ],
)
def test_bad_records_say_why(value: bytes | None, reason: str, words: str) -> None:
    with pytest.raises(PointError) as exc:
        value_to_lines(value)
    assert exc.value.reason == reason
    assert words in str(exc.value)


def test_extra_fields_are_ignored() -> None:
    rec = decode(orjson.dumps({**status_changed(), "decidedAt": "x", "__faust": {"ns": "y"}}))
    assert len(record_to_lines(rec)) == 1


def test_queries_name_every_measurement() -> None:
    text = " ".join(QUERIES.values())
    for measurement in (
        "transitions",
        "scope_events",
        "fleet",
        "availability",
        "capacity",
        "maintenance",
    ):
        assert f"FROM {measurement} " in text
