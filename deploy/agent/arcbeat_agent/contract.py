"""The heartbeat contract, the agent's side: Resource IDs, the message body and its signature.

The server defines the same contract in ``arcbeat.streams.decide.records`` and
``arcbeat.streams.decide.identity``. This copy holds only what an agent writes, so that the agent
installs without the server; the server's test suite (tests/agent/test_contract.py) holds the
two equal in behaviour: same constants, same parse results and error messages, byte-equal
bodies and signatures.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

MAX_MESSAGE_BYTES: Final = 8192
MAX_TAGS: Final = 50
MAX_TAG_NAME: Final = 512
MAX_TAG_VALUE: Final = 256
MAX_LOCATION: Final = 64
MAX_OS_NAME: Final = 128
MAX_OS_VERSION: Final = 64
MAX_AGENT_VERSION: Final = 64
MAX_RESOURCE_ID: Final = 512

KINDS: Final = ("heartbeat", "connect", "disconnect")
OS_TYPES: Final = ("linux", "windows")
PROVIDER: Final = "Microsoft.HybridCompute/machines"
RESOURCE_ID_FORMAT: Final = (
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroup}"
    "/providers/Microsoft.HybridCompute/machines/{machineName}"
)
PRINCIPAL_HEADER: Final = "arcbeat-principal"
SIGNATURE_HEADER: Final = "arcbeat-signature"

# ASCII only: with re.IGNORECASE alone, [a-z] would also match the Kelvin sign and the long s.
_ASCII_I: Final = re.ASCII | re.IGNORECASE
_GUID: Final = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_RG: Final = r"[a-z0-9_().-]{0,89}[a-z0-9_()-]"
_MACHINE: Final = r"[a-z0-9_.-]{1,64}"
_RESOURCE_ID_RE: Final = re.compile(
    rf"/subscriptions/({_GUID})/resourcegroups/({_RG})"
    rf"/providers/microsoft\.hybridcompute/machines/({_MACHINE})",
    _ASCII_I,
)
_GUID_RE: Final = re.compile(_GUID, _ASCII_I)
_RG_RE: Final = re.compile(_RG, _ASCII_I)
_LOCATION_RE: Final = re.compile(r"[a-z0-9]{1,64}", re.ASCII)


@dataclass(frozen=True, slots=True)
class ResourceId:
    """A machine Resource ID; :attr:`key` is the Kafka message key."""

    subscription_id: str
    resource_group: str
    machine_name: str
    original: str

    @property
    def key(self) -> str:
        return self.original.lower()

    def __str__(self) -> str:
        return self.original


def resource_id(subscription_id: str, resource_group: str, machine_name: str) -> str:
    """Format a Resource ID string (not validated; see :func:`parse_resource_id`)."""
    return (
        f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.HybridCompute/machines/{machine_name}"
    )


def parse_resource_id(text: str) -> ResourceId:
    """Parse a machine Resource ID, or raise :class:`ValueError` saying which part is wrong."""
    if not isinstance(text, str):
        raise ValueError(f"a Resource ID must be a string, got {type(text).__name__}")
    if len(text) <= MAX_RESOURCE_ID:
        m = _RESOURCE_ID_RE.fullmatch(text)
        if m is not None:
            return ResourceId(m.group(1), m.group(2), m.group(3), text)
    raise ValueError(_resource_id_problem(text))


def _resource_id_problem(text: str) -> str:
    shown = _show(text)
    if len(text) > MAX_RESOURCE_ID:
        return f"Resource ID is {len(text)} characters, at most {MAX_RESOURCE_ID} allowed"
    parts = text.split("/")
    expected = f"expected {RESOURCE_ID_FORMAT}, got {shown}"
    if len(parts) != 9 or parts[0] != "":
        return f"Resource ID must have 8 segments separated by '/': {expected}"
    for index, word in ((1, "subscriptions"), (3, "resourceGroups"), (5, "providers")):
        if parts[index].lower() != word.lower():
            return (
                f"Resource ID segment {index} must be {word!r}, "
                f"got {_show(parts[index])}: {expected}"
            )
    provider = f"{parts[6]}/{parts[7]}"
    if provider.lower() != PROVIDER.lower():
        return (
            f"Resource ID provider must be {PROVIDER!r} (case-insensitive), "
            f"got {_show(provider)}: arcbeat only tracks Arc-enabled servers"
        )
    sub, rg, name = parts[2], parts[4], parts[8]
    if not _GUID_RE.fullmatch(sub):
        return (
            f"subscriptionId {_show(sub)} is not a GUID: "
            "expected 8-4-4-4-12 hexadecimal digits such as 00000000-0000-0000-0000-000000000000"
        )
    if not 1 <= len(rg) <= 90:
        return f"resourceGroup must be 1-90 characters, got {len(rg)}"
    if rg.endswith("."):
        return f"resourceGroup {_show(rg)} must not end with '.'"
    if not _RG_RE.fullmatch(rg):
        return (
            f"resourceGroup {_show(rg)} may only contain ASCII letters, digits and -_.() "
            f"(bad character {_show(_first_bad(rg, '-_.()'))})"
        )
    if not 1 <= len(name) <= 64:
        return f"machineName must be 1-64 characters, got {len(name)}"
    return (
        f"machineName {_show(name)} may only contain ASCII letters, digits and -_. "
        f"(bad character {_show(_first_bad(name, '-_.'))})"
    )


def check_location(location: str) -> str:
    """The location as the worker accepts it (lower case letters and digits), or ValueError."""
    if not _LOCATION_RE.fullmatch(location):
        raise ValueError(
            f"location {_show(location)} must be a region name of 1-{MAX_LOCATION} lower-case "
            "letters and digits, such as westeurope"
        )
    return location


def check_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Tags within Azure's limits, or ValueError naming the tag."""
    if len(tags) > MAX_TAGS:
        raise ValueError(f"tags: {len(tags)} given, at most {MAX_TAGS} allowed")
    for name, value in tags.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ValueError(f"tags: {_show(name)} = {_show(value)}: names and values are strings")
        if not 1 <= len(name) <= MAX_TAG_NAME:
            raise ValueError(f"tags: name {_show(name)} must be 1-{MAX_TAG_NAME} characters")
        if len(value) > MAX_TAG_VALUE:
            raise ValueError(f"tags: value of {_show(name)} is over {MAX_TAG_VALUE} characters")
    return dict(tags)


