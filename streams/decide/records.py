"""The heartbeat contract (docs/heartbeat-contract.md): heartbeats, rejects and DLQ records
(Resource IDs: :mod:`.resource_ids`; times: :mod:`.timestamps`).

Everything on the wire is JSON (orjson), camelCase. :func:`decode_heartbeat` is the worker's
hot path: it never raises, and turns any input into a :class:`Heartbeat` or a :class:`Reject`
whose ``detail`` says what is wrong, where (the field path) and how to fix it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NoReturn, get_args

import orjson

from arcbeat.streams.decide.quoting import json_type as _json_type
from arcbeat.streams.decide.quoting import short as _short
from arcbeat.streams.decide.quoting import show as _show
from arcbeat.streams.decide.resource_ids import MAX_RESOURCE_ID, RESOURCE_ID_RE, resource_id_problem
from arcbeat.streams.decide.timestamps import parse_rfc3339, rfc3339

# --------------------------------------------------------------------------------------------
# limits (docs/heartbeat-contract.md, Machines and Resource IDs, Fields)

MAX_MESSAGE_BYTES: Final = 8192
MAX_TAGS: Final = 50
MAX_TAG_NAME: Final = 512
MAX_TAG_VALUE: Final = 256
MAX_LOCATION: Final = 64
MAX_OS_NAME: Final = 128
MAX_OS_VERSION: Final = 64
MAX_AGENT_VERSION: Final = 64
MAX_SEQUENCE: Final = 2**63  # exclusive: a Java long, so any consumer can hold it

Kind = Literal["heartbeat", "connect", "disconnect"]
KINDS: Final[tuple[Kind, ...]] = ("heartbeat", "connect", "disconnect")
OS_TYPES: Final[tuple[str, ...]] = ("linux", "windows")

RejectReason = Literal[
    "invalid_json",
    "schema",
    "too_large",
    "unsupported_region",
    "key_mismatch",
    "missing_key",
    "invalid_utf8",
    "unauthorized",  # identity binding (decide.identity), never from decode_heartbeat
]
REJECT_REASONS: Final[tuple[RejectReason, ...]] = get_args(RejectReason)

# --------------------------------------------------------------------------------------------
# records


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One accepted message of ``<prefix>.heartbeats`` (docs/heartbeat-contract.md)."""

    key: str  # lower-cased resource id
    resource_id: str  # original spelling, for display
    subscription_id: str
    resource_group: str
    machine_name: str
    kind: Kind
    location: str
    os_type: str
    os_name: str
    os_version: str
    agent_version: str
    tags: dict[str, str] = field(hash=False)
    sent_at: float  # unix seconds, from the agent's clock
    sequence: int | None


@dataclass(frozen=True, slots=True)
class Reject:
    """Why a message was refused; goes to the DLQ."""

    reason: RejectReason
    detail: str


def encode_heartbeat(hb: Heartbeat) -> bytes:
    """camelCase JSON; ``decode_heartbeat(encode_heartbeat(hb), hb.key.encode(), ...) == hb``."""
    return heartbeat_payload(
        hb.resource_id,
        kind=hb.kind,
        location=hb.location,
        os_type=hb.os_type,
        os_name=hb.os_name,
        os_version=hb.os_version,
        agent_version=hb.agent_version,
        tags=hb.tags,
        sent_at=hb.sent_at,
        sequence=hb.sequence,
    )


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
    """Build the JSON body of a heartbeat (``sent_at`` as unix seconds or an RFC 3339 string)."""
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


def heartbeat_key(resource_id: str) -> bytes:
    """The Kafka message key for a Resource ID."""
    return resource_id.lower().encode()


# --------------------------------------------------------------------------------------------
# decoding (hot path)


@dataclass(slots=True, eq=False, repr=False)
class _Draft:
    """:class:`Heartbeat`'s mutable twin, with the same slots in the same order.

    The frozen dataclass ``__init__`` costs ~2.5 us (one ``object.__setattr__`` per field);
    the decoder builds a draft with plain stores and then switches its class to
    :class:`Heartbeat` (allowed because the slot layouts are identical), for ~0.6 us.
    """

    key: str
    resource_id: str
    subscription_id: str
    resource_group: str
    machine_name: str
    kind: str  # checked against KINDS before the draft is made
    location: str
    os_type: str
    os_name: str
    os_version: str
    agent_version: str
    tags: dict[str, str]
    sent_at: float
    sequence: int | None


# decode_heartbeat turns a draft into a Heartbeat by swapping its class: same slots, same order
if _Draft.__slots__ != Heartbeat.__slots__:
    raise RuntimeError("arcbeat.streams.decide.records: keep _Draft's fields in Heartbeat's order")

_KIND_SET: Final = frozenset(KINDS)
_OS_TYPES: Final = {"linux": "linux", "windows": "windows", "Linux": "linux", "Windows": "windows"}
_LOCATION_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_REQUIRED: Final = ("resourceId", "location", "osType", "agentVersion", "sentAt")


