"""The simulated fleet's messages: heartbeat bodies from pre-encoded pieces, and malformed
messages of every kind the dead-letter topic knows."""

from __future__ import annotations

import random
from typing import Any, Final

import orjson

from arcbeat.deploy.agents.scenarios import AGENT_VERSIONS, OPERATING_SYSTEMS, Fleet, MalformedKind
from arcbeat.streams.decide.timestamps import rfc3339
from arcbeat.streams.settings import Settings

# a location no deployment accepts
UNSUPPORTED_REGION: Final = "antarctica1"


class PayloadFactory:
    """Heartbeat bodies for fleet machines from pre-encoded pieces (no dict, no orjson)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self._middles: dict[tuple[int, int, int, int], bytes] = {}

    def middle(self, m: int, kind: str) -> bytes:
        fleet = self.fleet
        g = fleet.group(m)
        code = (fleet.location_of[m], fleet.os_of[m], fleet.version_of[m], g % 200)
        cached = self._middles.get(code)
        if cached is None:
            os_type, os_name, os_version = OPERATING_SYSTEMS[code[1]]
            body = orjson.dumps(
                {
                    "location": fleet.spec.locations[code[0]],
                    "osType": os_type,
                    "osName": os_name,
                    "osVersion": os_version,
                    "agentVersion": AGENT_VERSIONS[code[2]],
                    "tags": fleet.tags(m),
                }
            )
            cached = b"," + body[1:-1]
            self._middles[code] = cached
        return b',"kind":"' + kind.encode() + b'"' + cached

    def body(self, m: int, rid: bytes, kind: str, sent_at: bytes, seq: int) -> bytes:
        """The JSON body of machine ``m`` (Resource ID ``rid``); ``sent_at`` as RFC 3339."""
        return b"".join(
            (
                b'{"resourceId":"',
                rid,
                b'"',
                self.middle(m, kind),
                b',"sentAt":"',
                sent_at,
                b'","sequence":',
                str(seq).encode(),
                b"}",
            )
        )

    def payload(self, m: int, kind: str, sent_at: bytes, seq: int) -> tuple[bytes, bytes]:
        """(body, key) of machine ``m``."""
        rid = self.fleet.resource_id(m).encode()
        return self.body(m, rid, kind, sent_at, seq), rid.lower()


def malformed_message(
    fleet: Fleet,
    m: int,
    kind: MalformedKind,
    seq: int,
    now: float,
    rng: random.Random,
    settings: Settings,
) -> tuple[bytes, bytes | None]:
    """A bad message of the given kind about machine ``m``: (payload, key)."""
    rid = fleet.resource_id(m)
    key = rid.lower().encode()
    os_type, os_name, os_version = OPERATING_SYSTEMS[fleet.os_of[m]]
    body: dict[str, Any] = {
        "resourceId": rid,
        "kind": "heartbeat",
        "location": fleet.location(m),
        "osType": os_type,
        "osName": os_name,
        "osVersion": os_version,
        "agentVersion": AGENT_VERSIONS[fleet.version_of[m]],
        "sentAt": rfc3339(now),
        "sequence": seq,
    }
    if kind == "invalid_json":
        raw = orjson.dumps(body)
        return raw[: rng.randrange(1, len(raw) - 1)], key
    if kind == "invalid_utf8":
        return orjson.dumps(body).replace(b'"kind"', b'"ki\xffnd"', 1), key
    if kind == "schema":
        variant = rng.randrange(4)
        if variant == 0:
            del body["sentAt"]
        elif variant == 1:
            body["osType"] = "beos"
        elif variant == 2:
            body["sequence"] = -1
        else:
            body["tags"] = {f"tag{j}": "x" for j in range(51)}
        return orjson.dumps(body), key
    if kind == "unsupported_region":
        body["location"] = UNSUPPORTED_REGION
        return orjson.dumps(body), key
    if kind == "key_mismatch":
        other = fleet.resource_id((m + 1) % len(fleet)).lower().encode()
        return orjson.dumps(body), rid.encode() if rid.encode() != key else other
    if kind == "missing_key":
        return orjson.dumps(body), None
    if kind == "too_large":
        body["padding"] = "x" * settings.input.max_message_bytes
        return orjson.dumps(body), key
    return rng.randbytes(rng.randrange(1, 200)), key  # random_bytes
