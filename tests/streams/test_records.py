"""The heartbeat contract (docs/heartbeat-contract.md): pure tests, no I/O."""

from __future__ import annotations

import base64
import string
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcbeat.streams.decide.records import (
    MAX_SEQUENCE,
    REJECT_REASONS,
    Heartbeat,
    Reject,
    decode_heartbeat,
    dlq_record,
    encode_heartbeat,
    heartbeat_key,
    heartbeat_payload,
)
from arcbeat.streams.decide.resource_ids import ResourceId, parse_resource_id, resource_id
from arcbeat.streams.decide.timestamps import parse_rfc3339, rfc3339
from tests.support.examples import examples

SUB = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
RID = resource_id(SUB, "RG-Web-01", "VM-000123")
REGIONS = ("westus2", "westeurope", "westasia")


def regions(region: str) -> bool:
    return region in REGIONS


def payload(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceId": RID,
        "kind": "heartbeat",
        "location": "westeurope",
        "osType": "linux",
        "osName": "Ubuntu",
        "osVersion": "22.04",
        "agentVersion": "1.2.3",
        "tags": {"env": "prod"},
        "sentAt": "2024-05-01T12:00:00.123Z",
        "sequence": 7,
    }
    for name, value in changes.items():
        if value is _DROP:
            del body[name]
        else:
            body[name] = value
    return body


_DROP = object()


def decode(raw: bytes | None, key: bytes | None = None, **kw: Any) -> Heartbeat | Reject:
    kw.setdefault("max_bytes", 8192)
    kw.setdefault("accepts_region", regions)
    return decode_heartbeat(raw, heartbeat_key(RID) if key is None else key, **kw)


def reject_of(body: Any, **kw: Any) -> Reject:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    result = decode(raw, **kw)
    assert isinstance(result, Reject), result
    return result


# ---------------------------------------------------------------------------------------------
# strategies

_CASE_SPELLINGS = st.sampled_from(
    [
        ("subscriptions", "resourceGroups", "providers", "Microsoft.HybridCompute", "machines"),
        ("SUBSCRIPTIONS", "RESOURCEGROUPS", "PROVIDERS", "MICROSOFT.HYBRIDCOMPUTE", "MACHINES"),
        ("Subscriptions", "resourcegroups", "Providers", "microsoft.hybridcompute", "Machines"),
    ]
)
_LETTERS_DIGITS = string.ascii_letters + string.digits
guids = st.uuids().map(str).flatmap(lambda g: st.sampled_from([g, g.upper(), g.lower()]))
group_names = st.text(_LETTERS_DIGITS + "-_.()", min_size=1, max_size=90).filter(
    lambda s: not s.endswith(".")
)
machine_names = st.text(_LETTERS_DIGITS + "-_.", min_size=1, max_size=64)
_CHARS = st.characters(codec="utf-8")  # any character orjson can encode (no lone surrogates)
text = st.text(_CHARS)


@st.composite
def resource_ids(draw: st.DrawFn) -> tuple[str, str, str, str]:
    sub, rg, name = draw(guids), draw(group_names), draw(machine_names)
    s, g, p, ns, m = draw(_CASE_SPELLINGS)
    return f"/{s}/{sub}/{g}/{rg}/{p}/{ns}/{m}/{name}", sub, rg, name


@st.composite
def heartbeats(draw: st.DrawFn) -> Heartbeat:
    rid, sub, rg, name = draw(resource_ids())
    return Heartbeat(
        key=rid.lower(),
        resource_id=rid,
        subscription_id=sub,
        resource_group=rg,
        machine_name=name,
        kind=draw(st.sampled_from(["heartbeat", "connect", "disconnect"])),
        location=draw(st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=64)),
        os_type=draw(st.sampled_from(["linux", "windows"])),
        os_name=draw(st.text(_CHARS, max_size=128)),
        os_version=draw(st.text(_CHARS, max_size=64)),
        agent_version=draw(st.text(_CHARS, min_size=1, max_size=64)),
        tags=draw(
            st.dictionaries(
                st.text(_CHARS, min_size=1, max_size=512),
                st.text(_CHARS, max_size=256),
                max_size=50,
            )
        ),
        # whole microseconds in 1970..2100: what RFC 3339 with 6 fraction digits can carry
        sent_at=draw(st.integers(0, 4_102_444_800 * 10**6)) / 1e6,
        sequence=draw(st.none() | st.integers(0, MAX_SEQUENCE - 1)),
    )


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)