class _Bad(Exception):
    """Internal: a schema problem found while decoding."""


def decode_heartbeat(
    raw: bytes | None,
    key: bytes | None,
    *,
    max_bytes: int = MAX_MESSAGE_BYTES,
    accepts_region: Callable[[str], bool] = lambda region: True,
) -> Heartbeat | Reject:
    """Validate one Kafka message; never raises.

    Order of checks: size, UTF-8/JSON, schema, region, key. Unknown fields are ignored.
    """
    try:
        return _decode(raw, key, max_bytes, accepts_region)
    except Exception as exc:  # belt and braces: the pipeline must never stop on input
        return Reject("schema", f"could not validate the message: {type(exc).__name__}: {exc}")


def _decode(
    raw: bytes | None, key: bytes | None, max_bytes: int, accepts_region: Callable[[str], bool]
) -> Heartbeat | Reject:
    if raw is None:
        return Reject(
            "invalid_json",
            "message has no value (a tombstone); send one JSON heartbeat object per message",
        )
    size = len(raw)
    if size > max_bytes:
        return Reject(
            "too_large",
            f"message is {size} bytes, at most {max_bytes} allowed; "
            "send fewer or shorter tags (at most 50) and shorter strings",
        )
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            bytes(raw).decode("utf-8")
        except UnicodeDecodeError as uexc:
            return Reject(
                "invalid_utf8",
                f"message is not valid UTF-8 at byte {uexc.start} ({uexc.reason}); "
                "encode the JSON body as UTF-8",
            )
        return Reject("invalid_json", f"message is not valid JSON: {exc}; send one JSON object")
    if type(obj) is not dict:
        return Reject(
            "schema",
            f"message must be a JSON object with resourceId, location, osType, agentVersion "
            f"and sentAt, got a JSON {_json_type(obj)}",
        )
    try:
        hb = _build(obj)
    except _Bad as bad:
        return Reject("schema", str(bad))
    location = hb.location
    if not accepts_region(location):
        return Reject(
            "unsupported_region",
            f"field 'location': region {location!r} is not supported by this deployment; "
            "use one of the configured regions (setting regions / ARCBEAT_REGIONS)",
        )
    if key is None:
        return Reject(
            "missing_key",
            f"message has no Kafka key; produce it with key = the lower-cased resourceId "
            f"({hb.key!r}) so that a machine's heartbeats share one partition",
        )
    if key != hb.key.encode():
        return Reject(
            "key_mismatch",
            f"Kafka key {_show(bytes(key).decode('utf-8', 'replace'))} is not the lower-cased "
            f"resourceId {hb.key!r}; produce with key = resourceId.lower() so that the "
            "machine's state lives on one partition",
        )
    return hb


def _build(obj: dict[str, Any]) -> Heartbeat:
    get = obj.get
    rid = get("resourceId")
    location = get("location")
    os_type = get("osType")
    agent_version = get("agentVersion")
    sent_at = get("sentAt")
    if (
        rid is None
        or location is None
        or os_type is None
        or agent_version is None
        or (sent_at is None)
    ):
        _missing(obj)

    if type(rid) is not str:
        raise _Bad(f"field 'resourceId': expected a string, got {_json_type(rid)}")
    m = RESOURCE_ID_RE.fullmatch(rid) if len(rid) <= MAX_RESOURCE_ID else None
    if m is None:
        raise _Bad(f"field 'resourceId': {resource_id_problem(rid)}")

    kind = get("kind")
    if kind is None:
        kind = "heartbeat"
    elif type(kind) is not str or kind not in _KIND_SET:
        raise _Bad(
            f"field 'kind': expected 'heartbeat', 'connect' or 'disconnect', got {_show(kind)}"
        )

    if type(location) is not str:
        raise _Bad(f"field 'location': expected a string, got {_json_type(location)}")
    if not (
        0 < len(location) <= MAX_LOCATION
        and location.isascii()
        and location.isalnum()
        and location.islower()
    ):
        location = _location(location)

    ost = _OS_TYPES.get(os_type) if type(os_type) is str else None
    if ost is None:
        if type(os_type) is str and os_type.lower() in OS_TYPES:
            ost = os_type.lower()
        else:
            raise _Bad(f"field 'osType': expected 'linux' or 'windows', got {_show(os_type)}")

    # cheap checks inline; _string() only runs to explain a problem
    if type(agent_version) is not str or not 0 < len(agent_version) <= MAX_AGENT_VERSION:
        _string(agent_version, "agentVersion", MAX_AGENT_VERSION, required=True)
    os_name = get("osName")
    if os_name is None:
        os_name = ""
    elif type(os_name) is not str or len(os_name) > MAX_OS_NAME:
        _string(os_name, "osName", MAX_OS_NAME)
    os_version = get("osVersion")
    if os_version is None:
        os_version = ""
    elif type(os_version) is not str or len(os_version) > MAX_OS_VERSION:
        _string(os_version, "osVersion", MAX_OS_VERSION)

    tags = get("tags")
    if tags is None:
        tags = {}
    elif type(tags) is not dict:
        raise _Bad(f"field 'tags': expected an object of string -> string, got {_json_type(tags)}")
    elif tags:
        _tags(tags)

    if type(sent_at) is not str:
        raise _Bad(
            f"field 'sentAt': expected an RFC 3339 string such as 2024-05-01T12:00:00Z, "
            f"got {_json_type(sent_at)}"
        )
    try:
        sent = parse_rfc3339(sent_at)
    except ValueError as exc:
        raise _Bad(f"field 'sentAt': {exc}") from None

    seq = get("sequence")
    if seq is not None and (type(seq) is not int or not 0 <= seq < MAX_SEQUENCE):
        if type(seq) is int:
            raise _Bad(f"field 'sequence': must be >= 0 and < 2**63, got {seq}")
        raise _Bad(
            f"field 'sequence': expected an integer >= 0, got {_json_type(seq)} {_show(seq)}"
        )

    draft = _Draft(
        rid.lower(),
        rid,
        m.group(1),
        m.group(2),
        m.group(3),
        kind,
        location,
        ost,
        os_name,
        os_version,
        agent_version,
        tags,
        sent,
        seq,
    )
    draft.__class__ = Heartbeat  # type: ignore[assignment]
    return draft  # type: ignore[return-value]


