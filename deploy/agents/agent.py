"""A real heartbeat agent for this machine (``arcbeat agent``).

It reads the hostname and ``/etc/os-release``, sends ``connect`` when it starts (like
``azcmagent connect``), then a heartbeat every ``heartbeat_interval`` with a sequence that
increases per start. Stopping it (SIGINT/SIGTERM) flushes and exits without telling anyone:
a stopped agent is exactly what arcbeat must notice. ``--disconnect`` sends ``disconnect``
(like ``azcmagent disconnect``), which removes the machine from arcbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import sys
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Final

from aiokafka import AIOKafkaProducer

from arcbeat.deploy.agents.running import Progress, stop_on_signals
from arcbeat.streams.identity import signature_headers
from arcbeat.streams.kafka_client import client_options
from arcbeat.streams.records import (
    MAX_OS_NAME,
    MAX_OS_VERSION,
    Heartbeat,
    decode_heartbeat,
    heartbeat_payload,
    parse_resource_id,
    resource_id,
)
from arcbeat.streams.settings import Settings, read_secret

DEFAULT_SUBSCRIPTION: Final = "00000000-0000-0000-0000-000000000000"
DEFAULT_RESOURCE_GROUP: Final = "local"
_NAME_BAD: Final = re.compile(r"[^A-Za-z0-9_.-]+")


def agent_version() -> str:
    try:
        return metadata.version("arcbeat")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def machine_name(hostname: str | None = None) -> str:
    """A valid machineName from the hostname: bad characters become ``-``, at most 64."""
    name = _NAME_BAD.sub("-", hostname if hostname is not None else socket.gethostname())
    name = name.strip("-.")[:64].rstrip("-.")
    return name or "localhost"


def default_resource_id(
    *,
    subscription_id: str = DEFAULT_SUBSCRIPTION,
    resource_group: str = DEFAULT_RESOURCE_GROUP,
    hostname: str | None = None,
) -> str:
    rid: str = resource_id(subscription_id, resource_group, machine_name(hostname))
    return rid


def read_os_release(path: str | Path = "/etc/os-release") -> tuple[str, str]:
    """(NAME, VERSION_ID) from os-release (shell-style ``KEY="value"`` lines); empty if absent."""
    values: dict[str, str] = {}
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "", ""
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value.replace('\\"', '"').replace("\\\\", "\\")
    return values.get("NAME", "")[:MAX_OS_NAME], values.get("VERSION_ID", "")[:MAX_OS_VERSION]


def os_type() -> str:
    return "windows" if sys.platform.startswith("win") else "linux"


def parse_tags(items: list[str] | None) -> dict[str, str]:
    """``["env=prod", "team=noc"]`` -> dict; raises ValueError naming the bad item."""
    tags: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"tag {item!r}: expected NAME=VALUE, e.g. env=prod")
        tags[name] = value
    return tags


class Agent:
    """The messages of one machine; :func:`run_agent` drives it."""

    def __init__(
        self,
        settings: Settings,
        *,
        resource_id: str,
        location: str,
        tags: Mapping[str, str] | None = None,
        os_name: str | None = None,
        os_version: str | None = None,
    ) -> None:
        rid = parse_resource_id(resource_id)  # ValueError says which part is wrong
        self.settings = settings
        self.resource_id = rid.original
        self.key = rid.key.encode()
        self.location = location
        self.tags = dict(tags or {})
        name, version = read_os_release()
        self.os_name = name if os_name is None else os_name
        self.os_version = version if os_version is None else os_version
        self.version = agent_version()
        self.sequence = 0  # per start, as the contract says; sentAt orders restarts
        # identity binding: sign every message when a principal is configured
        self.principal = settings.identity.principal
        self._secret = read_secret(
            settings.identity.secret, settings.identity.secret_file, "identity_secret"
        ).encode()
        if self.principal and not self._secret:
            raise ValueError(
                "agent: identity_principal is set but no identity_secret or "
                "identity_secret_file (ARCBEAT_IDENTITY_SECRET_FILE) gives its secret"
            )
        self.validate()

    def headers(self, body: bytes) -> list[tuple[str, bytes]] | None:
        """Signature headers for ``body`` (None when this agent does not sign)."""
        if not self.principal:
            return None
        return signature_headers(self.principal, self._secret, body)

    def payload(self, kind: str, *, sent_at: float | None = None) -> bytes:
        body: bytes = heartbeat_payload(
            self.resource_id,
            kind=kind,
            location=self.location,
            os_type=os_type(),
            os_name=self.os_name,
            os_version=self.os_version,
            agent_version=self.version,
            tags=self.tags,
            sent_at=time.time() if sent_at is None else sent_at,
            sequence=self.sequence,
        )
        return body

    def validate(self) -> None:
        """Refuse to start with a heartbeat arcbeat would reject; say why and how to fix."""
        verdict = decode_heartbeat(
            self.payload("heartbeat"),
            self.key,
            max_bytes=self.settings.input.max_message_bytes,
            accepts_region=self.settings.input.accepts_region,
        )
        if not isinstance(verdict, Heartbeat):
            raise ValueError(
                f"this agent's heartbeat would be rejected ({verdict.reason}): {verdict.detail}"
            )

    async def send(self, producer: AIOKafkaProducer, kind: str, say: Progress) -> bool:
        """Send one message and wait for the broker's acknowledgement; False if it failed."""
        body = self.payload(kind)
        seq = self.sequence
        self.sequence += 1
        try:
            future = await producer.send(
                self.settings.heartbeats_topic, body, key=self.key, headers=self.headers(body)
            )
            md = await future
        except Exception as exc:  # keep beating: the broker may come back
            say(f"agent: {kind} {seq} not delivered: {exc!r}")
            return False
        say(f"agent: {kind} {seq} -> {md.topic}[{md.partition}]@{md.offset}")
        return True


