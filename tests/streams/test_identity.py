"""Identity binding (arcbeat.streams.decide.identity) and its use in Engine.handle_message: pure."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from arcbeat.streams.decide.engine import Engine
from arcbeat.streams.decide.identity import (
    PRINCIPAL_HEADER,
    SIGNATURE_HEADER,
    IdentityBindings,
    IdentityError,
    load_bindings,
    make_binding,
    sign,
    signature_headers,
)
from arcbeat.streams.decide.records import Heartbeat, decode_heartbeat, heartbeat_payload
from arcbeat.streams.decide.resource_ids import resource_id
from arcbeat.streams.settings import Settings

SUB_A = "00000000-0000-0000-0000-00000000000a"
SUB_B = "00000000-0000-0000-0000-00000000000b"
SECRET_1 = b"secret-of-agent-1-0123456789"
SECRET_2 = b"secret-of-agent-2-0123456789"


def payload(sub: str = SUB_A, rg: str = "rg-a", name: str = "m1") -> tuple[bytes, bytes]:
    rid = resource_id(sub, rg, name)
    raw = heartbeat_payload(
        rid, location="westeurope", os_type="linux", agent_version="1.0", sent_at=1.7e9
    )
    return raw, rid.lower().encode()


def heartbeat(raw: bytes, key: bytes) -> Heartbeat:
    hb = decode_heartbeat(raw, key)
    assert isinstance(hb, Heartbeat)
    return hb


BINDINGS = IdentityBindings(
    {
        "agent-1": make_binding("agent-1", SECRET_1, [SUB_A]),
        "agent-2": make_binding(
            "agent-2", SECRET_2, [f"/subscriptions/{SUB_B}/resourceGroups/RG-B/"]
        ),
    }
)


def test_signed_heartbeat_of_an_allowed_machine_passes() -> None:
    raw, key = payload()
    assert (
        BINDINGS.check(signature_headers("agent-1", SECRET_1, raw), raw, heartbeat(raw, key))
        is None
    )


def test_resource_id_prefix_is_case_insensitive_and_whole_segments() -> None:
    raw, key = payload(SUB_B, "rg-b", "m9")
    hdrs = signature_headers("agent-2", SECRET_2, raw)
    assert BINDINGS.check(hdrs, raw, heartbeat(raw, key)) is None
    raw, key = payload(SUB_B, "rg-b2", "m9")  # rg-b is a prefix of rg-b2 as text, not as path
    r = BINDINGS.check(signature_headers("agent-2", SECRET_2, raw), raw, heartbeat(raw, key))
    assert r is not None and r.reason == "unauthorized" and "may not report" in r.detail


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ([], "no single"),
        ([(PRINCIPAL_HEADER, b"agent-1")], "no single"),
        ([(PRINCIPAL_HEADER, b"nobody"), (SIGNATURE_HEADER, b"00")], "not in this deployment"),
        ([(PRINCIPAL_HEADER, b"agent-1"), (SIGNATURE_HEADER, b"00")], "does not match"),
        (
            [
                (PRINCIPAL_HEADER, b"agent-1"),
                (PRINCIPAL_HEADER, b"agent-2"),
                (SIGNATURE_HEADER, b"00"),
            ],
            "no single",
        ),
    ],
)
def test_missing_or_bad_signature_is_unauthorized(
    headers: list[tuple[str, bytes]], fragment: str
) -> None:
    raw, key = payload()
    r = BINDINGS.check(headers, raw, heartbeat(raw, key))
    assert r is not None and r.reason == "unauthorized" and fragment in r.detail


def test_an_agent_cannot_report_for_another_subscription() -> None:
    raw, key = payload(SUB_B, "rg-b", "victim")
    r = BINDINGS.check(signature_headers("agent-1", SECRET_1, raw), raw, heartbeat(raw, key))
    assert r is not None and "may not report" in r.detail


def test_signature_with_another_principals_secret_fails() -> None:
    raw, key = payload()
    headers = [(PRINCIPAL_HEADER, b"agent-1"), (SIGNATURE_HEADER, sign(raw, SECRET_2).encode())]
    r = BINDINGS.check(headers, raw, heartbeat(raw, key))
    assert r is not None and "does not match" in r.detail


@given(st.binary(min_size=1, max_size=64), st.integers(min_value=0, max_value=10_000))
def test_any_change_to_a_signed_payload_is_detected(junk: bytes, at: int) -> None:
    raw, key = payload()
    headers = signature_headers("agent-1", SECRET_1, raw)
    i = at % len(raw)
    tampered = raw[:i] + junk + raw[i + 1 :]
    if tampered == raw:
        return
    r = BINDINGS.check(headers, tampered, heartbeat(raw, key))
    assert r is not None and r.reason == "unauthorized"


def test_secret_never_in_repr() -> None:
    assert SECRET_1.decode() not in repr(BINDINGS)


def test_load_toml_and_json(tmp_path: Path) -> None:
    (tmp_path / "a1.secret").write_text(SECRET_1.decode() + "\n")
    toml = tmp_path / "bindings.toml"
    toml.write_text(
        f'[principals.agent-1]\nsecret_file = "a1.secret"\nallow = ["{SUB_A}"]\n'
        f'[principals.agent-2]\nsecret = "{SECRET_2.decode()}"\nallow = ["*"]\n'
    )
    loaded = load_bindings(toml)
    assert loaded.principals["agent-1"].secret == SECRET_1
    assert loaded.principals["agent-2"].any_machine
    js = tmp_path / "bindings.json"
    js.write_text(json.dumps({"agent-1": {"secret": SECRET_1.decode(), "allow": [SUB_A]}}))
    assert load_bindings(js).principals["agent-1"].subscriptions == frozenset({SUB_A})


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[principals.a]\nallow = []\n", "needs a secret"),
        ('[principals.a]\nsecret = "0123456789abcdef"\nallow = ["rg-a"]\n', "neither"),
        ('[principals.a]\nsecret = "0123456789abcdef"\n', "allow must be a list"),
        ('[principals.a]\nsecret_file = "missing"\nallow = []\n', "secret_file"),
        ("not toml = = =", "not valid"),
    ],
)
def test_bad_bindings_file_says_what_and_where(tmp_path: Path, text: str, fragment: str) -> None:
    f = tmp_path / "b.toml"
    f.write_text(text)
    with pytest.raises(IdentityError) as info:
        load_bindings(f)
    assert fragment in str(info.value) and str(f) in str(info.value)


def _engine(identity: IdentityBindings | None) -> Engine:
    settings = Settings.load(env={}, regions="*")
    return Engine(settings, identity=identity)


def test_engine_rejects_unsigned_heartbeats_to_the_dlq_when_bound() -> None:
    raw, key = payload()
    engine = _engine(BINDINGS)
    emits, hb = engine.handle_message(0, 5, key, raw, 1.7e9, topic="t", wall_now=1.7e9)
    assert not hb and [e.topic for e in emits] == ["dlq"]
    record = orjson.loads(emits[0].value)
    assert record["reason"] == "unauthorized" and record["offset"] == 5
    assert engine.stats.rejects["unauthorized"] == 1
    emits, hb = engine.handle_message(
        0,
        6,
        key,
        raw,
        1.7e9,
        topic="t",
        wall_now=1.7e9,
        headers=signature_headers("agent-1", SECRET_1, raw),
    )
    assert hb and [e.topic for e in emits] == ["status"]


def test_engine_without_bindings_ignores_headers() -> None:
    raw, key = payload()
    emits, hb = _engine(None).handle_message(0, 0, key, raw, 1.7e9, topic="t", wall_now=1.7e9)
    assert hb and [e.topic for e in emits] == ["status"]


def test_engine_loads_bindings_from_the_setting(tmp_path: Path) -> None:
    f = tmp_path / "b.json"
    f.write_text(json.dumps({"agent-1": {"secret": SECRET_1.decode(), "allow": [SUB_A]}}))
    engine = Engine(Settings.load(env={}, identity_bindings=str(f)))
    assert engine.identity is not None and "agent-1" in engine.identity.principals
