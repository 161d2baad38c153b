"""The settings of the exporters: the stream processor's, and the sections only the exporters
use (InfluxDB, capacity planning), declared next to them."""

from __future__ import annotations

from dataclasses import dataclass, field

from arcbeat.exporters.capacity.settings import CapacitySettings
from arcbeat.exporters.influx_settings import InfluxSettings
from arcbeat.streams import settings as streams_settings


@dataclass(frozen=True, slots=True)
class Settings(streams_settings.Settings):
    """The stream processor's settings with the history exporter's sections."""

    influx: InfluxSettings = field(default_factory=InfluxSettings)
    capacity: CapacitySettings = field(default_factory=CapacitySettings)
