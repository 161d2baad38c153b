"""The sections of the settings: one frozen dataclass per concern, each field declared once
(its annotation drives the conversion, see :mod:`arcbeat.streams.setting_values`), each
section checking its own values."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

from arcbeat.streams.setting_values import (
    Seconds,
    Secret,
    bad,
    check_choice,
    check_port,
    check_positive,
    hide_secrets,
    named,
    worker_ordinal,
)
from arcbeat.streams.topics import Topics

DEFAULT_REGIONS: tuple[str, ...] = ("westus2", "westeurope", "westasia")
KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_SSL"]
KafkaSaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]
KAFKA_SECURITY_PROTOCOLS: tuple[str, ...] = get_args(KafkaSecurityProtocol)
KAFKA_SASL_MECHANISMS: tuple[str, ...] = get_args(KafkaSaslMechanism)
MAX_REPLICATION = 32767  # Kafka stores replication factors as int16


# ---- the sections ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
@hide_secrets
class KafkaSettings:
    """Where the Kafka cluster is, the topics arcbeat uses and how every client connects."""

    bootstrap: str = named("kafka_bootstrap", "localhost:9092")
    topic_prefix: str = "arcbeat"  # topics: <prefix>.heartbeats, <prefix>.status, ...
    partitions: int = 12
    # copies of every topic arcbeat creates (deployment topics and the worker's own
    # <app_id>-checkpoints / <app_id>-scopes); 0 = auto: 3, or every broker of a cluster
    # with fewer (1 on the single local broker)
    replication_factor: int = 0
    # min.insync.replicas of those topics (acks=all writes need this many copies in sync);
    # 0 = auto: 2 when a topic has 3 or more copies, else 1
    min_insync_replicas: int = 0
    # the workers' consumer group (the heartbeat loop's), and the prefix of their own topics
    # (<app_id>-checkpoints, <app_id>-scopes)
    app_id: str = "arcbeat"
    # client security (every arcbeat client; see arcbeat.streams.kafka.client)
    security_protocol: KafkaSecurityProtocol = named("kafka_security_protocol", "PLAINTEXT")
    sasl_mechanism: KafkaSaslMechanism = named("kafka_sasl_mechanism", "SCRAM-SHA-512")
    username: str = named("kafka_username", "")
    password: Secret = named("kafka_password", "")
    # read when password is empty (first line)
    password_file: str = named("kafka_password_file", "")
    ca_file: str = named("kafka_ca_file", "")  # PEM CA bundle for SSL/SASL_SSL (empty: system CAs)
    # a worker or history exporter started while Kafka is partly down (a broker just died,
    # not yet fenced by the controller) retries retriable errors for this long, then exits
    startup_deadline: Seconds = 120.0

    @property
    def topics(self) -> Topics:
        return Topics.of(self.topic_prefix, self.app_id)

    def validate(self) -> None:
        if self.partitions < 1:
            raise bad("partitions", "must be >= 1")
        for name, value in (
            ("replication_factor", self.replication_factor),
            ("min_insync_replicas", self.min_insync_replicas),
        ):
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
        check_positive("startup_deadline", self.startup_deadline)
        check_choice("kafka_security_protocol", self.security_protocol, KAFKA_SECURITY_PROTOCOLS)
        check_choice("kafka_sasl_mechanism", self.sasl_mechanism, KAFKA_SASL_MECHANISMS)
        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.topic_prefix):
            raise bad("topic_prefix", "letters, digits, . _ - only")


@dataclass(frozen=True, slots=True)
@hide_secrets
class IdentitySettings:
    """Signed heartbeats (arcbeat.streams.decide.identity) and signed ticks: agents sign heartbeats,
    the worker checks them; workers sign and check their ticks."""

    # TOML/JSON file: principal -> secret + allowed scopes
    bindings: str = named("identity_bindings", "")
    # agent side: sign as this principal (empty: do not sign)
    principal: str = named("identity_principal", "")
    secret: Secret = named("identity_secret", "")
    secret_file: str = named("identity_secret_file", "")
    # ticks signed by the workers (HMAC keys, one per line; empty: ticks are not signed)
    tick_key_file: str = ""

    def validate(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
@hide_secrets
class TimingSettings:
    """When a machine's status changes (docs/how-it-decides.md, Timing and Mass silence)."""

    heartbeat_interval: Seconds = 300.0
    disconnect_after: Seconds = 900.0
    expire_after: Seconds = 45 * 86400.0
    check_interval: Seconds = 1.0
    window: Seconds = 3600.0
    flap_threshold: int = 4
    # mass silence
    outage_ratio: float = 0.5
    outage_min_machines: int = 20
    outage_hold: Seconds = 900.0
    # early warning (docs/early-warning.md): a Connected machine silent for longer than
    # late_after is late (0 = auto: 1.5 x heartbeat_interval, at most disconnect_after / 2);
    # a location whose late share or delivery-delay p90 stays degraded_factor x above its
    # own baseline for degraded_for (0 = one heartbeat_interval) is degraded, when it has at
    # least degraded_min_machines Connected machines
    late_after: Seconds = 0.0
    degraded_factor: float = 3.0
    degraded_for: Seconds = 0.0
    degraded_min_machines: int = 20
    # false: no delivery-delay bookkeeping per heartbeat (a few percent of the worker's CPU
    # per heartbeat); the degraded rule then judges the late share alone
    delivery_delays: bool = True

    def validate(self) -> None:
        check_positive("heartbeat_interval", self.heartbeat_interval)
        if self.disconnect_after < 2 * self.heartbeat_interval:
            raise bad(
                "disconnect_after",
                f"must be at least 2 x heartbeat_interval ({2 * self.heartbeat_interval:g}s), "
                f"got {self.disconnect_after:g}s",
            )
        check_positive("expire_after", self.expire_after)
        check_positive("check_interval", self.check_interval)
        check_positive("window", self.window)
        if not 0 < self.outage_ratio <= 1:
            raise bad("outage_ratio", f"must be in (0, 1], got {self.outage_ratio}")
        if self.outage_min_machines < 1:
            raise bad("outage_min_machines", "must be >= 1")
        if self.late_after < 0 or (self.late_after and self.late_after >= self.disconnect_after):
            raise bad(
                "late_after",
                f"must be 0 (auto) or a duration below disconnect_after "
                f"({self.disconnect_after:g}s), got {self.late_after:g}s",
            )
        if self.degraded_factor <= 1:
            raise bad("degraded_factor", f"must be > 1, got {self.degraded_factor:g}")
        if self.degraded_for < 0:
            raise bad("degraded_for", "must be 0 (one heartbeat_interval) or a duration")
        if self.degraded_min_machines < 1:
            raise bad("degraded_min_machines", "must be >= 1")