def rfc3339(ts: float) -> str:
    """Unix seconds -> ``2024-05-01T12:00:00.123Z`` (milliseconds, or microseconds if needed)."""
    sec = math.floor(ts)
    us = round((ts - sec) * 1_000_000)
    if us >= 1_000_000:  # rounding reached the next second
        sec, us = sec + 1, us - 1_000_000
    head = f"{datetime.fromtimestamp(sec, UTC):%Y-%m-%dT%H:%M:%S}"
    if us % 1000 == 0:
        return f"{head}.{us // 1000:03d}Z"
    return f"{head}.{us:06d}Z"


def heartbeat_payload(
    resource_id: str,
    *,
    location: str,
    os_type: str,
    agent_version: str,
    sent_at: float | str,
    kind: str = "heartbeat",
    os_name: str = "",
    os_version: str = "",
    tags: Mapping[str, str] | None = None,
    sequence: int | None = None,
) -> bytes:
    """The JSON body of a heartbeat (``sent_at`` as unix seconds or an RFC 3339 string)."""
    body: dict[str, Any] = {"resourceId": resource_id, "kind": kind, "location": location}
    body["osType"] = os_type
    if os_name:
        body["osName"] = os_name
    if os_version:
        body["osVersion"] = os_version
    body["agentVersion"] = agent_version
    if tags:
        body["tags"] = dict(tags)
    body["sentAt"] = sent_at if isinstance(sent_at, str) else rfc3339(sent_at)
    if sequence is not None:
        body["sequence"] = sequence
    return orjson.dumps(body)


def sign(payload: bytes, secret: bytes) -> str:
    """The signature of one message value: HMAC-SHA256, lower-case hex."""
    return hmac.new(secret, payload, hashlib.sha256).hexdigest()


def signature_headers(principal: str, secret: bytes, payload: bytes) -> list[tuple[str, bytes]]:
    """The Kafka headers of a signed message."""
    return [
        (PRINCIPAL_HEADER, principal.encode()),
        (SIGNATURE_HEADER, sign(payload, secret).encode()),
    ]


def _first_bad(text: str, extra: str) -> str:
    for ch in text:
        if not (ch.isascii() and (ch.isalnum() or ch in extra)):
            return ch
    return ""


def _show(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