# ---------------------------------------------------------------------------------------------
# round trip


@given(heartbeats())
@settings(max_examples=examples(300))
def test_round_trip(hb: Heartbeat) -> None:
    raw = encode_heartbeat(hb)
    back = decode_heartbeat(
        raw, hb.key.encode(), max_bytes=1 << 20, accepts_region=lambda region: True
    )
    assert back == hb


def test_decode_fields_and_key() -> None:
    hb = decode(orjson.dumps(payload()))
    assert isinstance(hb, Heartbeat)
    assert hb.key == RID.lower()
    assert hb.resource_id == RID
    assert (hb.subscription_id, hb.resource_group, hb.machine_name) == (
        SUB,
        "RG-Web-01",
        "VM-000123",
    )
    assert hb.sent_at == pytest.approx(1714564800.123)
    assert hb.sequence == 7
    assert hb.tags == {"env": "prod"}


def test_defaults_and_normalisation() -> None:
    body = payload(kind=_DROP, osName=_DROP, osVersion=_DROP, tags=_DROP, sequence=_DROP)
    body.update(location="WestEurope", osType="Windows", unknownField={"deep": [1, 2, 3]})
    hb = decode(orjson.dumps(body))
    assert isinstance(hb, Heartbeat)
    assert (hb.kind, hb.os_name, hb.os_version, hb.tags, hb.sequence) == (
        "heartbeat",
        "",
        "",
        {},
        None,
    )
    assert (hb.location, hb.os_type) == ("westeurope", "windows")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", 1714564800.0),
        ("2024-05-01T12:00:00.5Z", 1714564800.5),
        ("2024-05-01T12:00:00.123456Z", 1714564800.123456),
        ("2024-05-01t12:00:00z", 1714564800.0),
        ("2024-05-01 12:00:00Z", 1714564800.0),
        ("2024-05-01T14:00:00+02:00", 1714564800.0),
        ("2024-05-01T07:30:00-04:30", 1714564800.0),
        ("2016-12-31T23:59:60Z", 1483228800.0),
    ],
)
def test_parse_rfc3339(text: str, expected: float) -> None:
    assert parse_rfc3339(text) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "text",
    ["2024-05-01T12:00:00", "2024-05-01", "2024-W18-3T12:00:00Z", "20240501T120000Z", "", "x"],
)
def test_parse_rfc3339_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_rfc3339(text)


@given(st.integers(0, 4_102_444_800 * 10**6))
def test_rfc3339_round_trip(us: int) -> None:
    ts = us / 1e6
    assert parse_rfc3339(rfc3339(ts)) == ts


def test_rfc3339_format() -> None:
    assert rfc3339(1714564800.123) == "2024-05-01T12:00:00.123Z"
    assert rfc3339(1714564800) == "2024-05-01T12:00:00.000Z"


# ---------------------------------------------------------------------------------------------
# resource ids


