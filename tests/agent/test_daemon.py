"""The heartbeat loop with stand-in producers: backoff, at most one heartbeat waiting, clean
stops (SIGTERM, and the Windows path with stub modules), and what the state file records."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed
from hypothesis import given
from hypothesis import strategies as st

from arcbeat_agent import daemon
from arcbeat_agent.config import load_config
from arcbeat_agent.errors import REFUSED, UNREACHABLE, KafkaRefused, KafkaUnreachable, NotConnected
from arcbeat_agent.signals import stop_on_signals
from arcbeat_agent.state import AgentState, load_state, save_state

RID = ("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/"
       "Microsoft.HybridCompute/machines/box")


@given(st.integers(min_value=1, max_value=200), st.floats(min_value=1, max_value=600))
def test_backoff_doubles_up_to_the_cap(attempt: int, cap: float) -> None:
    wait = daemon.backoff(attempt, cap, random.Random(attempt))
    ceiling = min(cap, 2.0 ** (attempt - 1))
    assert ceiling / 2 <= wait <= ceiling <= cap


@given(st.floats(min_value=0.1, max_value=3600), st.floats(min_value=0, max_value=0.5))
def test_waits_stay_within_the_jitter(interval: float, jitter: float) -> None:
    wait = daemon.next_wait(interval, jitter, random.Random(0))
    assert interval * (1 - jitter) - 1e-9 <= wait <= interval * (1 + jitter) + 1e-9


class Metadata:
    def __init__(self, offset: int) -> None:
        self.topic, self.partition, self.offset = "t", 0, offset


class FakeKafka:
    """Producers that fail to start ``start_failures`` times (with ``error``), then record
    every message; ``hold`` (an Event) delays acknowledgements while cleared."""

    def __init__(self, start_failures: int = 0, error: Exception | None = None) -> None:
        self.start_failures = start_failures
        self.error = error or KafkaConnectionError("no broker")
        self.made = 0
        self.sent: list[tuple[float, dict[str, Any], Any]] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.stopped = 0
        self.on_send: Any = None

    def __call__(self, **options: Any) -> FakeKafka.Producer:
        self.made += 1
        self.options = options
        return FakeKafka.Producer(self)

    class Producer:
        def __init__(self, kafka: FakeKafka) -> None:
            self.kafka = kafka

        async def start(self) -> None:
            if self.kafka.start_failures > 0:
                self.kafka.start_failures -= 1
                raise self.kafka.error

        async def stop(self) -> None:
            self.kafka.stopped += 1

        async def send(self, topic: str, body: bytes, key: bytes, headers: Any) -> Any:
            kafka = self.kafka
            kafka.sent.append((time.monotonic(), orjson.loads(body), headers))
            if kafka.on_send:
                kafka.on_send(len(kafka.sent))
            offset = len(kafka.sent)

            async def ack() -> Metadata:
                await kafka.hold.wait()
                return Metadata(offset)

            return asyncio.ensure_future(ack())


def _config(tmp_path: Path, extra: str = "", interval: str = "0.05") -> Any:
    path = tmp_path / "agent.toml"
    path.write_text(
        f'[machine]\nresource_id = "{RID}"\nlocation = "westeurope"\ntags = {{ env = "t" }}\n'
        f"[heartbeat]\ninterval = {interval}\nbackoff_max = 0.2\n"
        f'[agent]\nstate_dir = "{tmp_path / "state"}"\n{extra}'
    )
    return load_config(str(path))


async def test_onboards_from_the_config_then_beats(tmp_path: Path) -> None:
    kafka = FakeKafka()
    lines: list[str] = []
    config = _config(tmp_path)
    acked = await daemon.run(config, say=lines.append, producer_factory=kafka, max_heartbeats=3)
    assert acked == 4
    kinds = [body["kind"] for _t, body, _h in kafka.sent]
    assert kinds == ["connect", "heartbeat", "heartbeat", "heartbeat"]
    assert [body["sequence"] for _t, body, _h in kafka.sent] == [0, 1, 2, 3]
    body = kafka.sent[-1][1]
    assert body["resourceId"] == RID and body["tags"] == {"env": "t"}
    assert kafka.options["acks"] == "all" and kafka.options["enable_idempotence"] is True
    state = load_state(config.state_file)
    assert state.status == "connected" and state.last_sequence == 3
    assert state.last_acknowledged_at >= state.last_sent_at[:19]
    assert kafka.sent[0][2] is None  # unsigned without [identity]
    assert "stopped after 4 acknowledged messages" in lines[-1]


async def test_reconnects_with_capped_backoff_and_records_the_error(tmp_path: Path) -> None:
    kafka = FakeKafka(start_failures=3)
    lines: list[str] = []
    config = _config(tmp_path)
    seen_errors: list[str] = []
    kafka.on_send = lambda n: seen_errors.append(load_state(config.state_file).last_error)
    started = time.monotonic()
    assert await daemon.run(config, say=lines.append, producer_factory=kafka,
                            max_heartbeats=1) == 2
    assert kafka.made == 4
    assert sum("cannot reach Kafka" in line for line in lines) == 3
    assert "retrying in" in lines[1]
    assert "Kafka reachable again" in lines
    # the error was in the state file until the connect was acknowledged
    assert "cannot reach Kafka at localhost:9092" in seen_errors[0]
    assert load_state(config.state_file).last_error == ""
    assert time.monotonic() - started < 3  # backoff_max = 0.2 s


async def test_at_most_one_heartbeat_waits_while_kafka_is_away(tmp_path: Path) -> None:
    kafka = FakeKafka()
    config = _config(tmp_path, interval="0.02")
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(config, say=lambda _m: None, stop=stop,
                                          producer_factory=kafka))
    while len(kafka.sent) < 2:
        await asyncio.sleep(0.01)
    kafka.hold.clear()  # the broker stops acknowledging: ~25 intervals pass
    await asyncio.sleep(0.5)
    blocked = len(kafka.sent)
    released = time.monotonic()
    kafka.hold.set()
    await asyncio.sleep(0.015)
    stop.set()
    await asyncio.wait_for(task, 5)
    after = [t for t, _b, _h in kafka.sent if t >= released]
    # one message was in flight; what came due meanwhile is one heartbeat, not a backlog
    assert blocked <= 3
    assert len([t for t in after if t - released < 0.015]) <= 2


async def test_a_refused_login_is_retried_and_explained(tmp_path: Path) -> None:
    kafka = FakeKafka(start_failures=100, error=SaslAuthenticationFailed("bad password"))
    config = _config(tmp_path)
    stop = asyncio.Event()
    lines: list[str] = []
    task = asyncio.create_task(daemon.run(config, say=lines.append, stop=stop,
                                          producer_factory=kafka))
    await asyncio.sleep(0.5)
    stop.set()
    assert await asyncio.wait_for(task, 5) == 0
    assert kafka.made >= 2
    assert "Kafka refused the login" in load_state(config.state_file).last_error


async def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    kafka = FakeKafka()
    config = _config(tmp_path)

    def terminate_at_the_third(n: int) -> None:
        if n == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    kafka.on_send = terminate_at_the_third
    acked = await asyncio.wait_for(
        daemon.run(config, say=lambda _m: None, producer_factory=kafka), 10
    )
    assert acked == 3
    assert kafka.stopped == 1
    # the handler is gone again: the loop's default for SIGTERM is back
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.default_int_handler)


async def test_run_refuses_a_machine_that_was_disconnected(tmp_path: Path) -> None:
    config = _config(tmp_path)
    save_state(config.state_file, AgentState(resource_id=RID, location="westeurope",
                                             status="disconnected", disconnected_at="x"))
    with pytest.raises(NotConnected, match="connect` to onboard it again"):
        await daemon.run(config, say=lambda _m: None, producer_factory=FakeKafka())


async def test_run_without_an_identity_says_connect_first(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f'[agent]\nstate_dir = "{tmp_path}"\n')
    with pytest.raises(NotConnected, match="arcbeat-agent connect"):
        await daemon.run(load_config(str(path)), say=lambda _m: None)


async def test_signed_messages(tmp_path: Path) -> None:
    secret = tmp_path / "identity.secret"
    secret.write_text("k3y\n")
    secret.chmod(0o600)
    config = _config(tmp_path, f'[identity]\nprincipal = "agent-1"\nsecret_file = "{secret}"\n')
    kafka = FakeKafka()
    await daemon.run(config, say=lambda _m: None, producer_factory=kafka, max_heartbeats=1)
    headers = dict(kafka.sent[1][2])
    assert headers["arcbeat-principal"] == b"agent-1"
    assert len(headers["arcbeat-signature"]) == 64


async def test_deliver_once_tells_unreachable_from_refused(tmp_path: Path) -> None:
    config = _config(tmp_path)
    state = AgentState(resource_id=RID, location="westeurope")
    with pytest.raises(KafkaUnreachable, match="cannot reach Kafka") as info:
        await daemon.deliver_once(config, state, "connect",
                                  producer_factory=FakeKafka(start_failures=1))
    assert info.value.exit_code == UNREACHABLE
    refusing = FakeKafka(start_failures=1, error=SaslAuthenticationFailed("no"))
    with pytest.raises(KafkaRefused, match="refused the login") as refused:
        await daemon.deliver_once(config, state, "connect", producer_factory=refusing)
    assert refused.value.exit_code == REFUSED


class WindowsLoop:
    """An event loop as on Windows: no add_signal_handler."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def add_signal_handler(self, *_a: Any) -> None:
        raise NotImplementedError

    def call_soon_threadsafe(self, callback: Any) -> None:
        self.calls.append(callback)
        callback()


