"""Resource IDs of Arc-enabled servers (docs/heartbeat-contract.md, Machines and Resource
IDs): building one, parsing one, and saying exactly what is wrong with a bad one."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from arcbeat.streams.decide.quoting import show as _show
from arcbeat.streams.decide.quoting import type_name as _type_name

MAX_RESOURCE_ID: Final = 512
PROVIDER: Final = "Microsoft.HybridCompute/machines"
RESOURCE_ID_FORMAT: Final = (
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroup}"
    "/providers/Microsoft.HybridCompute/machines/{machineName}"
)


# ASCII only: with re.IGNORECASE alone, [a-z] would also match the Kelvin sign and the long s.
_ASCII_I: Final = re.ASCII | re.IGNORECASE
_GUID: Final = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_RG: Final = r"[a-z0-9_().-]{0,89}[a-z0-9_()-]"
_MACHINE: Final = r"[a-z0-9_.-]{1,64}"
RESOURCE_ID_RE: Final = re.compile(
    rf"/subscriptions/({_GUID})/resourcegroups/({_RG})"
    rf"/providers/microsoft\.hybridcompute/machines/({_MACHINE})",
    _ASCII_I,
)
_GUID_RE: Final = re.compile(_GUID, _ASCII_I)
_RG_RE: Final = re.compile(_RG, _ASCII_I)


@dataclass(frozen=True, slots=True)
class ResourceId:
    """An Azure-style machine Resource ID; compare machines by :attr:`key`."""

    subscription_id: str
    resource_group: str
    machine_name: str
    original: str

    @property
    def key(self) -> str:
        """The lower-cased Resource ID: Kafka message key and table key."""
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
        raise ValueError(f"a Resource ID must be a string, got {_type_name(text)}")
    if len(text) <= MAX_RESOURCE_ID:
        m = RESOURCE_ID_RE.fullmatch(text)
        if m is not None:
            return ResourceId(m.group(1), m.group(2), m.group(3), text)
    raise ValueError(resource_id_problem(text))


def resource_id_problem(text: str) -> str:
    """The slow path: explain precisely why ``text`` is not a machine Resource ID."""
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


def _first_bad(text: str, extra: str) -> str:
    for ch in text:
        if not (ch.isascii() and (ch.isalnum() or ch in extra)):
            return ch
    return ""