@given(resource_ids())
def test_parse_resource_id(parts: tuple[str, str, str, str]) -> None:
    rid, sub, rg, name = parts
    parsed = parse_resource_id(rid)
    assert parsed == ResourceId(sub, rg, name, rid)
    assert parsed.key == rid.lower()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (resource_id("not-a-guid", "rg", "m"), "subscriptionId 'not-a-guid' is not a GUID"),
        (resource_id(SUB, "rg.", "m"), "must not end with '.'"),
        (resource_id(SUB, "r" * 91, "m"), "resourceGroup must be 1-90"),
        (resource_id(SUB, "", "m"), "resourceGroup must be 1-90"),
        (resource_id(SUB, "rg!", "m"), "bad character '!'"),
        (resource_id(SUB, "rg", "m" * 65), "machineName must be 1-64"),
        (resource_id(SUB, "rg", "m/x"), "8 segments"),
        (resource_id(SUB, "rg", "m:x"), "bad character ':'"),
        (resource_id(SUB, "rg", "\u212a"), "bad character"),  # Kelvin sign lower()s to 'k'
        (
            RID.replace("Microsoft.HybridCompute/machines", "Microsoft.Compute/virtualMachines"),
            "provider must be 'Microsoft.HybridCompute/machines'",
        ),
        (RID.replace("resourceGroups", "groups"), "segment 3 must be 'resourceGroups'"),
        ("machine-1", "8 segments"),
    ],
)
def test_parse_resource_id_errors(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_resource_id(text)
    assert fragment in str(info.value)


# ---------------------------------------------------------------------------------------------
# one test per reject reason


def test_reasons_are_the_documented_ones() -> None:
    assert set(REJECT_REASONS) == {
        "invalid_json",
        "schema",
        "too_large",
        "unsupported_region",
        "key_mismatch",
        "missing_key",
        "invalid_utf8",
        "unauthorized",
    }


@given(st.binary(min_size=1, max_size=200))
def test_invalid_json(junk: bytes) -> None:
    raw = b"{" + junk.replace(b"}", b"")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        expected = "invalid_utf8"
    else:
        expected = "invalid_json"
    assert reject_of(raw).reason == expected


def test_invalid_json_examples() -> None:
    for raw in (b"", b"{", b"NaN", b'{"a": NaN}', b"[" * 5000, b"1e999", b"{'single': 1}"):
        assert reject_of(raw).reason == "invalid_json", raw


def test_invalid_utf8() -> None:
    raw = orjson.dumps(payload(osName="X")).replace(b'"X"', b'"\xff\xfe"')
    r = reject_of(raw)
    assert r.reason == "invalid_utf8"
    assert "byte" in r.detail


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ([1, 2], "got a JSON array"),
        ("text", "got a JSON string"),
        (None, "got a JSON null"),
        (payload(resourceId=_DROP), "missing required field 'resourceId'"),
        (payload(sentAt=None), "missing required field 'sentAt'"),
        (payload(resourceId=5), "field 'resourceId': expected a string"),
        (payload(resourceId="/subscriptions/x"), "field 'resourceId'"),
        (payload(kind="reboot"), "field 'kind'"),
        (payload(kind=["heartbeat"]), "field 'kind'"),
        (payload(location="west europe"), "field 'location'"),
        (payload(location="westeuröpe"), "field 'location'"),
        (payload(location="x" * 65), "field 'location': must be 1-64"),
        (payload(location=""), "field 'location': must be 1-64"),
        (payload(osType="macos"), "field 'osType'"),
        (payload(osType={"linux": 1}), "field 'osType'"),
        (payload(agentVersion=""), "field 'agentVersion': must not be empty"),
        (payload(agentVersion="1" * 65), "field 'agentVersion': 65 characters"),
        (payload(agentVersion=1.2), "field 'agentVersion': expected a string"),
        (payload(osName="x" * 129), "field 'osName'"),
        (payload(osVersion=18.04), "field 'osVersion'"),
        (payload(tags=["a"]), "field 'tags'"),
        (payload(tags={f"t{i}": "v" for i in range(51)}), "51 tags, at most 50"),
        (payload(tags={"x" * 513: "v"}), "must be 1-512"),
        (payload(tags={"": "v"}), "must be 1-512"),
        (payload(tags={"env": "v" * 257}), "field 'tags.env': value is 257 characters"),
        (payload(tags={"env": 1}), "field 'tags.env': expected a string"),
        (payload(sentAt=1714564800), "field 'sentAt': expected an RFC 3339 string"),
        (payload(sentAt="2024-05-01T12:00:00"), "field 'sentAt'"),
        (payload(sentAt="2024-13-01T12:00:00Z"), "field 'sentAt': not a valid date"),
        (payload(sequence=-1), "field 'sequence': must be >= 0"),
        (payload(sequence=2**63), "field 'sequence': must be >= 0 and < 2**63"),
        (payload(sequence=1.5), "field 'sequence': expected an integer"),
        (payload(sequence=True), "field 'sequence': expected an integer"),
        (payload(sequence="1"), "field 'sequence': expected an integer"),
    ],
)
def test_schema(body: Any, fragment: str) -> None:
    r = reject_of(body, max_bytes=1 << 20)
    assert r.reason == "schema"
    assert fragment in r.detail


