"""Tick records: what a worker appends to each heartbeats partition it owns every
``check_interval`` (see docs/how-it-decides.md, Ticks), and how a worker reads one back.

A tick shares the heartbeats topic with the agents, so anyone who may produce there can append
something that looks like one. Reading is therefore strict: a record with the tick header
whose body is not exactly a tick is skipped (counted as a ``bad_tick`` reject), never allowed
to stop the partition. With ``tick_key_file`` set, workers sign their ticks (HMAC-SHA256 in
the ``arcbeat-tick-sig`` header) and ignore any tick without a valid signature, so an agent
cannot forge verdicts or maintenance windows either.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from arcbeat.streams.decide.mass_silence import Verdict
from arcbeat.streams.settings import SettingsError

TICK_HEADER = "arcbeat-tick"
SIGNATURE_HEADER = "arcbeat-tick-sig"


@dataclass(frozen=True, slots=True)
class Tick:
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    decided_at: float = 0.0
    maintenance: list[Mapping[str, Any]] = field(default_factory=list)
    # the deciding settings of the worker that wrote it (arcbeat.streams.decide.decisions_settings);
    # None in ticks of workers that did not record them
    settings: dict[str, Any] | None = None


def read_keys(path: str) -> list[bytes]:
    """The tick keys of ``path``: one per line (at least 32 characters), the first signs, all
    verify (so keys can be rotated without a stop: add the new one second, then first)."""
    if not path:
        return []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise SettingsError(f"tick_key_file {path}: cannot read it ({exc})") from None
    keys = [ln.strip().encode() for ln in lines if ln.strip() and not ln.startswith("#")]
    if not keys or any(len(k) < 32 for k in keys):
        raise SettingsError(
            f"tick_key_file {path}: give one key of at least 32 characters per line "
            "(e.g. the output of `openssl rand -hex 32`)"
        )
    return keys


def _sign(key: bytes, value: bytes) -> bytes:
    return hmac.new(key, value, hashlib.sha256).hexdigest().encode()


def encode(
    worker: str,
    verdicts: Mapping[str, Verdict],
    decided_at: float,
    maintenance: Sequence[Mapping[str, Any]],
    keys: Sequence[bytes] = (),
    settings: Mapping[str, Any] | None = None,
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A tick's value and headers."""
    body: dict[str, Any] = {
        "type": "tick",
        "worker": worker,
        "verdicts": {s: [v.silent, v.since, v.machines] for s, v in verdicts.items()},
        "decidedAt": decided_at,
        "maintenance": list(maintenance),
    }
    if settings is not None:
        body["settings"] = dict(settings)
    value = orjson.dumps(body)
    headers = [(TICK_HEADER, b"1")]
    if keys:
        headers.append((SIGNATURE_HEADER, _sign(keys[0], value)))
    return value, headers


def _number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _verdicts(raw: object) -> dict[str, Verdict] | None:
    if not isinstance(raw, dict):
        return None
    out: dict[str, Verdict] = {}
    for scope, v in raw.items():
        if not (
            isinstance(v, list)
            and len(v) == 3
            and isinstance(v[0], bool)
            and _number(v[1])
            and isinstance(v[2], int)
            and not isinstance(v[2], bool)
        ):
            return None
        out[str(scope)] = Verdict(v[0], float(v[1]), v[2])
    return out


def decode(
    value: bytes | None, headers: Sequence[tuple[str, bytes | None]], keys: Sequence[bytes] = ()
) -> Tick | None:
    """The tick of a record with the tick header, or None: not a well-formed tick, or (with
    keys) not signed by a worker."""
    if value is None:
        return None
    if keys:
        sig = next((h[1] for h in headers if h[0] == SIGNATURE_HEADER), None)
        if sig is None or not any(hmac.compare_digest(_sign(k, value), sig) for k in keys):
            return None
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    verdicts = _verdicts(body.get("verdicts", {}))
    decided_at = body.get("decidedAt", 0.0)
    windows = body.get("maintenance", [])
    settings = body.get("settings")
    if (
        verdicts is None
        or not _number(decided_at)
        or not isinstance(windows, list)
        or not all(isinstance(w, dict) for w in windows)
        or not (settings is None or isinstance(settings, dict))
    ):
        return None
    return Tick(verdicts, float(decided_at), windows, settings)
