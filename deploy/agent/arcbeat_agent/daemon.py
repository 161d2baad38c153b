"""``arcbeat-agent run``: the heartbeat loop of one machine.

- A heartbeat every ``interval``, each wait drawn within ``± jitter`` of it, so a fleet that
  restarts at once spreads out again.
- At most one heartbeat waits to be sent: while Kafka is away the loop keeps a single "due"
  flag, and the message is built (``sentAt``, ``sequence``) when it is actually sent; only the
  latest matters to arcbeat.
- Kafka away (at start or later): the producer is rebuilt and the send retried with an
  exponential backoff capped at ``backoff_max``; every failure is recorded in the state file
  (``show`` prints it) and logged once per attempt.
- SIGTERM or Ctrl-C: the loop stops, waits briefly for the message in flight, and exits 0. A
  stop tells arcbeat nothing: a stopped agent is what arcbeat must notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer

from arcbeat_agent import version
from arcbeat_agent.config import AgentConfig, read_secret
from arcbeat_agent.contract import heartbeat_payload, parse_resource_id, rfc3339, signature_headers
from arcbeat_agent.errors import (
    AgentError,
    ConfigError,
    KafkaRefused,
    KafkaUnreachable,
    NotConnected,
)
from arcbeat_agent.kafka import REFUSALS, diagnose, explain, producer_options
from arcbeat_agent.platform_info import os_info, os_type
from arcbeat_agent.signals import stop_on_signals
from arcbeat_agent.state import AgentState, load_state, save_state

Say = Callable[[str], None]
ProducerFactory = Callable[..., Any]


def backoff(attempt: int, cap: float, rng: random.Random) -> float:
    """Seconds before reconnection attempt ``attempt`` (1, 2, ...): 1 s doubling up to ``cap``,
    with "full jitter" in the upper half so that agents do not retry in step."""
    ceiling = min(cap, 2.0 ** (attempt - 1))
    return rng.uniform(ceiling / 2, ceiling)


def next_wait(interval: float, jitter: float, rng: random.Random) -> float:
    return interval * (1 + rng.uniform(-jitter, jitter))


class Machine:
    """The messages of this machine: identity, operating system, signature."""

    def __init__(self, config: AgentConfig, state: AgentState) -> None:
        self.config = config
        rid = parse_resource_id(state.resource_id)
        self.resource_id = rid.original
        self.key = rid.key.encode()
        self.location = state.location
        self.tags = dict(state.tags)
        self.os_type = os_type()
        self.os_name, self.os_version = os_info()
        self.version = version()
        self.sequence = 0  # per start, as the contract says; sentAt orders restarts
        ident = config.identity
        self.principal = ident.principal
        self.secret = (
            read_secret(ident.secret_file, "[identity] secret_file", config).encode()
            if ident.principal
            else b""
        )

    def message(self, kind: str, now: float) -> tuple[bytes, list[tuple[str, bytes]] | None]:
        body = heartbeat_payload(
            self.resource_id,
            kind=kind,
            location=self.location,
            os_type=self.os_type,
            os_name=self.os_name,
            os_version=self.os_version,
            agent_version=self.version,
            tags=self.tags,
            sent_at=now,
            sequence=self.sequence,
        )
        self.sequence += 1
        headers = signature_headers(self.principal, self.secret, body) if self.principal else None
        return body, headers


async def send_one(
    producer: Any, config: AgentConfig, machine: Machine, kind: str
) -> tuple[int, int, int]:
    """Send one message and wait for the acknowledgement: (sequence, partition, offset)."""
    body, headers = machine.message(kind, time.time())
    seq = machine.sequence - 1
    future = await producer.send(
        config.kafka.heartbeats_topic, body, key=machine.key, headers=headers
    )
    md = await future
    return seq, md.partition, md.offset


def onboarding_state(config: AgentConfig, state: AgentState) -> AgentState:
    """The state to run with: onboarded, or onboarding now from the configuration file."""
    if state.status == "disconnected":
        raise NotConnected(
            f"this machine was disconnected from arcbeat on {state.disconnected_at} "
            f"(state file {config.state_file}); run `arcbeat-agent connect` to onboard it again"
        )
    if state.connected:
        return state
    rid = config.machine.full_resource_id()
    if not rid or not config.machine.location:
        raise NotConnected(
            "this machine is not onboarded: run `arcbeat-agent connect --location REGION "
            "--resource-id ID` (or set [machine] resource_id and location in "
            f"{config.path or 'the configuration file'})"
        )
    try:
        parse_resource_id(rid)
    except ValueError as exc:
        raise ConfigError(f"{config.where('machine', 'resource_id')}: {exc}") from None
    state.resource_id = rid
    state.location = config.machine.location
    state.tags = dict(config.machine.tags)
    state.status = "onboarding"
    return state


async def run(
    config: AgentConfig,
    *,
    say: Say,
    stop: asyncio.Event | None = None,
    producer_factory: ProducerFactory = AIOKafkaProducer,
    rng: random.Random | None = None,
    max_heartbeats: int | None = None,
) -> int:
    """Run until stopped; returns the number of acknowledged messages."""
    rng = rng or random.Random()
    state = onboarding_state(config, load_state(config.state_file))
    machine = Machine(config, state)
    options = producer_options(config)  # reads the password file: fails now, not later
    stop = stop or asyncio.Event()
    hb = config.heartbeat
    due = asyncio.Event()  # "a heartbeat is due": one flag, never a queue
    acknowledged = 0
    heartbeats = 0

    def record(**changes: Any) -> None:
        for name, value in changes.items():
            setattr(state, name, value)
        state.pid = os.getpid()
        try:
            save_state(config.state_file, state)
        except OSError as exc:
            say(f"cannot write the state file {config.state_file}: {exc.strerror or exc}")

    async def ticker() -> None:
        while not stop.is_set():
            due.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), next_wait(hb.interval, hb.jitter, rng))

    async def sleep_or_stop(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    say(
        f"{machine.resource_id} ({machine.location}) -> {config.kafka.heartbeats_topic} on "
        f"{config.kafka.bootstrap}, every {hb.interval:g}s ± {hb.jitter:.0%}"
    )
    record()
    producer: Any = None
    failures = 0
    tick_task: asyncio.Task[None] | None = None
    with stop_on_signals(stop):
        try:
            while not stop.is_set():
                if producer is None:
                    if failures:
                        # files are read again: a rotated password or CA file takes effect
                        # at the next connection, without a restart
                        try:
                            options = producer_options(config)
                        except AgentError as exc:
                            failures += 1
                            await _failed(exc, failures, config, say, record, sleep_or_stop, rng)
                            continue
                    producer = producer_factory(**options)
                    try:
                        await asyncio.wait_for(producer.start(), config.kafka.request_timeout)
                    except Exception as exc:
                        with contextlib.suppress(Exception):
                            await producer.stop()
                        producer = None
                        failures += 1
                        await _failed(exc, failures, config, say, record, sleep_or_stop, rng)
                        continue
                    if failures:
                        say("Kafka reachable again")
                if state.status != "connected":
                    kind = "connect"
                else:
                    if tick_task is None:
                        tick_task = asyncio.create_task(ticker())
                    waiter = asyncio.create_task(due.wait())
                    stopper = asyncio.create_task(stop.wait())
                    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    stopper.cancel()
                    if stop.is_set():
                        break
                    kind = "heartbeat"
                due.clear()
                now = rfc3339(time.time())
                record(last_sent_at=now)
                try:
                    # a stop does not wait for an acknowledgement that may take request_timeout
                    sent = asyncio.ensure_future(send_one(producer, config, machine, kind))
                    stopper = asyncio.ensure_future(stop.wait())
                    await asyncio.wait({sent, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    stopper.cancel()
                    if not sent.done():
                        sent.cancel()
                        break
                    seq, partition, offset = sent.result()
                except Exception as exc:
                    failures += 1
                    due.set()  # still due: sent again, built afresh, after the backoff
                    with contextlib.suppress(Exception):
                        await producer.stop()
                    producer = None
                    await _failed(exc, failures, config, say, record, sleep_or_stop, rng)
                    continue
                failures = 0
                acknowledged += 1
                acked = rfc3339(time.time())
                if kind == "connect":
                    record(status="connected", connected_at=acked, last_acknowledged_at=acked,
                           last_sequence=seq, last_error="", last_error_at="")
                    say(f"connect {seq} acknowledged ({partition}@{offset}): onboarded")
                else:
                    heartbeats += 1
                    record(last_acknowledged_at=acked, last_sequence=seq)
                    say(f"heartbeat {seq} acknowledged ({partition}@{offset})")
                    if max_heartbeats is not None and heartbeats >= max_heartbeats:
                        break
        finally:
            if tick_task is not None:
                tick_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await tick_task
            if producer is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), 10)
            say(f"stopped after {acknowledged} acknowledged messages")
    return acknowledged


async def _failed(
    exc: BaseException,
    failures: int,
    config: AgentConfig,
    say: Say,
    record: Callable[..., None],
    sleep_or_stop: Callable[[float], Any],
    rng: random.Random,
) -> None:
    """Record and log a failed attempt, then wait the backoff (or until stopped)."""
    if isinstance(exc, AgentError):
        message = str(exc)
    else:
        message = explain(await diagnose(exc, config), config)
    wait = backoff(failures, config.heartbeat.backoff_max, rng)
    record(last_error=message, last_error_at=rfc3339(time.time()))
    say(f"{message}; retrying in {wait:.1f}s (attempt {failures})")
    await sleep_or_stop(wait)


async def deliver_once(
    config: AgentConfig,
    state: AgentState,
    kind: str,
    *,
    producer_factory: ProducerFactory = AIOKafkaProducer,
) -> tuple[int, int, int]:
    """One message, acknowledged, for ``connect``/``disconnect``; raises a clear error."""
    machine = Machine(config, state)
    producer = producer_factory(**producer_options(config))
    try:
        try:
            await asyncio.wait_for(producer.start(), config.kafka.request_timeout)
            return await send_one(producer, config, machine, kind)
        except Exception as exc:
            cause = await diagnose(exc, config)
            if isinstance(cause, REFUSALS):
                raise KafkaRefused(explain(cause, config)) from None
            raise KafkaUnreachable(explain(cause, config)) from None
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), 10)