@dataclass(frozen=True, slots=True)
@hide_secrets
class InputSettings:
    """What heartbeats are accepted (docs/heartbeat-contract.md, Rejected messages: the DLQ)."""

    regions: tuple[str, ...] = DEFAULT_REGIONS  # ("*",) accepts any region
    max_message_bytes: int = 8192
    skew_warn: Seconds = 300.0  # |arrival - sentAt| above this counts as clock skew

    def accepts_region(self, region: str) -> bool:
        return "*" in self.regions or region in self.regions

    def validate(self) -> None:
        if not self.regions:
            raise bad("regions", "must list at least one region, or * for any")


@dataclass(frozen=True, slots=True)
@hide_secrets
class WorkerSettings:
    """The worker process: its HTTP API and its security, its Kafka cadences and metrics."""

    web_host: str = "127.0.0.1"
    web_port: int = 6066
    # HTTP API security (arcbeat.streams.api.auth; README "Securing the API")
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
    producer_linger: Seconds = 0.1
    commit_interval: Seconds = 0.5  # transaction/offset commit cadence (bounds output latency)
    # each partition's state is checkpointed this often; a restart replays the heartbeats
    # log since the latest checkpoint (at most this long a stretch of it)
    checkpoint_interval: Seconds = 120.0
    # /readyz stays ready while the worker has read everything that was in the log this long
    # ago: working off a burst (a held location released at once) is not being behind
    ready_max_lag: Seconds = 30.0
    # consumer-group session: how long a crashed worker that does not come back keeps its
    # partitions before the group hands them to the others. A worker started again under
    # the same instance id takes them back at once (static membership).
    session_timeout: Seconds = 20.0
    # static group membership id; empty: <app_id>-worker-<ordinal> when worker_id is set,
    # else <app_id>-<hostname>-<worker id>
    instance_id: str = ""
    # the worker's id when every worker has a host of its own (Kubernetes: the pod name of a
    # StatefulSet, whose trailing ordinal is taken: arcbeat-worker-2 -> 2). web_port is then
    # used as is (`arcbeat worker --id N` on one host adds N to it instead)
    worker_id: str = ""
    # the host name other workers reach this one by (routed API calls); empty: web_host, or
    # the host name when web_host is 0.0.0.0 / :: (Kubernetes: <pod>.<headless service>)
    advertised_host: str = ""
    availability_windows: bool = True  # per-machine heartbeat counts per window (availability)
    # metrics (docs/metrics-alerts-history.md, Metrics)
    max_machine_series: int = 10_000
    fleet_snapshot_interval: Seconds = 10.0  # each partition's counts by status to <prefix>.fleet

    @property
    def ordinal(self) -> int | None:
        """The worker number of ``worker_id`` (None when it is not set)."""
        if not self.worker_id:
            return None
        return worker_ordinal(self.worker_id)

    def validate(self) -> None:
        check_port("web_port", self.web_port)
        if self.worker_id:
            try:
                worker_ordinal(self.worker_id)
            except ValueError as exc:
                raise bad("worker_id", str(exc)) from None
        if self.advertised_host and not re.fullmatch(r"[A-Za-z0-9.:_\[\]-]+", self.advertised_host):
            raise bad(
                "advertised_host",
                f"must be a host name or an IP address, got {self.advertised_host!r}",
            )
        if not 0 <= self.producer_linger <= 1:
            raise bad("producer_linger", f"must be 0..1s, got {self.producer_linger:g}s")
        if self.session_timeout < 6:
            raise bad(
                "session_timeout",
                f"must be >= 6s (the broker's group.min.session.timeout.ms), "
                f"got {self.session_timeout:g}s",
            )
        if self.ready_max_lag < 0:
            raise bad("ready_max_lag", f"must be a duration >= 0, got {self.ready_max_lag:g}s")
        if self.checkpoint_interval < 1:
            raise bad("checkpoint_interval", f"must be >= 1s, got {self.checkpoint_interval:g}s")
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
