"""Typed, frozen settings: ``ARCBEAT_*`` env over an optional ``arcbeat.toml`` over defaults.

A bad value fails at start with a :class:`SettingsError` naming the setting, where it came from
and what would be accepted.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from arcbeat.streams.topics import Topics

DEFAULT_REGIONS: tuple[str, ...] = ("westus2", "westeurope", "westasia")
KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_SSL"]
KafkaSaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]
StackKafkaSecurity = Literal["plaintext", "sasl_ssl"]  # the local stack's broker
InfluxApi = Literal["v1", "v2"]
KAFKA_SECURITY_PROTOCOLS: tuple[str, ...] = get_args(KafkaSecurityProtocol)
KAFKA_SASL_MECHANISMS: tuple[str, ...] = get_args(KafkaSaslMechanism)
MAX_REPLICATION = 32767  # Kafka stores replication factors as int16

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


class SettingsError(ValueError):
    """A setting has a value arcbeat cannot use; the message says which, where and how to fix."""


def parse_duration(value: object) -> float:
    """Seconds from ``300``, ``300s``, ``15m``, ``45d``, ``1.5h`` or a number."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ValueError(
                f"expected a duration such as 300, 300s, 15m, 2h or 45d, got {value!r}"
            )
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2) or "s"]
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    return seconds


def _parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true/false, got {value!r}")


