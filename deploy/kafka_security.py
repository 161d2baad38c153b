"""A broker in ``kafka_security = "sasl_ssl"`` mode: certificates and its configuration.

Everything secret lives under ``<state>/secrets/kafka`` (mode 0700, files 0600)::

    ca.pem, ca.key          a throw-away CA for this state folder (tests, local use)
    broker.pem              the broker's PKCS#8 key + certificate (SAN 127.0.0.1, localhost)
    <user>.password         one random password per SCRAM user (admin, worker, history, agents)

The client listener (the ``kafka_bootstrap`` port) is SASL_SSL with SCRAM-SHA-512, TLS 1.2
or 1.3 only. The KRaft controller listener stays on loopback with SASL PLAIN (SCRAM users
live in the metadata log, which the controller must read before it could check them), and
only ``admin`` may use it. ``StandardAuthorizer`` with ``super.users=User:admin`` denies
everything no ACL allows; :func:`arcbeat.deploy.kafka_admin.acls.acl_bindings` gives each
arcbeat principal the least it needs (agents: write their heartbeats topic, nothing else).

SCRAM users are written into the metadata log when the storage is formatted
(``StorageTool format --add-scram``, :func:`arcbeat.deploy.kafka_admin.scram.scram_argument`)
in the salted form, so no password ever appears on a command line or in a log; users added
later are upserted on the running broker (:mod:`arcbeat.deploy.kafka_admin`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from arcbeat.deploy.kafka_admin.scram import ADMIN_USER, write_private
from arcbeat.streams.settings import Settings

S = TypeVar("S", bound=Settings)  # the settings class of the caller, kept

TLS_PROTOCOLS = "TLSv1.2,TLSv1.3"


def secrets_dir(state_root: Path) -> Path:
    return state_root / "secrets" / "kafka"


def password_file(state_root: Path, user: str) -> Path:
    return secrets_dir(state_root) / f"{user}.password"


# -- certificates -------------------------------------------------------------------------------


def ensure_certificates(folder: Path, hosts: Iterable[str] = ("127.0.0.1", "localhost")) -> Path:
    """A CA and a broker certificate for ``hosts`` in ``folder`` (once); returns ca.pem."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_pem, broker_pem = folder / "ca.pem", folder / "broker.pem"
    if ca_pem.is_file() and broker_pem.is_file():
        return ca_pem
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "arcbeat local CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "arcbeat-kafka")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    plain = serialization.NoEncryption()
    write_private(folder / "ca.key", ca_key.private_bytes(pem, pkcs8, plain))
    # Kafka's PEM keystore: the PKCS#8 key followed by the certificate chain, one file
    write_private(
        broker_pem,
        key.private_bytes(pem, pkcs8, plain) + cert.public_bytes(pem) + ca_cert.public_bytes(pem),
    )
    write_private(ca_pem, ca_cert.public_bytes(pem))
    return ca_pem


# -- broker configuration ---------------------------------------------------------------------


def jaas_line(module: str, user: str, password: str, extra: str = "") -> str:
    quoted = password.replace("\\", "\\\\").replace('"', '\\"')
    return f'{module} required username="{user}" password="{quoted}"{extra};'


@dataclass(frozen=True, slots=True)
class Listener:
    """One SASL_SSL client listener: where it binds and what it advertises."""

    name: str  # e.g. SASL_SSL (local stack), INTERNAL / EXTERNAL (compose)
    bind: str  # host:port ("" host = every interface)
    advertised: str  # host:port clients are sent to


def server_properties(
    listeners: Sequence[Listener],
    controller: Listener,
    secrets_folder: Path,
    admin_password: str,
) -> str:
    """The lines that turn the plaintext template into a SASL_SSL broker (later keys win).

    The first listener is the inter-broker one. The local stack has one listener on
    loopback; compose has INTERNAL (containers) and EXTERNAL (the host).
    """
    plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
    pw = admin_password.replace("\\", "\\\\").replace('"', '\\"')
    every = [*listeners, controller]
    lines = [
        "",
        "# ---- kafka_security = sasl_ssl (written by arcbeat; overrides the above)",
        "listeners=" + ",".join(f"{x.name}://{x.bind}" for x in every),
        "advertised.listeners=" + ",".join(f"{x.name}://{x.advertised}" for x in every),
        f"controller.listener.names={controller.name}",
        f"controller.quorum.bootstrap.servers={controller.advertised}",
        "listener.security.protocol.map="
        + ",".join(
            [f"{controller.name}:SASL_PLAINTEXT"] + [f"{x.name}:SASL_SSL" for x in listeners]
        ),
        f"inter.broker.listener.name={listeners[0].name}",
        "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
        "sasl.enabled.mechanisms=SCRAM-SHA-512",
    ]
    for x in listeners:
        low = x.name.lower()
        lines += [
            f"listener.name.{low}.sasl.enabled.mechanisms=SCRAM-SHA-512",
            f"listener.name.{low}.scram-sha-512.sasl.jaas.config="
            + jaas_line(scram, ADMIN_USER, admin_password),
        ]
    low = controller.name.lower()
    lines += [
        # the controller cannot check SCRAM before it has read the metadata log: PLAIN,
        # never published, one static user (admin)
        "sasl.mechanism.controller.protocol=PLAIN",
        f"listener.name.{low}.sasl.enabled.mechanisms=PLAIN",
        f"listener.name.{low}.plain.sasl.jaas.config="
        + jaas_line(plain, ADMIN_USER, admin_password, f' user_{ADMIN_USER}="{pw}"'),
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={secrets_folder / 'broker.pem'}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={secrets_folder / 'ca.pem'}",
        f"ssl.enabled.protocols={TLS_PROTOCOLS}",
        "ssl.protocol=TLSv1.3",
        "ssl.client.auth=none",
        "ssl.endpoint.identification.algorithm=https",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        f"super.users=User:{ADMIN_USER}",
        "allow.everyone.if.no.acl.found=false",
        "",
    ]
    return "\n".join(lines)


def local_server_properties(
    kafka_port: int, controller_port: int, secrets_folder: Path, admin_password: str
) -> str:
    """The local stack's broker: one SASL_SSL listener and the controller, on loopback."""
    host = "127.0.0.1"
    client = Listener("SASL_SSL", f"{host}:{kafka_port}", f"{host}:{kafka_port}")
    controller = Listener("CONTROLLER", f"{host}:{controller_port}", f"{host}:{controller_port}")
    return server_properties([client], controller, secrets_folder, admin_password)


def admin_settings(settings: S, state_root: Path) -> S:
    """The stack's own client settings in sasl_ssl mode: admin over SASL_SSL, our CA."""
    folder = secrets_dir(state_root)
    return settings.replace(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_username=ADMIN_USER,
        kafka_password="",
        kafka_password_file=str(password_file(state_root, ADMIN_USER)),
        kafka_ca_file=str(folder / "ca.pem"),
    )


def client_settings(settings: S, state_root: Path, user: str) -> S:
    """Client settings for one of the stack's users (tests, `arcbeat stack` hints)."""
    return admin_settings(settings, state_root).replace(
        kafka_username=user, kafka_password_file=str(password_file(state_root, user))
    )
