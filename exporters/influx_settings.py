"""The InfluxDB section of the settings: where `arcbeat history` writes the history, and the
address of its own /metrics (docs/settings.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from arcbeat.streams.setting_values import (
    LoadedSecret,
    Seconds,
    check_choice,
    check_port,
    hide_secrets,
    named,
)

InfluxApi = Literal["v1", "v2"]


@dataclass(frozen=True, slots=True)
@hide_secrets
class InfluxSettings:
    """History in InfluxDB (docs/metrics-alerts-history.md): where `arcbeat history` writes,
    and the port of its own /metrics."""

    url: str = named("influx_url", "http://127.0.0.1:8086")
    # "v1" -> /write?db=, "v2" -> /api/v2/write via influxdb-client
    api: InfluxApi = named("influx_api", "v1")
    db: str = named("influx_db", "arcbeat")
    org: str = named("influx_org", "arcbeat")
    token: LoadedSecret = named("influx_token", "")
    token_file: str = named("influx_token_file", "")  # read when token is empty (first line)
    username: str = named("influx_username", "")
    password: LoadedSecret = named("influx_password", "")
    # read when password is empty (first line)
    password_file: str = named("influx_password_file", "")
    batch_size: int = named("influx_batch_size", 5000)
    flush_interval: Seconds = named("influx_flush_interval", 1.0)
    history_port: int = 6070  # `arcbeat history` serves /metrics here
    history_host: str = "127.0.0.1"  # ... on this address (0.0.0.0: every interface)

    def validate(self) -> None:
        check_port("history_port", self.history_port)
        check_choice("influx_api", self.api, get_args(InfluxApi))


