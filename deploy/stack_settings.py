"""The local stack's section of the settings (`arcbeat stack`, `arcbeat demo`): its folder,
service URLs, ports and Kafka users (docs/settings.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from arcbeat.streams.setting_values import check_choice, check_port, hide_secrets

StackKafkaSecurity = Literal["plaintext", "sasl_ssl"]  # the local stack's broker


@dataclass(frozen=True, slots=True)
@hide_secrets
class StackSettings:
    """The local stack (`arcbeat stack`, `arcbeat demo`): its folder, ports and Kafka users."""

    state_dir: str = "state"
    prometheus_url: str = "http://127.0.0.1:9090"
    alertmanager_url: str = "http://127.0.0.1:9093"
    kafka_controller_port: int = 19093  # KRaft controller listener of the local broker
    # "sasl_ssl": the local broker's client listener is SASL_SSL (TLS 1.2+, SCRAM-SHA-512
    # users, StandardAuthorizer + ACLs); certificates and passwords under <state>/secrets
    kafka_security: StackKafkaSecurity = "plaintext"
    kafka_worker_user: str = "worker"
    kafka_history_user: str = "history"
    kafka_agent_users: tuple[str, ...] = ("agent",)
    influx_rpc_port: int = 8089  # InfluxDB 1.x backup/restore RPC bind (loopback)

    def validate(self) -> None:
        check_port("kafka_controller_port", self.kafka_controller_port)
        check_port("influx_rpc_port", self.influx_rpc_port)
        check_choice("kafka_security", self.kafka_security, get_args(StackKafkaSecurity))