def test_schema_huge_numbers() -> None:
    raw = orjson.dumps(payload()).replace(b'"sequence":7', b'"sequence":' + b"9" * 400)
    r = reject_of(raw)
    assert r.reason in ("schema", "invalid_json")


@given(st.integers(0, 4000))
def test_too_large(extra: int) -> None:
    limit = 300
    raw = orjson.dumps(payload(osName="x" * extra))
    r = decode(raw, max_bytes=limit)
    if len(raw) > limit:
        assert isinstance(r, Reject)
        assert r.reason == "too_large"
        assert str(len(raw)) in r.detail
    else:
        assert not (isinstance(r, Reject) and r.reason == "too_large")


def test_too_large_checked_first() -> None:
    # even garbage: the size is the first check, so a flood of junk costs nothing to parse
    assert reject_of(b"\xff" * 9000).reason == "too_large"


@given(st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=64))
def test_unsupported_region(region: str) -> None:
    r = decode(orjson.dumps(payload(location=region)))
    if region in REGIONS:
        assert isinstance(r, Heartbeat)
    else:
        assert isinstance(r, Reject)
        assert r.reason == "unsupported_region"
        assert repr(region) in r.detail


@given(st.binary(max_size=300))
def test_key_mismatch(key: bytes) -> None:
    r = decode(orjson.dumps(payload()), key=key)
    if key == RID.lower().encode():
        assert isinstance(r, Heartbeat)
    else:
        assert isinstance(r, Reject)
        assert r.reason == "key_mismatch"


def test_key_must_be_lower_cased() -> None:
    r = decode(orjson.dumps(payload()), key=RID.encode())
    assert isinstance(r, Reject)
    assert r.reason == "key_mismatch"
    assert "lower" in r.detail


def test_missing_key() -> None:
    r = decode_heartbeat(orjson.dumps(payload()), None, max_bytes=8192, accepts_region=regions)
    assert isinstance(r, Reject)
    assert r.reason == "missing_key"


def test_tombstone() -> None:
    r = decode_heartbeat(None, b"k", max_bytes=8192, accepts_region=regions)
    assert isinstance(r, Reject)
    assert r.reason == "invalid_json"


def test_check_order() -> None:
    """size, then JSON, then schema, then region, then key."""
    bad_everything = payload(location="eastus", osType="beos")
    assert reject_of(bad_everything, key=b"wrong").reason == "schema"
    assert reject_of(payload(location="eastus"), key=b"wrong").reason == "unsupported_region"


# ---------------------------------------------------------------------------------------------
# never raises


@given(st.binary(max_size=2000), st.none() | st.binary(max_size=50))
@settings(max_examples=examples(500))
def test_random_bytes_never_raise(raw: bytes, key: bytes | None) -> None:
    r = decode_heartbeat(raw, key, max_bytes=1000, accepts_region=regions)
    assert isinstance(r, Heartbeat | Reject)


@given(json_values)
@settings(max_examples=examples(300))
def test_any_json_never_raises(value: Any) -> None:
    r = decode(orjson.dumps(value))
    assert isinstance(r, Reject)


@given(st.sampled_from(sorted(payload())), json_values)
@settings(max_examples=examples(500))
def test_any_field_value_never_raises(name: str, value: Any) -> None:
    r = decode(orjson.dumps(payload(**{name: value})), max_bytes=1 << 20)
    assert isinstance(r, Heartbeat | Reject)


def test_region_callback_failure_is_a_reject() -> None:
    def broken(region: str) -> bool:
        raise RuntimeError("boom")

    r = decode(orjson.dumps(payload()), accepts_region=broken)
    assert isinstance(r, Reject)


# ---------------------------------------------------------------------------------------------
# DLQ


def test_dlq_record_text() -> None:
    raw = b'{"resourceId": 5, "note": "caf\xc3\xa9"}'
    reject = reject_of(raw)
    rec = orjson.loads(
        dlq_record(
            reject, raw, topic="t.heartbeats", partition=3, offset=42, received_at=1714564800.5
        )
    )
    assert rec == {
        "reason": "schema",
        "detail": reject.detail,
        "topic": "t.heartbeats",
        "partition": 3,
        "offset": 42,
        "receivedAt": "2024-05-01T12:00:00.500Z",
        "rawSize": len(raw),
        "raw": raw.decode(),
    }


