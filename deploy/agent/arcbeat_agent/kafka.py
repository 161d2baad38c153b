"""How the agent talks to Kafka: the producer's options (TLS 1.2 or newer with the broker's
certificate and host name verified, SASL/SCRAM), and what a Kafka error means for the user."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path
from typing import Any

from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    ClusterAuthorizationFailedError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnsupportedSaslMechanismError,
)

from arcbeat_agent.config import AgentConfig, read_secret
from arcbeat_agent.errors import ConfigError

REFUSALS = (
    AuthenticationFailedError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
    TopicAuthorizationFailedError,
    ClusterAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)


def ssl_context(ca_file: str = "") -> ssl.SSLContext:
    """A client TLS context: TLS 1.2 at least, certificate and host name verified."""
    ctx = ssl.create_default_context(cafile=str(Path(ca_file).expanduser()) if ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_options(config: AgentConfig) -> dict[str, Any]:
    """Keyword arguments for aiokafka clients (``{}`` for PLAINTEXT); reads the password file."""
    k = config.kafka
    if k.security_protocol == "PLAINTEXT":
        return {}
    if k.ca_file and not Path(k.ca_file).expanduser().is_file():
        raise ConfigError(
            f"{config.where('kafka', 'ca_file')}: [kafka] ca_file = {k.ca_file}: no such file; "
            "give the PEM certificate of the CA that signed the brokers' certificates"
        )
    try:
        ctx = ssl_context(k.ca_file)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"{config.where('kafka', 'ca_file')}: [kafka] ca_file = {k.ca_file}: not a PEM CA "
            f"certificate ({exc})"
        ) from None
    options: dict[str, Any] = {"security_protocol": k.security_protocol, "ssl_context": ctx}
    if k.security_protocol == "SASL_SSL":
        options.update(
            sasl_mechanism=k.sasl_mechanism,
            sasl_plain_username=k.username,
            sasl_plain_password=read_secret(k.password_file, "[kafka] password_file", config),
        )
    return options


def producer_options(config: AgentConfig) -> dict[str, Any]:
    """The heartbeat producer: acknowledged by all in-sync replicas, idempotent, one
    connection per broker it writes to, bounded waits."""
    timeout_ms = int(config.kafka.request_timeout * 1000)
    return {
        "bootstrap_servers": config.kafka.brokers,
        "client_id": "arcbeat-agent",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 0,
        "request_timeout_ms": timeout_ms,
        "retry_backoff_ms": 500,
        "connections_max_idle_ms": 9 * 60 * 1000,
        **client_options(config),
    }


def explain(exc: BaseException, config: AgentConfig) -> str:
    """A Kafka error as one line with the fix."""
    k = config.kafka
    if isinstance(exc, (AuthenticationFailedError, SaslAuthenticationFailed)):
        return (
            f"Kafka refused the login of {k.username!r} ({k.sasl_mechanism}): check [kafka] "
            "username and the password in password_file, and that the user exists on the "
            "cluster (`arcbeat-agent check` tests it)"
        )
    if isinstance(exc, UnsupportedSaslMechanismError):
        return (
            f"the brokers do not offer {k.sasl_mechanism}: set [kafka] sasl_mechanism to one "
            "they enable"
        )
    if isinstance(exc, TopicAuthorizationFailedError):
        return (
            f"Kafka does not let {k.username or 'this client'!r} write {k.heartbeats_topic}: "
            "grant it WRITE on that topic (see docs/agent.md, Credentials for a fleet)"
        )
    if isinstance(exc, (ClusterAuthorizationFailedError, TransactionalIdAuthorizationFailed)):
        return (
            "Kafka refused the idempotent producer: the user needs IDEMPOTENT_WRITE on the "
            "cluster or WRITE on the heartbeats topic"
        )
    return (
        f"cannot reach Kafka at {k.bootstrap} ({type(exc).__name__}: {exc}); check the "
        "network and [kafka] bootstrap, or run `arcbeat-agent check`"
    )


async def diagnose(exc: BaseException, config: AgentConfig, timeout: float = 10.0) -> (
    BaseException
):
    """The real cause behind aiokafka's "Unable to bootstrap": a login the brokers refused
    is reported as a connection error, so try one broker directly and return its refusal."""
    original: BaseException = exc
    if not isinstance(exc, KafkaConnectionError) or config.kafka.security_protocol != "SASL_SSL":
        return original
    options = client_options(config)
    for broker in config.kafka.brokers:
        host, _, port = broker.rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(host, int(port), client_id="arcbeat-agent",
                            request_timeout_ms=int(timeout * 1000), **options),
                timeout,
            )
        except REFUSALS as refusal:
            found: BaseException = refusal
            return found
        except Exception:
            continue
        with contextlib.suppress(Exception):
            conn.close()
    return original
