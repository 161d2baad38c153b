"""The heartbeat contract is defined once: the agent's copy (arcbeat_agent.contract) behaves
exactly as the server's (arcbeat.streams.decide.records and ...decide.identity): the same
limits, the same parse results and error messages, byte-equal bodies and signatures, and
every body the agent writes is one the worker accepts."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

import arcbeat_agent.contract as agent
from arcbeat.streams.decide import identity as server_identity
from arcbeat.streams.decide import records as server
from arcbeat.streams.decide import resource_ids as server_ids
from arcbeat.streams.decide import timestamps as server_times
from arcbeat.streams.decide.records import Heartbeat, decode_heartbeat
from tests.support.examples import examples

GUID = st.uuids().map(str)
RG_CHARS = string.ascii_letters + string.digits + "-_.()"
NAME_CHARS = string.ascii_letters + string.digits + "-_."
SEGMENT = st.one_of(
    st.text(RG_CHARS, min_size=0, max_size=95),
    st.text(min_size=0, max_size=20),  # any unicode, to reach the error messages
)


def test_the_constants_are_the_same() -> None:
    for name in (
        "MAX_MESSAGE_BYTES", "MAX_TAGS", "MAX_TAG_NAME", "MAX_TAG_VALUE", "MAX_LOCATION",
        "MAX_OS_NAME", "MAX_OS_VERSION", "MAX_AGENT_VERSION", "KINDS", "OS_TYPES",
    ):
        assert getattr(agent, name) == getattr(server, name), name
    for name in ("MAX_RESOURCE_ID", "PROVIDER", "RESOURCE_ID_FORMAT"):
        assert getattr(agent, name) == getattr(server_ids, name), name
    assert agent.PRINCIPAL_HEADER == server_identity.PRINCIPAL_HEADER
    assert agent.SIGNATURE_HEADER == server_identity.SIGNATURE_HEADER


def _outcome(parse: object, text: str) -> tuple[str, ...]:
    try:
        rid = parse(text)  # type: ignore[operator]
    except ValueError as exc:
        return ("error", str(exc))
    return ("ok", rid.subscription_id, rid.resource_group, rid.machine_name, rid.original, rid.key)


@settings(max_examples=examples(400))
@given(
    st.one_of(
        st.builds(
            agent.resource_id,
            st.one_of(GUID, st.text(max_size=40)),
            SEGMENT,
            st.one_of(st.text(NAME_CHARS, min_size=0, max_size=70), st.text(max_size=10)),
        ),
        st.text(max_size=600),
        st.builds(lambda s: s.replace("Microsoft.HybridCompute", "Microsoft.Compute"),
                  st.builds(agent.resource_id, GUID, SEGMENT, st.text(NAME_CHARS, max_size=8))),
    )
)
def test_resource_ids_parse_the_same(text: str) -> None:
    assert _outcome(agent.parse_resource_id, text) == _outcome(server_ids.parse_resource_id, text)


def test_resource_id_formatting_is_the_same() -> None:
    args = ("00000000-0000-0000-0000-000000000001", "rg-A", "Web-01")
    assert agent.resource_id(*args) == server_ids.resource_id(*args)


TAGS = st.dictionaries(
    st.text(min_size=1, max_size=20), st.text(max_size=30), max_size=agent.MAX_TAGS
)


@settings(max_examples=examples(300))
@given(
    machine=st.text(NAME_CHARS, min_size=1, max_size=64),
    kind=st.sampled_from(agent.KINDS),
    location=st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=64),
    os_type=st.sampled_from(agent.OS_TYPES),
    os_name=st.text(max_size=agent.MAX_OS_NAME),
    os_version=st.text(max_size=agent.MAX_OS_VERSION),
    version=st.text(min_size=1, max_size=agent.MAX_AGENT_VERSION),
    tags=TAGS,
    sent_at=st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False),
    sequence=st.one_of(st.none(), st.integers(min_value=0, max_value=2**63 - 1)),
)
def test_bodies_are_byte_equal_and_accepted(
    machine: str, kind: str, location: str, os_type: str, os_name: str, os_version: str,
    version: str, tags: dict[str, str], sent_at: float, sequence: int | None,
) -> None:
    rid = agent.resource_id("00000000-0000-0000-0000-00000000000a", "rg", machine)
    kwargs = {
        "kind": kind, "location": location, "os_type": os_type, "os_name": os_name,
        "os_version": os_version, "agent_version": version, "tags": tags, "sent_at": sent_at,
        "sequence": sequence,
    }
    body = agent.heartbeat_payload(rid, **kwargs)  # type: ignore[arg-type]
    assert body == server.heartbeat_payload(rid, **kwargs)  # type: ignore[arg-type]
    assert agent.rfc3339(sent_at) == server_times.rfc3339(sent_at)
    verdict = decode_heartbeat(body, rid.lower().encode(), accepts_region=lambda _r: True)
    if len(body) <= agent.MAX_MESSAGE_BYTES and agent.check_tags(tags) is not None:
        assert isinstance(verdict, Heartbeat), verdict
        assert (verdict.kind, verdict.location, verdict.tags) == (kind, location, tags)


@given(st.binary(max_size=200), st.binary(min_size=1, max_size=64), st.text(max_size=30))
def test_signatures_are_the_same(payload: bytes, secret: bytes, principal: str) -> None:
    assert agent.sign(payload, secret) == server_identity.sign(payload, secret)
    assert agent.signature_headers(principal, secret, payload) == (
        server_identity.signature_headers(principal, secret, payload)
    )


@given(st.text(max_size=70))
def test_location_check_agrees_with_the_worker(location: str) -> None:
    rid = agent.resource_id("00000000-0000-0000-0000-00000000000a", "rg", "m")
    body = server.heartbeat_payload(
        rid, location=location, os_type="linux", agent_version="1", sent_at=0.0
    )
    verdict = decode_heartbeat(body, rid.lower().encode(), accepts_region=lambda _r: True)
    try:
        agent.check_location(location)
    except ValueError:
        # the agent is stricter (lower case only): it never writes what the worker would refuse
        return
    assert isinstance(verdict, Heartbeat), verdict
