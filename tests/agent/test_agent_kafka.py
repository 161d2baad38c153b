"""The agent against the real broker: ``connect``, ``run``, ``show``, ``disconnect`` and
``check``, as a user runs them (the command in a subprocess), with the records read back and
decoded by the worker's own decoder."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from arcbeat.streams.decide.records import Heartbeat, decode_heartbeat

RID = ("/subscriptions/00000000-0000-0000-0000-0000000000a1/resourceGroups/RG-Agent/providers/"
       "Microsoft.HybridCompute/machines/Agent-Test-01")


def _agent(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "arcbeat_agent", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


async def _records(bootstrap: str, topic: str, expected: int) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + 30
        while len(records) < expected and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return sorted(records, key=lambda r: r.offset)


@pytest.mark.services
async def test_connect_run_show_disconnect(stack: Any, tmp_path: Path) -> None:
    prefix = f"agent-{uuid.uuid4().hex[:10]}"
    await asyncio.to_thread(stack.ensure_topics, prefix, 1)
    bootstrap = stack.settings.kafka.bootstrap
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[kafka]\nbootstrap = "{bootstrap}"\ntopic_prefix = "{prefix}"\n'
        '[heartbeat]\ninterval = 0.3\n'
        f'[agent]\nstate_dir = "{tmp_path / "state"}"\n'
    )
    check = _agent(config, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"PASS  permission  this client may write {prefix}.heartbeats" in check.stdout
    # PLAINTEXT has no ACLs: anyone may write the status topic, a warning
    assert f"WARN  permission  this client may write {prefix}.status" in check.stdout

    connect = _agent(config, "connect", "--resource-id", RID, "--location", "westeurope",
                     "--tag", "env=test")
    assert connect.returncode == 0, connect.stderr
    daemon = subprocess.Popen(
        [sys.executable, "-m", "arcbeat_agent", "--config", str(config), "run"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        shown: dict[str, Any] = {}
        while time.monotonic() < deadline:
            shown = json.loads(_agent(config, "show", "--json").stdout)
            if (shown["lastSequence"] or 0) >= 3:
                break
            await asyncio.sleep(0.3)
        assert shown["lastSequence"] >= 3, shown
        daemon.send_signal(signal.SIGTERM)
        _out, err = daemon.communicate(timeout=30)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert daemon.returncode == 0, err
    assert "stopped after" in err
    assert shown["resourceId"] == RID and shown["status"] == "connected"
    assert shown["lastHeartbeatAcknowledged"] and shown["lastError"] is None

    disconnect = _agent(config, "disconnect")
    assert disconnect.returncode == 0, disconnect.stderr
    again = _agent(config, "run")
    assert again.returncode == 5 and "was disconnected" in again.stderr

    records = await _records(bootstrap, f"{prefix}.heartbeats", 6)
    decoded = [decode_heartbeat(r.value, r.key) for r in records]
    assert all(isinstance(hb, Heartbeat) for hb in decoded), decoded
    kinds = [hb.kind for hb in decoded if isinstance(hb, Heartbeat)]
    assert kinds[0] == "connect" and kinds[-1] == "disconnect"
    assert set(kinds[1:-1]) == {"heartbeat"} and len(kinds) >= 5
    first = decoded[1]
    assert isinstance(first, Heartbeat)
    assert first.key == RID.lower() and first.tags == {"env": "test"}
    assert first.os_type == "linux" and first.agent_version
    assert all(r.timestamp_type == 1 for r in records)  # LogAppendTime: arrival is last seen


@pytest.mark.services
async def test_run_waits_for_kafka_then_beats(stack: Any, tmp_path: Path) -> None:
    """Started while its broker is unreachable, the service retries with backoff and records
    the error; pointed at the broker (a restart with the fixed configuration) it beats."""
    prefix = f"agent-{uuid.uuid4().hex[:10]}"
    await asyncio.to_thread(stack.ensure_topics, prefix, 1)
    config = tmp_path / "agent.toml"
    body = (
        f'[kafka]\nbootstrap = "127.0.0.1:1"\ntopic_prefix = "{prefix}"\nrequest_timeout = 2\n'
        f'[machine]\nresource_id = "{RID}"\nlocation = "westeurope"\n'
        '[heartbeat]\ninterval = 0.3\nbackoff_max = 1\n'
        f'[agent]\nstate_dir = "{tmp_path / "state"}"\n'
    )
    config.write_text(body)
    env = {**os.environ}
    daemon = subprocess.Popen([sys.executable, "-m", "arcbeat_agent", "--config", str(config),
                               "run"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 30
        error = None
        while time.monotonic() < deadline and not error:
            await asyncio.sleep(0.5)
            error = json.loads(_agent(config, "show", "--json").stdout)["lastError"]
        assert error and "cannot reach Kafka at 127.0.0.1:1" in error
        await asyncio.sleep(2.5)  # backoff_max = 1 s: more attempts
    finally:
        daemon.send_signal(signal.SIGTERM)
        _out, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err
    assert err.count("retrying in") >= 2
    config.write_text(body.replace("127.0.0.1:1", stack.settings.kafka.bootstrap))
    daemon = subprocess.Popen([sys.executable, "-m", "arcbeat_agent", "--config", str(config),
                               "run"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        records = await _records(stack.settings.kafka.bootstrap, f"{prefix}.heartbeats", 2)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=30)
    kinds = [hb.kind for r in records if isinstance(hb := decode_heartbeat(r.value, r.key),
                                                     Heartbeat)]
    assert kinds[:2] == ["connect", "heartbeat"]
    shown = json.loads(_agent(config, "show", "--json").stdout)
    assert shown["status"] == "connected" and shown["lastError"] is None
