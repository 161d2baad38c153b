"""Tick records: written by workers, read strictly (an agent can append anything with the
tick header to the heartbeats topic), optionally signed. Pure: no Kafka."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import ConsumerRecord

from arcbeat.streams.decide.engine import Engine
from arcbeat.streams.decide.mass_silence import Verdict
from arcbeat.streams.kafka import ticks
from arcbeat.streams.kafka.batch import HeartbeatLoop
from arcbeat.streams.kafka.checkpoint import Pointer
from arcbeat.streams.kafka.scopes import ScopeBoard
from arcbeat.streams.settings import SettingsError
from tests.streams.test_engine import _own, _settings


def _loop(**settings: Any) -> HeartbeatLoop:
    s = _settings(**settings)
    return HeartbeatLoop(s, Engine(s), ScopeBoard(s), worker_id="0", url=lambda: "http://x")


KEY = b"k" * 40
VERDICTS = {"fleet": Verdict(True, 1_800_000_000.25, 40), "location=eu": Verdict(False, 0.0, 0)}
WINDOWS: list[Mapping[str, Any]] = [{"id": "mw-1", "selector": {"resourceGroup": "rg"}}]


def test_a_tick_round_trips() -> None:
    value, headers = ticks.encode("0", VERDICTS, 12.5, WINDOWS)
    assert headers == [(ticks.TICK_HEADER, b"1")]
    assert ticks.decode(value, headers) == ticks.Tick(VERDICTS, 12.5, WINDOWS)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'"tick"',
        orjson.dumps({"verdicts": {"fleet": 5}}),
        orjson.dumps({"verdicts": {"fleet": [True, "soon", 3]}}),
        orjson.dumps({"verdicts": {"fleet": [1, 2.0, 3]}}),
        orjson.dumps({"verdicts": []}),
        orjson.dumps({"decidedAt": "yesterday"}),
        orjson.dumps({"decidedAt": True}),
        orjson.dumps({"maintenance": {"id": "x"}}),
        orjson.dumps({"maintenance": [1]}),
    ],
)
def test_a_malformed_tick_is_no_tick(body: bytes) -> None:
    assert ticks.decode(body, [(ticks.TICK_HEADER, b"1")]) is None


def test_an_empty_body_or_none_is_no_tick_but_an_empty_object_is_a_bare_tick() -> None:
    assert ticks.decode(None, []) is None
    assert ticks.decode(b"{}", []) == ticks.Tick()


def test_signed_ticks_need_a_valid_signature_from_any_current_key() -> None:
    old, new = b"o" * 40, b"n" * 40
    value, headers = ticks.encode("1", VERDICTS, 3.0, WINDOWS, [old])
    assert ticks.decode(value, headers, [new, old]) is not None  # rotation: both verify
    assert ticks.decode(value, headers, [new]) is None
    assert ticks.decode(value, [(ticks.TICK_HEADER, b"1")], [old]) is None  # unsigned
    forged = value.replace(b"true", b"false")
    assert ticks.decode(forged, headers, [old]) is None  # changed after signing


def test_tick_keys_come_from_a_file(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text(f"# rotate: new key second, then first\n{'a' * 32}\n\n{'b' * 40}\n")
    assert ticks.read_keys(str(f)) == [b"a" * 32, b"b" * 40]
    assert ticks.read_keys("") == []
    f.write_text("short\n")
    with pytest.raises(SettingsError, match="at least 32 characters"):
        ticks.read_keys(str(f))
    with pytest.raises(SettingsError, match="cannot read"):
        ticks.read_keys(str(tmp_path / "missing"))


def _record(offset: int, value: bytes, headers: list[tuple[str, bytes]]) -> Any:
    return ConsumerRecord(
        "hb", 0, offset, 1_800_000_000_000, 1, None, value, None, len(value), -1, headers
    )


def test_the_loop_skips_a_bad_or_unsigned_tick_and_keeps_going(tmp_path: Path) -> None:
    """What an agent may append with the tick header: counted as bad_tick, the partition moves
    on; with tick keys, an unsigned tick too."""
    loop = _loop()
    o = _own(loop, 0, "live")
    bad = _record(0, orjson.dumps({"verdicts": {"fleet": 5}}), [(ticks.TICK_HEADER, b"1")])
    value, headers = ticks.encode("0", {}, 0.0, [])
    good = _record(1, value, headers)
    asyncio.run(loop._process(o, [bad, good], wall=1_800_000_000.0))
    assert o.position == 2
    assert loop.engine.stats.rejects["bad_tick"] == 1
    assert loop.engine.partitions[0].previous_tick == 1_800_000_000.0  # the good one counted

    keys = tmp_path / "keys"
    keys.write_text("s" * 40 + "\n")
    signed = _loop(tick_key_file=str(keys))
    o = _own(signed, 0, "live")
    asyncio.run(signed._process(o, [_record(0, value, headers)], wall=1_800_000_000.0))
    assert signed.engine.stats.rejects["bad_tick"] == 1
    value, headers = ticks.encode("0", {}, 0.0, [], signed.tick_keys)
    asyncio.run(signed._process(o, [_record(1, value, headers)], wall=1_800_000_000.0))
    assert signed.engine.stats.rejects["bad_tick"] == 1 and o.position == 2


def test_a_partition_is_checkpointed_as_soon_as_its_replay_is_done() -> None:
    """A worker that crashes again and again, each run shorter than checkpoint_interval, must
    not replay from the same old checkpoint every time (with ever more log after it)."""
    loop = _loop()
    o = _own(loop, 0, "replaying")
    o.replay_until, o.pointer, o.checkpoint_at = 2, Pointer(0, 0, 1, 1), time.monotonic()
    value, headers = ticks.encode("0", {}, 0.0, [])
    asyncio.run(loop._process(o, [_record(0, value, headers)], wall=1_800_000_000.0))
    assert o.state == "replaying" and loop._checkpoint_due([o]) is None
    asyncio.run(loop._process(o, [_record(1, value, headers)], wall=1_800_000_000.0))
    assert o.state == "live" and loop._checkpoint_due([o]) is o