async def run_agent(
    settings: Settings,
    *,
    resource_id: str | None = None,
    location: str | None = None,
    once: bool = False,
    interval: float | None = None,
    tags: Mapping[str, str] | None = None,
    stop_event: asyncio.Event | None = None,
    disconnect: bool = False,
    progress: Progress | None = None,
) -> int:
    """Run the agent until stopped; returns the number of messages delivered.

    ``once``: connect + one heartbeat, then exit. ``disconnect``: send ``disconnect`` only.
    """
    say: Progress = progress or (lambda _m: None)
    rid = resource_id or default_resource_id()
    loc = location or next((r for r in settings.input.regions if r != "*"), "westeurope")
    beat = settings.timing.heartbeat_interval if interval is None else interval
    if beat <= 0:
        raise ValueError(f"agent: interval must be > 0, got {beat}")
    agent = Agent(settings, resource_id=rid, location=loc, tags=tags)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap,
        client_id="arcbeat-agent",
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        request_timeout_ms=30_000,
        **client_options(settings.kafka),
    )
    try:
        await asyncio.wait_for(producer.start(), 60)
    except Exception as exc:
        with contextlib.suppress(Exception):
            await producer.stop()
        raise ConnectionError(
            f"agent: cannot reach Kafka at {settings.kafka.bootstrap}: {exc!r}; "
            "start it with `arcbeat stack up` or set ARCBEAT_KAFKA_BOOTSTRAP"
        ) from exc
    delivered = 0
    say(f"agent: {agent.resource_id} ({loc}) -> {settings.heartbeats_topic}, every {beat:g}s")
    try:
        if disconnect:
            return int(await agent.send(producer, "disconnect", say))
        with stop_on_signals(stop_event) as stop:
            delivered += await agent.send(producer, "connect", say)
            start = time.monotonic()
            beats = 0
            while not stop.is_set():
                delivered += await agent.send(producer, "heartbeat", say)
                beats += 1
                if once:
                    break
                # a fixed cadence from the start, so a slow send does not make the agent drift
                delay = start + beats * beat - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
    finally:
        with contextlib.suppress(Exception):
            await producer.flush()
        await producer.stop()
        say(f"agent: stopped after {delivered} delivered messages")
    return delivered


__all__ = [
    "Agent",
    "default_resource_id",
    "machine_name",
    "read_os_release",
    "run_agent",
]