def _parse_list(value: object) -> tuple[str, ...]:
    items = [str(v) for v in value] if isinstance(value, list | tuple) else str(value).split(",")
    return tuple(i.strip().lower() for i in items if i.strip())


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of arcbeat. Durations are seconds (floats)."""

    # Kafka
    kafka_bootstrap: str = "localhost:9092"
    topic_prefix: str = "arcbeat"  # topics: <prefix>.heartbeats, <prefix>.status, ...
    partitions: int = 12
    # copies of every topic arcbeat creates (deployment topics and the worker's own
    # <app_id>-checkpoints / <app_id>-scopes); 0 = auto: 3, or every broker of a cluster
    # with fewer (1 on the single local broker)
    replication_factor: int = 0
    # min.insync.replicas of those topics (acks=all writes need this many copies in sync);
    # 0 = auto: 2 when a topic has 3 or more copies, else 1
    min_insync_replicas: int = 0
    app_id: str = "arcbeat"  # Faust app id = consumer group
    # Kafka client security (every arcbeat client; see arcbeat.streams.kafka_client)
    kafka_security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: KafkaSaslMechanism = "SCRAM-SHA-512"
    kafka_username: str = ""
    kafka_password: str = field(default="", repr=False)
    kafka_password_file: str = ""  # read when kafka_password is empty (first line)
    kafka_ca_file: str = ""  # PEM CA bundle for SSL/SASL_SSL (empty: system CAs)
    # identity binding (arcbeat.streams.identity): agents sign heartbeats, the worker checks
    identity_bindings: str = ""  # TOML/JSON file: principal -> secret + allowed scopes
    identity_principal: str = ""  # agent side: sign as this principal (empty: do not sign)
    identity_secret: str = field(default="", repr=False)
    identity_secret_file: str = ""
    # ticks signed by the workers (HMAC keys, one per line; empty: ticks are not signed)
    tick_key_file: str = ""
    # status timing (docs/how-it-decides.md, Timing)
    heartbeat_interval: float = 300.0
    disconnect_after: float = 900.0
    expire_after: float = 45 * 86400.0
    check_interval: float = 1.0
    window: float = 3600.0
    flap_threshold: int = 4
    # mass silence (docs/how-it-decides.md, Mass silence)
    outage_ratio: float = 0.5
    outage_min_machines: int = 20
    outage_hold: float = 900.0
    # input validation (docs/heartbeat-contract.md, Rejected messages: the DLQ)
    regions: tuple[str, ...] = DEFAULT_REGIONS  # ("*",) accepts any region
    max_message_bytes: int = 8192
    skew_warn: float = 300.0  # |arrival - sentAt| above this counts as clock skew
    # workers
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    # worker HTTP API security (arcbeat.streams.auth; README "Securing the API")
    # "<role> <name> <token>" lines, re-read when the file changes; empty: no authentication,
    # which a worker accepts only on a loopback web_host (or with api_insecure)
    api_tokens_file: str = ""
    api_insecure: bool = False  # serve an unauthenticated API on a routable web_host anyway
    api_protect_probes: bool = False  # /healthz, /readyz and /metrics need the read role too
    api_tls_cert: str = ""  # PEM certificate (chain) of the API listener: with api_tls_key, https
    api_tls_key: str = ""  # PEM private key of api_tls_cert
    api_tls_ca: str = ""  # PEM CA bundle worker-to-worker calls verify (empty: system CAs)
    data_dir: str = "state/worker"
    # how long the producer gathers records into one request: outputs are visible only at
    # the transaction commit (commit_interval) anyway
    producer_linger: float = 0.1
    commit_interval: float = 0.5  # transaction/offset commit cadence (bounds output latency)
    # each partition's state is checkpointed this often; a restart replays the heartbeats
    # log since the latest checkpoint (at most this long a stretch of it)
    checkpoint_interval: float = 120.0
    # consumer-group session: how long a crashed worker that does not come back keeps its
    # partitions before the group hands them to the others. A worker started again under
    # the same instance id takes them back at once (static membership).
    session_timeout: float = 20.0
    # static group membership id; empty: <app_id>-<hostname>-<worker id>
    instance_id: str = ""
    availability_windows: bool = True  # per-machine heartbeat counts per window (availability)
    # metrics (docs/metrics-alerts-history.md, Metrics)
    max_machine_series: int = 10_000
    # InfluxDB (docs/metrics-alerts-history.md, History in InfluxDB)
    influx_url: str = "http://127.0.0.1:8086"
    influx_api: InfluxApi = "v1"  # "v1" -> /write?db=, "v2" -> /api/v2/write via influxdb-client
    influx_db: str = "arcbeat"
    influx_org: str = "arcbeat"
    influx_token: str = field(default="", repr=False)
    influx_token_file: str = ""  # read when influx_token is empty (first line)
    influx_username: str = ""
    influx_password: str = field(default="", repr=False)
    influx_password_file: str = ""  # read when influx_password is empty (first line)
    influx_batch_size: int = 5000
    influx_flush_interval: float = 1.0
    fleet_snapshot_interval: float = 10.0
    history_port: int = 6070  # `arcbeat history` serves /metrics here
    # local stack (arcbeat stack)
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
    # capacity (docs/metrics-alerts-history.md, Capacity planning)
    limit_resource_groups_per_subscription: int = 980
    limit_machines_per_resource_group: int = 800  # 0 switches the check off
    limit_tags_per_machine: int = 50
    limit_tenant_objects: int = 50_000
    # `arcbeat history` computes the fleet's capacity report every capacity_interval (0 = off)
    # from a worker's GET /capacity at capacity_source_url (a worker's base URL; empty =
    # http://web_host:web_port)
    capacity_interval: float = 60.0
    capacity_source_url: str = ""

    @property
    def topics(self) -> Topics:
        return Topics.of(self.topic_prefix, self.app_id)

    @property
    def heartbeats_topic(self) -> str:
        return self.topics.heartbeats

    @property
    def status_topic(self) -> str:
        return self.topics.status

    @property
    def dlq_topic(self) -> str:
        return self.topics.dlq

    @property
    def maintenance_topic(self) -> str:
        return self.topics.maintenance

    def accepts_region(self, region: str) -> bool:
        return "*" in self.regions or region in self.regions

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed, validated like a fresh load."""
        new = dataclasses.replace(self, **changes)
        new.validate()
        return new

    def validate(self) -> None:
        def bad(name: str, why: str) -> SettingsError:
            env = "ARCBEAT_" + name.upper()
            return SettingsError(f"setting {name} ({env}): {why}")

        if self.heartbeat_interval <= 0:
            raise bad("heartbeat_interval", "must be > 0")
        if self.disconnect_after < 2 * self.heartbeat_interval:
            raise bad(
                "disconnect_after",
                f"must be at least 2 x heartbeat_interval ({2 * self.heartbeat_interval:g}s), "
                f"got {self.disconnect_after:g}s",
            )
        if self.expire_after <= 0:
            raise bad("expire_after", "must be > 0")
        if self.check_interval <= 0:
            raise bad("check_interval", "must be > 0")
        if self.window <= 0:
            raise bad("window", "must be > 0")
        if not 0 <= self.producer_linger <= 1:
            raise bad("producer_linger", f"must be 0..1s, got {self.producer_linger:g}s")
        if self.session_timeout < 6:
            raise bad(
                "session_timeout",
                f"must be >= 6s (the broker's group.min.session.timeout.ms), "
                f"got {self.session_timeout:g}s",
            )
        if self.checkpoint_interval < 1:
            raise bad("checkpoint_interval", f"must be >= 1s, got {self.checkpoint_interval:g}s")
        if not 0 < self.outage_ratio <= 1:
            raise bad("outage_ratio", f"must be in (0, 1], got {self.outage_ratio}")
        if self.outage_min_machines < 1:
            raise bad("outage_min_machines", "must be >= 1")
        if self.partitions < 1:
            raise bad("partitions", "must be >= 1")
        for name in ("replication_factor", "min_insync_replicas"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_REPLICATION:
                raise bad(
                    name, f"must be 0 (auto) or a number of copies 1-{MAX_REPLICATION}, got {value}"
                )
        if 0 < self.replication_factor < self.min_insync_replicas:
            raise bad(
                "min_insync_replicas",
                f"{self.min_insync_replicas} is more than replication_factor "
                f"({self.replication_factor}): every acks=all write would fail; use at most "
                f"{self.replication_factor}, or 0 (auto)",
            )
        for port_name in ("web_port", "kafka_controller_port", "influx_rpc_port"):
            port = getattr(self, port_name)
            if not 1 <= port <= 65535:
                raise bad(port_name, f"must be a TCP port (1-65535), got {port}")
        if not 1 <= self.history_port <= 65535:
            raise bad("history_port", f"must be a TCP port, got {self.history_port}")
        if self.influx_api not in get_args(InfluxApi):
            raise bad("influx_api", f"must be v1 or v2, got {self.influx_api!r}")
        if self.capacity_source_url and not re.match(r"https?://", self.capacity_source_url):
            raise bad(
                "capacity_source_url",
                f"must be a worker's base URL such as http://127.0.0.1:6066, "
                f"got {self.capacity_source_url!r}",
            )
        if self.kafka_security_protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise bad(
                "kafka_security_protocol",
                f"must be one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}, "
                f"got {self.kafka_security_protocol!r}",
            )
        if self.kafka_sasl_mechanism not in KAFKA_SASL_MECHANISMS:
            raise bad(
                "kafka_sasl_mechanism",
                f"must be one of {', '.join(KAFKA_SASL_MECHANISMS)}, "
                f"got {self.kafka_sasl_mechanism!r}",
            )
        if self.kafka_security not in get_args(StackKafkaSecurity):
            raise bad(
                "kafka_security", f"must be plaintext or sasl_ssl, got {self.kafka_security!r}"
            )
        if bool(self.api_tls_cert) != bool(self.api_tls_key):
            missing = "api_tls_key" if self.api_tls_cert else "api_tls_cert"
            raise bad(
                missing, "api_tls_cert and api_tls_key go together: set both for https, or neither"
            )
        if self.api_protect_probes and not self.api_tokens_file:
            raise bad(
                "api_protect_probes",
                "needs api_tokens_file (ARCBEAT_API_TOKENS_FILE): without tokens nobody could "
                "call the probes",
            )
        if not self.regions:
            raise bad("regions", "must list at least one region, or * for any")
        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.topic_prefix):
            raise bad("topic_prefix", "letters, digits, . _ - only")

    @classmethod
    def load(
        cls,
        env: Mapping[str, str] | None = None,
        toml_path: str | Path | None = None,
        **overrides: Any,
    ) -> Settings:
        """Defaults, then ``arcbeat.toml`` (``ARCBEAT_CONFIG`` or ./arcbeat.toml), then env."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        path = Path(toml_path or env.get("ARCBEAT_CONFIG", "arcbeat.toml"))
        if path.is_file():
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as exc:
                raise SettingsError(f"{path}: not valid TOML: {exc}") from exc
            section = data.get("arcbeat", data)
            for key, raw in section.items():
                values[key] = (raw, f"{path} [{key}]")
        for f in fields(cls):
            name = "ARCBEAT_" + f.name.upper()
            if name in env:
                values[f.name] = (env[name], f"environment {name}")
        for key, raw in overrides.items():
            values[key] = (raw, f"argument {key}")
        known = {f.name: f for f in fields(cls)}
        parsed: dict[str, Any] = {}
        for key, (raw, where) in values.items():
            if key not in known:
                raise SettingsError(
                    f"{where}: unknown setting {key!r}; known settings: {', '.join(sorted(known))}"
                )
            parsed[key] = _convert(known[key], raw, where)
        # secrets kept in files (Docker/Kubernetes secrets) are read once, here
        for name in ("influx_token", "influx_password"):
            if not parsed.get(name) and parsed.get(f"{name}_file"):
                parsed[name] = read_secret("", parsed[f"{name}_file"], name)
        settings = cls(**parsed)
        settings.validate()
        return settings


def read_secret(value: str, path: str, name: str) -> str:
    """``value``, else the first line of the file ``path`` ('' when neither is set).

    ``name`` is the setting, for the error message; the secret itself is never shown.
    """
    if value or not path:
        return value
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(
            f"setting {name}_file (ARCBEAT_{name.upper()}_FILE): cannot read {path}: "
            f"{exc.strerror or exc}; point it at a readable file holding the secret"
        ) from None
    lines = text.splitlines()
    return lines[0].strip() if lines else ""


_DURATION_FIELDS = {
    "heartbeat_interval",
    "disconnect_after",
    "expire_after",
    "check_interval",
    "window",
    "outage_hold",
    "skew_warn",
    "influx_flush_interval",
    "fleet_snapshot_interval",
    "commit_interval",
    "producer_linger",
    "session_timeout",
    "checkpoint_interval",
    "capacity_interval",
}


def _convert(f: dataclasses.Field[Any], raw: object, where: str) -> Any:
    try:
        if f.name in _DURATION_FIELDS:
            return parse_duration(raw)
        default = f.default
        if isinstance(default, bool):
            return _parse_bool(raw)
        if isinstance(default, int):
            return int(str(raw).replace("_", ""))
        if isinstance(default, float):
            return float(str(raw))
        if isinstance(default, tuple):
            return _parse_list(raw)
        return str(raw)
    except ValueError as exc:
        raise SettingsError(f"setting {f.name} from {where}: bad value {raw!r}: {exc}") from exc
