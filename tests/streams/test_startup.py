"""Start-up retries under a partly down Kafka cluster, and the worker id of a StatefulSet pod."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    NodeNotReadyError,
    NotControllerError,
    TopicAuthorizationFailedError,
)
from hypothesis import given
from hypothesis import strategies as st

from arcbeat.deploy.kafka_admin import KafkaAdminError
from arcbeat.deploy.worker import worker_number
from arcbeat.streams.app import create_app
from arcbeat.streams.kafka.heartbeat_clients import instance_id
from arcbeat.streams.kafka.startup import (
    BACKOFF_MAX,
    Deadline,
    StartupError,
    backoff,
    retriable,
    retry_start,
)
from arcbeat.streams.settings import Settings, SettingsError, worker_ordinal


def test_retriable_errors_and_their_causes() -> None:
    assert retriable(NodeNotReadyError("node 1"))
    assert retriable(KafkaConnectionError("refused"))
    assert retriable(NotControllerError())
    assert retriable(TimeoutError())
    wrapped = KafkaAdminError("topics: cannot create topics")
    wrapped.__cause__ = NodeNotReadyError("node 1")
    assert retriable(wrapped)
    assert not retriable(TopicAuthorizationFailedError())
    assert not retriable(KafkaAdminError("topics: 3 partition(s), arcbeat needs 4"))
    assert not retriable(ValueError("bad"))


@given(st.integers(min_value=1, max_value=10_000))
def test_backoff_grows_and_is_capped(attempt: int) -> None:
    assert 0.5 <= backoff(attempt) <= BACKOFF_MAX
    assert backoff(attempt + 1) >= backoff(attempt)


def test_retry_start_retries_until_it_works() -> None:
    lines: list[str] = []
    calls: list[int] = []
    undone: list[int] = []

    async def attempt() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise NodeNotReadyError("Attempt to send a request to node which is not ready")
        return "started"

    async def undo() -> None:
        undone.append(1)

    async def go() -> str:
        return await retry_start(
            "topic check", attempt, deadline=Deadline(30), say=lines.append, cleanup=undo
        )

    assert asyncio.run(go()) == "started"
    assert len(calls) == 3 and len(undone) == 2
    assert len(lines) == 2, lines
    assert lines[0].startswith("start-up: topic check: Kafka not ready (NodeNotReadyError")
    assert "retry 1 in 0.5s" in lines[0] and "ARCBEAT_STARTUP_DEADLINE" in lines[0]


def test_retry_start_gives_up_at_the_deadline_naming_the_step() -> None:
    lines: list[str] = []

    async def attempt() -> None:
        raise KafkaConnectionError("Connection refused")

    async def go() -> None:
        await retry_start(
            "the heartbeats consumer", attempt, deadline=Deadline(1.2), say=lines.append
        )

    with pytest.raises(StartupError) as caught:
        asyncio.run(go())
    text = str(caught.value)
    assert text.startswith("the heartbeats consumer: Kafka was still not usable after")
    assert "ARCBEAT_STARTUP_DEADLINE=1.2s" in text and "Connection refused" in text
    assert lines  # progress was shown before giving up


def test_retry_start_does_not_retry_other_errors() -> None:
    lines: list[str] = []

    async def attempt() -> None:
        raise KafkaAdminError("topics: 3 partition(s), arcbeat needs 4")

    with pytest.raises(KafkaAdminError):
        asyncio.run(retry_start("topic check", attempt, deadline=Deadline(30), say=lines.append))
    assert lines == []


@pytest.mark.parametrize(
    ("text", "number"),
    [("0", 0), ("7", 7), ("arcbeat-worker-2", 2), ("prod-arcbeat-worker-11", 11)],
)
def test_worker_ordinal(text: str, number: int) -> None:
    assert worker_ordinal(text) == number


def test_a_bad_worker_id_names_the_setting() -> None:
    with pytest.raises(SettingsError, match=r"ARCBEAT_WORKER_ID.*StatefulSet"):
        Settings.load(env={"ARCBEAT_WORKER_ID": "arcbeat-worker"}, toml_path="/nonexistent")


def test_a_statefulset_pod_keeps_its_port_and_its_member_id() -> None:
    s = Settings.load(
        env={"ARCBEAT_WORKER_ID": "arcbeat-worker-3", "ARCBEAT_APP_ID": "prod"},
        toml_path="/nonexistent",
    )
    assert worker_number(s, None) == (3, False)
    assert worker_number(s, 1) == (1, True)  # --id wins: several workers on one host
    assert instance_id(s, "3") == "prod-worker-3"  # the same on every restart of the pod
    plain = Settings.load(env={}, toml_path="/nonexistent")
    assert worker_number(plain, None) == (0, True)


def test_the_advertised_host_is_what_peers_call(tmp_path: object) -> None:
    s = Settings.load(
        env={
            "ARCBEAT_WEB_HOST": "0.0.0.0",
            "ARCBEAT_API_INSECURE": "true",
            "ARCBEAT_ADVERTISED_HOST": "arcbeat-worker-1.arcbeat-worker",
            "ARCBEAT_DATA_DIR": str(tmp_path),
        },
        toml_path="/nonexistent",
    )
    app = create_app(s, worker_id="1")
    assert str(app.conf.canonical_url).rstrip("/") == "http://arcbeat-worker-1.arcbeat-worker:6066"


def test_progress_names_the_root_error_once() -> None:
    from arcbeat.streams.kafka.startup import _describe

    assert _describe(TimeoutError()) == "TimeoutError: timed out"
    text = _describe(NodeNotReadyError("Attempt to send a request to node which is not ready"))
    assert text.count("NodeNotReadyError") == 1, text
