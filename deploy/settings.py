"""The settings the ``arcbeat`` command loads: every section of every part (the stream
processor's, the exporters', and the local stack's, declared in :mod:`.stack_settings`).
:data:`SETTINGS` maps every flat name (``ARCBEAT_<NAME>``, the arcbeat.toml key) to its
section and field."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from arcbeat.deploy.stack_settings import StackSettings
from arcbeat.exporters import settings as exporters_settings
from arcbeat.streams.settings import Setting


@dataclass(frozen=True, slots=True)
class Settings(exporters_settings.Settings):
    """Every knob of arcbeat, by section."""

    stack: StackSettings = field(default_factory=StackSettings)


SETTINGS: Mapping[str, Setting] = Settings.settings()