def _missing(obj: dict[str, Any]) -> NoReturn:
    missing = [name for name in _REQUIRED if obj.get(name) is None]
    raise _Bad(
        f"missing required field{'s' if len(missing) > 1 else ''} "
        f"{', '.join(repr(n) for n in missing)}; a heartbeat needs "
        f"{', '.join(_REQUIRED)}"
    )


def _location(location: str) -> str:
    """Slow path for ``location``: normalise case (regions are case-insensitive) or explain."""
    if not 0 < len(location) <= MAX_LOCATION:
        raise _Bad(f"field 'location': must be 1-{MAX_LOCATION} characters, got {len(location)}")
    lowered = location.lower()
    if lowered.isascii() and set(lowered) <= _LOCATION_CHARS:
        return lowered
    raise _Bad(
        f"field 'location': expected a region name of letters and digits such as "
        f"'westeurope', got {_show(location)}"
    )


def _string(value: object, name: str, limit: int, *, required: bool = False) -> NoReturn:
    """Explain why ``value`` is not an acceptable string (only called when it is not)."""
    if type(value) is not str:
        raise _Bad(f"field {name!r}: expected a string, got {_json_type(value)}")
    if len(value) > limit:
        raise _Bad(f"field {name!r}: {len(value)} characters, at most {limit} allowed")
    if required and not value:
        raise _Bad(f"field {name!r}: must not be empty")
    raise _Bad(f"field {name!r}: not acceptable: {_show(value)}")


def _tags(tags: dict[str, Any]) -> None:
    if len(tags) > MAX_TAGS:
        raise _Bad(f"field 'tags': {len(tags)} tags, at most {MAX_TAGS} allowed (Azure limit)")
    for name, value in tags.items():
        if not 0 < len(name) <= MAX_TAG_NAME:
            raise _Bad(
                f"field 'tags': tag name {_show(name)} is {len(name)} characters, "
                f"must be 1-{MAX_TAG_NAME}"
            )
        if type(value) is not str:
            raise _Bad(f"field 'tags.{_short(name)}': expected a string, got {_json_type(value)}")
        if len(value) > MAX_TAG_VALUE:
            raise _Bad(
                f"field 'tags.{_short(name)}': value is {len(value)} characters, "
                f"at most {MAX_TAG_VALUE} allowed"
            )


# --------------------------------------------------------------------------------------------
# DLQ

DLQ_MAX_RAW: Final = 2 * 1024 * 1024  # the heartbeats topic's max.message.bytes: never cut


def dlq_record(
    reject: Reject,
    raw: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    received_at: float,
    max_raw: int = DLQ_MAX_RAW,
) -> bytes:
    """The JSON record written to ``<prefix>.heartbeats.dlq`` for a rejected message.

    The payload goes in ``raw`` (text, when it is valid UTF-8) or ``rawBase64``. Payloads over
    ``max_raw`` bytes (only possible for ``too_large``) are cut to ``max_raw`` with
    ``rawTruncated: true``; ``topic``/``partition``/``offset`` still point at the original.
    """
    data = b"" if raw is None else bytes(raw)
    rec: dict[str, Any] = {
        "reason": reject.reason,
        "detail": reject.detail,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "receivedAt": rfc3339(received_at),
        "rawSize": len(data),
    }
    truncated = len(data) > max_raw
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        rec["rawBase64"] = base64.b64encode(data[:max_raw]).decode("ascii")
    else:
        # cut at a character boundary so that the text stays valid
        rec["raw"] = data[:max_raw].decode("utf-8", "ignore") if truncated else text
    if truncated:
        rec["rawTruncated"] = True
    return orjson.dumps(rec)
