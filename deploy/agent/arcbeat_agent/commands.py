"""``connect``, ``disconnect`` and ``show``: onboarding, removal and the local status."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from arcbeat_agent.config import AgentConfig
from arcbeat_agent.contract import check_location, check_tags, parse_resource_id, rfc3339
from arcbeat_agent.daemon import ProducerFactory, deliver_once
from arcbeat_agent.errors import ConfigError, NotConnected
from arcbeat_agent.state import AgentState, load_state, save_state


def _load(config: AgentConfig) -> AgentState:
    return load_state(config.state_file)


async def connect(
    config: AgentConfig,
    *,
    resource_id: str = "",
    location: str = "",
    tags: Mapping[str, str] | None = None,
    producer_factory: ProducerFactory | None = None,
) -> AgentState:
    """Send ``connect`` for this machine and keep its identity in the state file.

    The command line wins over the configuration file's ``[machine]`` section."""
    rid = resource_id or config.machine.full_resource_id()
    if not rid:
        raise ConfigError(
            "no Resource ID: give --resource-id (or --subscription-id and "
            "--resource-group), or set [machine] resource_id in "
            f"{config.path or 'the configuration file'}"
        )
    try:
        parse_resource_id(rid)
    except ValueError as exc:
        where = "--resource-id" if resource_id else config.where("machine", "resource_id")
        raise ConfigError(f"{where}: {exc}") from None
    loc = location or config.machine.location
    if not loc:
        raise ConfigError(
            "no location: give --location REGION (such as westeurope) or set "
            f"[machine] location in {config.path or 'the configuration file'}"
        )
    try:
        check_location(loc)
        merged = check_tags({**config.machine.tags, **(tags or {})})
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    state = _load(config)
    state.resource_id, state.location, state.tags = rid, loc, merged
    kwargs: dict[str, Any] = {}
    if producer_factory is not None:
        kwargs["producer_factory"] = producer_factory
    sequence, _partition, _offset = await deliver_once(config, state, "connect", **kwargs)
    now = rfc3339(time.time())
    state.last_sequence = sequence
    state.status, state.connected_at, state.disconnected_at = "connected", now, ""
    state.last_sent_at = state.last_acknowledged_at = now
    state.last_error = state.last_error_at = ""
    save_state(config.state_file, state)
    return state


async def disconnect(
    config: AgentConfig, *, producer_factory: ProducerFactory | None = None
) -> AgentState:
    """Send ``disconnect`` (arcbeat removes the machine: Deleted, never an offline alert) and
    mark the state so that the service does not onboard it again."""
    state = _load(config)
    if not state.resource_id or state.status == "disconnected":
        raise NotConnected(
            f"this machine is not connected (state file {config.state_file}); "
            "nothing to remove"
        )
    kwargs: dict[str, Any] = {}
    if producer_factory is not None:
        kwargs["producer_factory"] = producer_factory
    await deliver_once(config, state, "disconnect", **kwargs)
    state.status, state.disconnected_at = "disconnected", rfc3339(time.time())
    save_state(config.state_file, state)
    return state


def show(config: AgentConfig) -> dict[str, Any]:
    """The local status, as ``show`` prints it (and ``show --json`` writes it)."""
    state = _load(config)
    return {
        "resourceId": state.resource_id or None,
        "location": state.location or None,
        "status": state.status,
        "connectedAt": state.connected_at or None,
        "broker": config.kafka.bootstrap,
        "securityProtocol": config.kafka.security_protocol,
        "topic": config.kafka.heartbeats_topic,
        "heartbeatInterval": config.heartbeat.interval,
        "lastHeartbeatSent": state.last_sent_at or None,
        "lastHeartbeatAcknowledged": state.last_acknowledged_at or None,
        "lastSequence": state.last_sequence if state.last_sequence >= 0 else None,
        "lastError": state.last_error or None,
        "lastErrorAt": state.last_error_at or None,
        "configFile": str(config.path) if config.path else None,
        "stateFile": str(config.state_file),
    }


SHOW_LABELS = {
    "resourceId": "Resource ID",
    "location": "Location",
    "status": "Agent status",
    "connectedAt": "Connected at",
    "broker": "Kafka bootstrap",
    "securityProtocol": "Security protocol",
    "topic": "Heartbeats topic",
    "heartbeatInterval": "Heartbeat interval (s)",
    "lastHeartbeatSent": "Last heartbeat sent",
    "lastHeartbeatAcknowledged": "Last heartbeat acknowledged",
    "lastSequence": "Last sequence",
    "lastError": "Last error",
    "lastErrorAt": "Last error at",
    "configFile": "Config file",
    "stateFile": "State file",
}


def show_text(status: Mapping[str, Any]) -> str:
    width = max(len(v) for v in SHOW_LABELS.values())
    lines = []
    for key, label in SHOW_LABELS.items():
        value = status.get(key)
        if key == "configFile" and value is None:
            value = "(none: defaults)"
        lines.append(f"{label + ':':<{width + 1}} {'-' if value is None else value}")
    return "\n".join(lines)
