"""Fuzzing of :func:`arcbeat.streams.decide.records.decode_heartbeat` with hypothesis.

``python -m arcbeat.bench.fuzz [--examples 16000 --mutants 15] [--seed 1]`` runs the big
fuzz (about 256,000 inputs) and writes its size and result to ``bench/reports/fuzz.json``;
the test suite runs the same checks on a few thousand inputs (tests/e2e/test_security.py).

Inputs mix arbitrary bytes, arbitrary JSON (deeply nested too), and valid heartbeats with
fields replaced by hostile values (wrong types, strings at and past the limits, 40-60 tags,
huge numbers, odd Unicode), with the right key, no key or a wrong one.

Each generated input is also checked with ``mutants`` cheap byte-level mutations of it (flip,
delete, insert, duplicate, truncate), which multiplies the inputs per second. For every input:

- the decoder returns (it is built never to raise) and never through its last-resort
  ``except`` (a ``schema`` reject saying "could not validate the message": an internal bug);
- every reject has a reason from ``REJECT_REASONS`` and a non-empty detail;
- every accepted heartbeat respects the limits: message size, tag count, tag name/value
  lengths, string lengths, region, Resource ID shape, key, sequence range.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from arcbeat.streams.decide.records import (
    KINDS,
    MAX_AGENT_VERSION,
    MAX_LOCATION,
    MAX_MESSAGE_BYTES,
    MAX_OS_NAME,
    MAX_OS_VERSION,
    MAX_SEQUENCE,
    MAX_TAG_NAME,
    MAX_TAG_VALUE,
    MAX_TAGS,
    OS_TYPES,
    REJECT_REASONS,
    Heartbeat,
    decode_heartbeat,
)
from arcbeat.streams.decide.resource_ids import parse_resource_id

REPORT = Path(__file__).resolve().parent / "reports" / "fuzz.json"
INTERNAL = "could not validate the message"
REGIONS = ("westeurope", "westus2", "westasia")

RID = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-a"
    "/providers/Microsoft.HybridCompute/machines/m-1"
)
VALID: dict[str, Any] = {
    "resourceId": RID,
    "kind": "heartbeat",
    "location": "westeurope",
    "osType": "linux",
    "osName": "Ubuntu",
    "osVersion": "22.04",
    "agentVersion": "1.2.3",
    "tags": {"env": "prod"},
    "sentAt": "2024-05-01T12:00:00Z",
    "sequence": 7,
}


def accepts_region(region: str) -> bool:
    return region in REGIONS


def check(raw: bytes, key: bytes | None) -> tuple[str, str | None]:
    """Decode one input; returns (outcome, violation or None)."""
    verdict = decode_heartbeat(raw, key, max_bytes=MAX_MESSAGE_BYTES, accepts_region=accepts_region)
    if not isinstance(verdict, Heartbeat):
        if verdict.reason not in REJECT_REASONS or verdict.reason == "unauthorized":
            return verdict.reason, f"unclassified reason {verdict.reason!r}"
        if not verdict.detail:
            return verdict.reason, "empty detail"
        if INTERNAL in verdict.detail:
            return verdict.reason, f"internal error: {verdict.detail}"
        return verdict.reason, None
    hb = verdict
    problems = [
        (len(raw) > MAX_MESSAGE_BYTES, "accepted a message over max_bytes"),
        (len(hb.tags) > MAX_TAGS, "accepted more than 50 tags"),
        (
            any(not 0 < len(k) <= MAX_TAG_NAME for k in hb.tags),
            "accepted a bad tag name length",
        ),
        (
            any(type(v) is not str or len(v) > MAX_TAG_VALUE for v in hb.tags.values()),
            "accepted a bad tag value",
        ),
        (not 0 < len(hb.agent_version) <= MAX_AGENT_VERSION, "bad agentVersion length"),
        (len(hb.os_name) > MAX_OS_NAME, "osName too long"),
        (len(hb.os_version) > MAX_OS_VERSION, "osVersion too long"),
        (not 0 < len(hb.location) <= MAX_LOCATION, "bad location length"),
        (hb.location not in REGIONS, "accepted an unsupported region"),
        (hb.kind not in KINDS, "bad kind"),
        (hb.os_type not in OS_TYPES, "bad osType"),
        (key != hb.key.encode(), "key is not the lower-cased resourceId"),
        (
            hb.sequence is not None and not 0 <= hb.sequence < MAX_SEQUENCE,
            "sequence out of range",
        ),
        (not math.isfinite(hb.sent_at), "sentAt not finite"),
    ]
    for bad, what in problems:
        if bad:
            return "accepted", what
    try:
        rid = parse_resource_id(hb.resource_id)
    except ValueError as exc:
        return "accepted", f"accepted a bad resourceId: {exc}"
    if rid.key != hb.key:
        return "accepted", "key differs from the parsed Resource ID"
    return "accepted", None


# -- strategies ---------------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def _around(limit: int) -> st.SearchStrategy[str]:
    """Strings near a length limit (either side), of ASCII or odd Unicode."""
    return st.builds(
        lambda n, ch: ch * n,
        st.sampled_from([0, 1, limit - 1, limit, limit + 1, 2 * limit]),
        st.sampled_from(["a", "Z", "é", "\u212a", "\U0001f600", "\x00", "-", "."]),
    )


_tags = st.one_of(
    st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=8),
    st.integers(min_value=MAX_TAGS - 2, max_value=MAX_TAGS + 3).map(
        lambda n: {f"t{i}": "v" for i in range(n)}
    ),
    st.builds(lambda k, v: {k: v}, _around(MAX_TAG_NAME), _around(MAX_TAG_VALUE)),
    _json,
)
_field_values: dict[str, st.SearchStrategy[Any]] = {
    "resourceId": st.one_of(
        _json,
        st.just(RID.upper()),
        st.just(RID + "/"),
        st.just(RID.replace("rg-a", "rg.")),
        st.just(RID.replace("m-1", "m" * 65)),
        st.just(RID.replace("0001", "000g")),
        st.just(RID.replace("m-1", "m\u212a")),
    ),
    "kind": st.one_of(st.sampled_from(["heartbeat", "connect", "disconnect", "HEARTBEAT"]), _json),
    "location": st.one_of(
        st.sampled_from(["westeurope", "WestEurope", "west europe", "antarctica1"]),
        _around(MAX_LOCATION),
        _json,
    ),
    "osType": st.one_of(st.sampled_from(["linux", "Windows", "LINUX", "mac"]), _json),
    "osName": st.one_of(_around(MAX_OS_NAME), _json),
    "osVersion": st.one_of(_around(MAX_OS_VERSION), _json),
    "agentVersion": st.one_of(_around(MAX_AGENT_VERSION), _json),
    "tags": _tags,
    "sentAt": st.one_of(
        st.sampled_from(
            [
                "2024-05-01T12:00:00Z",
                "2024-05-01T12:00:60Z",
                "2024-02-30T12:00:00Z",
                "2024-05-01 12:00:00+02:00",
                "2024-05-01T12:00:00",
                "9999-12-31T23:59:59.999999999Z",
                "0000-01-01T00:00:00Z",
                "2024-W18-3",
            ]
        ),
        _json,
    ),
    "sequence": st.one_of(
        st.sampled_from([0, -1, MAX_SEQUENCE - 1, MAX_SEQUENCE, 2**64, 1.5, True]), _json
    ),
}


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    body = dict(VALID)
    for name in draw(st.lists(st.sampled_from(sorted(_field_values)), max_size=4, unique=True)):
        if draw(st.booleans()):
            body[name] = draw(_field_values[name])
        else:
            body.pop(name, None)
    extra = draw(st.dictionaries(st.text(max_size=6), _json, max_size=2))
    body.update({k: v for k, v in extra.items() if k not in VALID})
    try:
        data = orjson.dumps(body)
    except TypeError:  # ints beyond 64 bits: the stdlib encoder writes them
        data = json.dumps(body).encode()
    cut = draw(st.sampled_from([None, None, None, -1, len(data) // 2]))
    return data if cut is None else data[:cut]


_deep = st.builds(
    lambda n, open_, close: (open_ * n + close * n).encode(),
    st.integers(min_value=1, max_value=5000),
    st.sampled_from(["[", '{"a":']),
    st.sampled_from(["]", "}", ""]),
)
_oversize = st.builds(
    lambda n: orjson.dumps({**VALID, "tags": {"pad": "x" * n}}),
    st.integers(min_value=MAX_MESSAGE_BYTES - 300, max_value=MAX_MESSAGE_BYTES + 300),
)
_inputs = st.one_of(
    st.binary(max_size=300),
    _json.map(lambda v: json.dumps(v).encode()),
    mutated(),
    mutated(),
    mutated(),
    _deep,
    _oversize,
)
_keys = st.one_of(
    st.just(RID.lower().encode()),
    st.just(RID.lower().encode()),
    st.none(),
    st.just(RID.encode()),
    st.binary(max_size=20),
)


def mutate(raw: bytes, rng: random.Random) -> bytes:
    """One cheap byte-level mutation of ``raw``."""
    data = bytearray(raw)
    n = len(data)
    op = rng.randrange(6)
    if n == 0 or op == 0:  # insert random bytes
        at = rng.randint(0, n)
        data[at:at] = rng.randbytes(rng.randint(1, 8))
    elif op == 1:  # flip a byte
        data[rng.randrange(n)] = rng.randrange(256)
    elif op == 2:  # delete a slice
        at = rng.randrange(n)
        del data[at : at + rng.randint(1, 16)]
    elif op == 3:  # duplicate a slice
        at = rng.randrange(n)
        data[at:at] = data[at : at + rng.randint(1, 64)]
    elif op == 4:  # truncate
        del data[rng.randrange(n) :]
    else:  # swap in a JSON token
        at = rng.randrange(n)
        token = rng.choice([b'"', b"{", b"}", b"[", b"]", b",", b":", b"null", b"1e999", b"\\u"])
        data[at : at + 1] = token
    return bytes(data)


def run(
    examples: int,
    *,
    mutants: int = 15,
    seed_value: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``examples`` generated inputs (+ ``mutants`` mutations of each); returns counts by
    outcome and the first violations."""
    outcomes: Counter[str] = Counter()
    violations: list[dict[str, Any]] = []
    started = time.monotonic()
    next_note = [started + 10.0]

    @seed(seed_value)
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(_inputs, _keys, st.randoms(use_true_random=False))
    def fuzz(raw: bytes, key: bytes | None, rng: random.Random) -> None:
        for i in range(mutants + 1):
            data = raw if i == 0 else mutate(raw, rng)
            outcome, problem = check(data, key)
            outcomes[outcome] += 1
            if problem is not None and len(violations) < 20:
                violations.append({"problem": problem, "raw": data[:300].decode("latin-1")})
        if progress is not None and time.monotonic() > next_note[0]:
            progress(f"fuzz: {sum(outcomes.values())} inputs")
            next_note[0] = time.monotonic() + 10.0

    fuzz()
    return {
        "inputs": sum(outcomes.values()),
        "generated": examples,
        "mutants_per_generated": mutants,
        "seed": seed_value,
        "seconds": round(time.monotonic() - started, 1),
        "outcomes": dict(sorted(outcomes.items())),
        "violations": violations,
        "ok": not violations,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--examples", type=int, default=16_000, help="generated inputs (default 16000)"
    )
    parser.add_argument(
        "--mutants", type=int, default=15, help="mutations checked per generated input"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    result = run(
        args.examples,
        mutants=args.mutants,
        seed_value=args.seed,
        progress=lambda m: print(m, flush=True),
    )
    result.update(
        {
            "target": "arcbeat.streams.decide.records.decode_heartbeat",
            "engine": "hypothesis (generate phase only)",
            "python": platform.python_version(),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("inputs", "seconds", "outcomes", "ok")}))
    print(f"fuzz: report in {args.out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