class WindowsSignal:
    """The signal module of Windows: SIGINT, SIGTERM and SIGBREAK, set with signal()."""

    SIGINT, SIGTERM, SIGBREAK = 2, 15, 21

    def __init__(self) -> None:
        self.handlers: dict[int, Any] = {2: "default-int", 15: "default-term", 21: "default-brk"}

    def signal(self, number: int, handler: Any) -> Any:
        previous, self.handlers[number] = self.handlers[number], handler
        return previous


def test_windows_stop_logic_with_stub_modules() -> None:
    stop = asyncio.Event()
    loop, sig = WindowsLoop(), WindowsSignal()
    with stop_on_signals(stop, loop, sig) as names:  # type: ignore[arg-type]
        assert names == ["SIGTERM", "SIGINT", "SIGBREAK"]
        assert all(callable(h) for h in sig.handlers.values())
        sig.handlers[sig.SIGINT](sig.SIGINT, None)  # WinSW's Ctrl-C on `stop`
        assert stop.is_set()
        assert loop.calls == [stop.set]
    assert sig.handlers == {2: "default-int", 15: "default-term", 21: "default-brk"}


async def test_a_rotated_password_file_is_read_at_the_next_connection(tmp_path: Path) -> None:
    password = tmp_path / "kafka.password"
    password.write_text("old\n")
    password.chmod(0o600)
    config = _config(tmp_path, "")
    path = tmp_path / "agent.toml"
    path.write_text(path.read_text() + (
        f'[kafka]\nsecurity_protocol = "SASL_SSL"\nusername = "agent-1"\n'
        f'password_file = "{password}"\n'
    ))
    config = load_config(str(path))
    kafka = FakeKafka(start_failures=1)
    seen: list[str] = []
    real_call = kafka.__call__

    def factory(**options: Any) -> Any:
        seen.append(options["sasl_plain_password"])
        password.write_text("new\n")  # rotated while the first attempt fails
        return real_call(**options)

    await daemon.run(config, say=lambda _m: None, producer_factory=factory, max_heartbeats=1)
    assert seen == ["old", "new"]


async def test_a_stop_does_not_wait_for_a_missing_acknowledgement(tmp_path: Path) -> None:
    kafka = FakeKafka()
    config = _config(tmp_path)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(config, say=lambda _m: None, stop=stop,
                                          producer_factory=kafka))
    while len(kafka.sent) < 2:
        await asyncio.sleep(0.01)
    kafka.hold.clear()  # the broker never acknowledges again
    await asyncio.sleep(0.1)
    stopped = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, 5)
    assert time.monotonic() - stopped < 1
    assert kafka.stopped == 1