def test_dlq_record_base64() -> None:
    raw = b"\x00\xff\xfe binary"
    reject = reject_of(raw)
    rec = orjson.loads(dlq_record(reject, raw, topic="t", partition=0, offset=1, received_at=0))
    assert rec["reason"] == "invalid_utf8"
    assert "raw" not in rec
    assert base64.b64decode(rec["rawBase64"]) == raw


@given(st.binary(max_size=500))
def test_dlq_record_holds_any_payload(raw: bytes) -> None:
    rec = orjson.loads(
        dlq_record(Reject("schema", "x"), raw, topic="t", partition=0, offset=0, received_at=1.0)
    )
    got = rec["raw"].encode() if "raw" in rec else base64.b64decode(rec["rawBase64"])
    assert got == raw


def test_dlq_record_truncates_huge_payloads() -> None:
    raw = ("é" * 50_000).encode()
    rec = orjson.loads(
        dlq_record(
            Reject("too_large", "x"),
            raw,
            topic="t",
            partition=0,
            offset=0,
            received_at=1.0,
            max_raw=1001,
        )
    )
    assert rec["rawTruncated"] is True
    assert rec["rawSize"] == len(raw)
    assert rec["raw"] == "é" * 500


def test_payload_helper_matches_encode() -> None:
    raw = heartbeat_payload(
        RID, location="westeurope", os_type="linux", agent_version="1", sent_at=0.0, sequence=3
    )
    hb = decode(raw)
    assert isinstance(hb, Heartbeat)
    assert encode_heartbeat(hb) == raw


# ---- split_heartbeat: the head/tail split of the worker's fast path ---------------------------


def test_split_heartbeat_takes_the_usual_layout() -> None:
    from arcbeat.streams.decide.heartbeat_heads import split_heartbeat

    rid = (
        "/subscriptions/12345678-1234-1234-1234-123456789abc/resourceGroups/rg"
        "/providers/Microsoft.HybridCompute/machines/m1"
    )
    raw = heartbeat_payload(
        rid, location="westeurope", os_type="linux", agent_version="1.0",
        sent_at="2024-05-01T12:00:00.250Z", sequence=7, tags={"a": "b"},
    )  # fmt: skip
    parts = split_heartbeat(raw)
    assert parts is not None
    head, sent, seq = parts
    assert raw.startswith(head) and head.endswith(b'"tags":{"a":"b"}')
    assert (sent, seq) == (parse_rfc3339("2024-05-01T12:00:00.250Z"), 7)
    no_seq = heartbeat_payload(
        rid, location="westeurope", os_type="linux", agent_version="1.0",
        sent_at="2024-05-01T12:00:00Z",
    )  # fmt: skip
    assert split_heartbeat(no_seq) == (no_seq[: no_seq.rfind(b',"sentAt"')], 1714564800.0, None)


@pytest.mark.parametrize(
    "tail",
    [
        b'"sentAt": "2024-05-01T12:00:00Z"}',  # a space: not the usual layout
        b'"sentAt":"2024-05-01T12:00:00Z","sequence":7,"x":1}',  # a field after the sequence
        b'"sentAt":"2024-05-01T12:00:00Z","sequence":07}',  # not a JSON number
        b'"sentAt":"2024-05-01T12:00:00Z","sequence":-1}',
        b'"sentAt":"2024-05-01T12:00:00Z","sequence":1234567890123456789}',  # 19 digits
        b'"sentAt":"2024-13-01T12:00:00Z"}',  # month 13: the full decoder explains it
        b'"sentAt":"2016-12-31T23:59:60Z"}',  # a leap second: the full decoder takes it
        b'"sentAt":"2024-05-01T12:00:00+02:00"}',
        b'"sentAt":"2024-05-01T12:00:00Z"',  # cut short
    ],
)
def test_split_heartbeat_leaves_anything_else_to_the_decoder(tail: bytes) -> None:
    from arcbeat.streams.decide.heartbeat_heads import split_heartbeat

    assert split_heartbeat(b'{"resourceId":"x",' + tail) is None
    assert split_heartbeat(b'{"resourceId":"x"}') is None
