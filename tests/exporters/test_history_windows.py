"""`arcbeat history` and the maintenance windows, without services: what the exporter writes
for the records of ``<prefix>.maintenance`` (tests/exporters/test_history.py has the round trip
through the real Kafka and InfluxDB)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from arcbeat.deploy.settings import Settings
from arcbeat.exporters.history.exporter import HistoryExporter
from arcbeat.exporters.influx_points import maintenance_points
from arcbeat.exporters.sinks import SinkError


class FlakySink:
    """Fails the first ``failures`` writes (InfluxDB down), then records what it gets."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.lines: list[str] = []

    async def write(self, lines: Sequence[str]) -> None:
        if self.failures:
            self.failures -= 1
            raise SinkError("InfluxDB at http://127.0.0.1:1 is unreachable", retryable=True)
        self.lines.extend(lines)

    async def close(self) -> None:
        pass


def _window(window_id: str, **over: Any) -> dict[str, Any]:
    return {
        "id": window_id,
        "selector": {"location": "westeurope"},
        "start": "2024-05-01T12:00:00Z",
        "end": "2024-05-01T14:00:00Z",
        "recurrence": None,
        "reason": "patching",
        "createdBy": "alice",
        "createdAt": "2024-05-01T11:00:00Z",
        "endedBy": None,
        "endedAt": None,
        **over,
    }


def _record(offset: int, value: bytes | None) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="arcbeat.maintenance",
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"k",
        value=value,
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=len(value or b""),
        headers=(),
    )


def _exporter(sink: FlakySink) -> tuple[HistoryExporter, CollectorRegistry]:
    registry = CollectorRegistry()
    settings = Settings().replace(capacity_interval=0)
    exporter = HistoryExporter(
        settings, sink, registry=registry, serve_metrics=False, backoff_initial=0.01
    )
    return exporter, registry


def test_maintenance_topic_follows_the_prefix() -> None:
    assert Settings().topics.maintenance == "arcbeat.maintenance"
    assert Settings().replace(topic_prefix="p").topics.maintenance == "p.maintenance"


async def test_windows_are_written_after_a_failed_write_and_bad_records_are_skipped() -> None:
    sink = FlakySink(failures=2)
    exporter, registry = _exporter(sink)
    first = _window("mw-1")
    ended = _window("mw-1", endedBy="bob", endedAt="2024-05-01T13:00:00Z")
    records = [
        _record(0, orjson.dumps(first)),
        _record(1, b"{not json"),
        _record(2, None),  # a deleted window
        _record(3, orjson.dumps(_window("mw-2", selector={}))),
        _record(4, orjson.dumps(ended)),
    ]
    await exporter.maintenance.write_windows(records)
    # in order, so the ended window's point (same series and time) is the last word
    assert sink.lines == maintenance_points(first) + maintenance_points(ended)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("arcbeat_history_points_written_total") == 2
    assert sample("arcbeat_history_write_failures_total") == 2
    assert sample("arcbeat_history_skipped_total", reason="invalid_json") == 1
    assert sample("arcbeat_history_skipped_total", reason="schema") == 1
    assert sample("arcbeat_history_skipped_total", reason="empty") is None


async def test_stop_ends_the_retries() -> None:
    sink = FlakySink(failures=10**6)
    exporter, _ = _exporter(sink)
    exporter.request_stop()
    await exporter.maintenance.write_windows([_record(0, orjson.dumps(_window("mw-1")))])
    assert sink.lines == []
