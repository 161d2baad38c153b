"""The settings a decision depends on, as the workers record them in every tick.

A replay of the heartbeats log (``arcbeat replay``) decides exactly as the first run only with
the settings that run had. The ticks carry them (``"settings"`` in the tick record), so the
replay knows them without being told, and sees when they changed within a range.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from arcbeat.streams.settings import Settings, SettingsError

# every setting the engine's decisions read (flat names)
DECIDING: tuple[str, ...] = (
    "heartbeat_interval",
    "disconnect_after",
    "expire_after",
    "check_interval",
    "window",
    "flap_threshold",
    "outage_ratio",
    "outage_min_machines",
    "outage_hold",
    "late_after",
    "degraded_factor",
    "degraded_for",
    "degraded_min_machines",
    "delivery_delays",
    "regions",
    "max_message_bytes",
    "commit_interval",
    "availability_windows",
    "fleet_snapshot_interval",
)


def deciding(settings: Settings) -> dict[str, Any]:
    """The deciding settings as JSON values (lists for tuples)."""
    out: dict[str, Any] = {}
    for name in DECIDING:
        value = settings.value(name)
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


def with_recorded(settings: Settings, recorded: Mapping[str, Any]) -> Settings:
    """``settings`` with the deciding settings a tick recorded (unknown names are ignored: a
    newer worker may record more)."""
    changes = {
        name: tuple(v) if isinstance(v, list) else v
        for name, v in recorded.items()
        if name in DECIDING
    }
    try:
        return settings.replace(**changes) if changes else settings
    except (SettingsError, TypeError, ValueError) as exc:
        raise SettingsError(f"the settings recorded in the ticks cannot be used: {exc}") from None


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Deciding settings that differ between two records: name -> (a's, b's)."""
    return {n: (a.get(n), b.get(n)) for n in sorted(set(a) | set(b)) if a.get(n) != b.get(n)}
