"""The heartbeat agent: pure helpers, then `--once` against the real broker."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from arcbeat.deploy.agents.agent import (
    Agent,
    agent_version,
    default_resource_id,
    machine_name,
    parse_tags,
    read_os_release,
    run_agent,
)
from arcbeat.streams.records import Heartbeat, decode_heartbeat, parse_resource_id
from arcbeat.streams.settings import Settings


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [
        ("web-01", "web-01"),
        ("web-01.corp.example.com", "web-01.corp.example.com"),
        ("my host!", "my-host"),
        ("ümlaut", "mlaut"),
        ("-.-", "localhost"),
        ("", "localhost"),
        ("x" * 100, "x" * 64),
    ],
)
def test_machine_name(hostname: str, expected: str) -> None:
    assert machine_name(hostname) == expected
    parse_resource_id(default_resource_id(hostname=hostname))  # always a valid Resource ID


def test_default_resource_id() -> None:
    rid = parse_resource_id(default_resource_id(hostname="box"))
    assert rid.subscription_id == "00000000-0000-0000-0000-000000000000"
    assert rid.resource_group == "local"
    assert rid.machine_name == "box"


def test_read_os_release(tmp_path: Path) -> None:
    path = tmp_path / "os-release"
    path.write_text(
        '# comment\nNAME="Ubuntu"\nVERSION_ID="22.04"\nID=ubuntu\nPRETTY_NAME="Ubuntu 22.04 LTS"\n'
    )
    assert read_os_release(path) == ("Ubuntu", "22.04")
    path.write_text("NAME='SLES'\nVERSION_ID=15\n")
    assert read_os_release(path) == ("SLES", "15")
    assert read_os_release(tmp_path / "missing") == ("", "")


def test_parse_tags() -> None:
    assert parse_tags(["env=prod", "team=a=b", "empty="]) == {
        "env": "prod",
        "team": "a=b",
        "empty": "",
    }
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_tags(["novalue"])


def test_agent_refuses_what_arcbeat_would_reject() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="unsupported_region"):
        Agent(settings, resource_id=default_resource_id(hostname="a"), location="eastus")
    with pytest.raises(ValueError, match="machineName"):
        Agent(settings, resource_id=default_resource_id(hostname="a") + "!", location="westus2")
    with pytest.raises(ValueError, match="tags"):
        Agent(
            settings,
            resource_id=default_resource_id(hostname="a"),
            location="westus2",
            tags={f"t{i}": "v" for i in range(51)},
        )


def test_agent_payload_is_a_valid_heartbeat() -> None:
    settings = Settings()
    agent = Agent(
        settings, resource_id=default_resource_id(hostname="Box-1"), location="westeurope"
    )
    hb = decode_heartbeat(
        agent.payload("connect"),
        agent.key,
        max_bytes=8192,
        accepts_region=settings.input.accepts_region,
    )
    assert isinstance(hb, Heartbeat)
    assert hb.kind == "connect"
    assert hb.os_type == "linux"
    assert hb.agent_version == agent_version()
    assert hb.key == hb.resource_id.lower()


async def _records(settings: Settings, expected: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        settings.heartbeats_topic,
        bootstrap_servers=settings.kafka.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while len(records) < expected and asyncio.get_running_loop().time() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


@pytest.mark.services
async def test_agent_once_against_the_broker(stack: Any) -> None:
    prefix = f"test-agent-{uuid.uuid4().hex[:10]}"
    settings = stack.settings.replace(topic_prefix=prefix, partitions=2)
    await asyncio.to_thread(stack.ensure_topics, prefix, 2)
    rid = default_resource_id(hostname="Test-Host.Example")
    messages: list[str] = []
    delivered = await run_agent(
        settings,
        resource_id=rid,
        location="westeurope",
        once=True,
        tags={"env": "test"},
        stop_event=asyncio.Event(),
        progress=messages.append,
    )
    assert delivered == 2, messages
    records = await _records(settings, 2)
    assert len(records) == 2
    records.sort(key=lambda r: r.offset)  # one key, so one partition, in order
    decoded = [
        decode_heartbeat(
            r.value,
            r.key,
            max_bytes=settings.input.max_message_bytes,
            accepts_region=settings.input.accepts_region,
        )
        for r in records
    ]
    for r, hb in zip(records, decoded, strict=True):
        assert isinstance(hb, Heartbeat), hb
        assert r.key == rid.lower().encode()
        assert hb.resource_id == rid
        assert hb.tags == {"env": "test"}
        assert r.timestamp_type == 1  # the topic stamps arrival (LogAppendTime)
    assert [(hb.kind, hb.sequence) for hb in decoded if isinstance(hb, Heartbeat)] == [
        ("connect", 0),
        ("heartbeat", 1),
    ]


@pytest.mark.services
async def test_agent_disconnect_and_stop(stack: Any) -> None:
    prefix = f"test-agent-{uuid.uuid4().hex[:10]}"
    settings = stack.settings.replace(topic_prefix=prefix, partitions=1)
    await asyncio.to_thread(stack.ensure_topics, prefix, 1)
    rid = default_resource_id(hostname="stopper")
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_agent(
            settings,
            resource_id=rid,
            location="westus2",
            interval=0.2,
            stop_event=stop,
            progress=None,
        )
    )
    await asyncio.sleep(1.0)
    stop.set()
    delivered = await asyncio.wait_for(task, 30)
    assert delivered >= 3
    assert (
        await run_agent(
            settings, resource_id=rid, location="westus2", disconnect=True, progress=None
        )
        == 1
    )
    records = await _records(settings, delivered + 1)
    kinds = [
        hb.kind
        for r in sorted(records, key=lambda r: r.offset)
        if isinstance(hb := decode_heartbeat(r.value, r.key), Heartbeat)
    ]
    # a normal stop sends nothing: only `--disconnect` removes the machine
    assert kinds == ["connect"] + ["heartbeat"] * (delivered - 1) + ["disconnect"]
