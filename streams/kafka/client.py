"""TLS and SASL options for every arcbeat Kafka client, from :class:`KafkaSettings`.

One place decides how arcbeat talks to Kafka: :func:`client_options` gives the keyword
arguments for aiokafka producers, consumers and admin clients (the Faust app itself connects
to no broker: the worker's heartbeat loop has its own clients). With the default
``PLAINTEXT`` they are empty. TLS contexts refuse anything below TLS 1.2, and verify
the broker's certificate and host name against ``kafka_ca_file`` (or the system CAs).

Passwords come from ``kafka_password`` or the first line of ``kafka_password_file``; they are
never logged, and :class:`KafkaAuth`'s repr hides them.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arcbeat.streams.settings import KafkaSettings, SettingsError, read_secret

__all__ = ["KafkaAuth", "client_options", "kafka_auth", "ssl_context"]


@dataclass(frozen=True, slots=True)
class KafkaAuth:
    """The resolved security settings of one client (password read, CA checked)."""

    protocol: str  # PLAINTEXT | SSL | SASL_SSL
    mechanism: str
    username: str
    password: str = field(repr=False)
    ca_file: str


def kafka_auth(kafka: KafkaSettings) -> KafkaAuth:
    """Check that the settings of ``kafka.security_protocol`` are complete."""
    protocol = kafka.security_protocol
    password = read_secret(kafka.password, kafka.password_file, "kafka_password")
    if protocol == "SASL_SSL":
        if not kafka.username:
            raise SettingsError(
                "setting kafka_username (ARCBEAT_KAFKA_USERNAME): required with "
                "kafka_security_protocol=SASL_SSL"
            )
        if not password:
            raise SettingsError(
                "setting kafka_password (ARCBEAT_KAFKA_PASSWORD) or kafka_password_file "
                "(ARCBEAT_KAFKA_PASSWORD_FILE): required with kafka_security_protocol=SASL_SSL"
            )
    ca = kafka.ca_file
    if ca and protocol != "PLAINTEXT" and not Path(ca).expanduser().is_file():
        raise SettingsError(
            f"setting kafka_ca_file (ARCBEAT_KAFKA_CA_FILE): {ca} is not a file; give the PEM "
            "CA certificate that signed the broker's certificate (the local stack writes "
            "<state>/secrets/kafka/ca.pem)"
        )
    return KafkaAuth(protocol, kafka.sasl_mechanism, kafka.username, password, ca)


def ssl_context(ca_file: str = "") -> ssl.SSLContext:
    """A client TLS context: TLS 1.2 at least, broker certificate and host name verified."""
    from aiokafka.helpers import create_ssl_context

    # create_default_context underneath: system CAs when no file is given
    ctx: ssl.SSLContext = create_ssl_context(
        cafile=str(Path(ca_file).expanduser()) if ca_file else None
    )
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for ``AIOKafkaProducer/Consumer/AdminClient`` (``{}`` for PLAINTEXT)."""
    auth = kafka_auth(kafka)
    if auth.protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {
        "security_protocol": auth.protocol,
        "ssl_context": ssl_context(auth.ca_file),
    }
    if auth.protocol == "SASL_SSL":
        options.update(
            sasl_mechanism=auth.mechanism,
            sasl_plain_username=auth.username,
            sasl_plain_password=auth.password,
        )
    return options
