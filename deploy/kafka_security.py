"""The local broker in ``kafka_security = "sasl_ssl"`` mode: certificates, users, ACLs.

Everything secret lives under ``<state>/secrets/kafka`` (mode 0700, files 0600)::

    ca.pem, ca.key          a throw-away CA for this state folder (tests, local use)
    broker.pem              the broker's PKCS#8 key + certificate (SAN 127.0.0.1, localhost)
    <user>.password         one random password per SCRAM user (admin, worker, history, agents)

The client listener (the ``kafka_bootstrap`` port) is SASL_SSL with SCRAM-SHA-512, TLS 1.2
or 1.3 only. The KRaft controller listener stays on loopback with SASL PLAIN (SCRAM users
live in the metadata log, which the controller must read before it could check them), and
only ``admin`` may use it. ``StandardAuthorizer`` with ``super.users=User:admin`` denies
everything no ACL allows; :func:`acl_bindings` gives each arcbeat principal the least it
needs (agents: write their heartbeats topic, nothing else).

SCRAM users are written into the metadata log when the storage is formatted
(``StorageTool format --add-scram``) in the salted form, so no password ever appears on a
command line or in a log.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arcbeat.deploy.errors import StackError
from arcbeat.streams.settings import Settings

ADMIN_USER = "admin"
SCRAM_ITERATIONS = 8192
TLS_PROTOCOLS = "TLSv1.2,TLSv1.3"

# Kafka's wire codes (org.apache.kafka.common.resource / acl enums)
RESOURCE = {"topic": 2, "group": 3, "cluster": 4, "transactional_id": 5}
PATTERN = {"literal": 3, "prefixed": 4}
OPERATION = {
    "all": 2,
    "read": 3,
    "write": 4,
    "create": 5,
    "delete": 6,
    "alter": 7,
    "describe": 8,
    "describe_configs": 10,
    "alter_configs": 11,
    "idempotent_write": 12,
}
ALLOW = 3


def secrets_dir(state_root: Path) -> Path:
    return state_root / "secrets" / "kafka"


def users_of(settings: Settings) -> list[str]:
    """Every SCRAM user of the local broker, admin first, without duplicates."""
    names = [
        ADMIN_USER,
        settings.kafka_worker_user,
        settings.kafka_history_user,
        *settings.kafka_agent_users,
    ]
    return list(dict.fromkeys(n for n in names if n))


def write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def password_file(state_root: Path, user: str) -> Path:
    return secrets_dir(state_root) / f"{user}.password"


def ensure_passwords(folder: Path, users: Iterable[str]) -> dict[str, str]:
    """A random password per user in ``folder``, created once and kept (the broker keeps
    only its salted hash)."""
    out: dict[str, str] = {}
    for user in users:
        path = folder / f"{user}.password"
        if not path.is_file():
            write_private(path, (secrets.token_urlsafe(24) + "\n").encode())
        out[user] = path.read_text(encoding="utf-8").strip()
    return out


def salted_password(password: str, salt: bytes) -> bytes:
    """SCRAM-SHA-512's SaltedPassword (RFC 5802): what the broker stores, not the password."""
    return hashlib.pbkdf2_hmac("sha512", password.encode(), salt, SCRAM_ITERATIONS)


def scram_argument(user: str, password: str, *, salt: bytes | None = None) -> str:
    """``--add-scram`` value in the salted form (the password itself never leaves Python)."""
    salt = salt or secrets.token_bytes(16)
    salted = salted_password(password, salt)
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-512=[name={user},iterations={SCRAM_ITERATIONS},"
        f'salt="{b64(salt).decode()}",saltedpassword="{b64(salted).decode()}"]'
    )


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


def admin_settings(settings: Settings, state_root: Path) -> Settings:
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


def client_settings(settings: Settings, state_root: Path, user: str) -> Settings:
    """Client settings for one of the stack's users (tests, `arcbeat stack` hints)."""
    return admin_settings(settings, state_root).replace(
        kafka_username=user, kafka_password_file=str(password_file(state_root, user))
    )


# -- ACLs ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AclBinding:
    principal: str  # "User:<name>"
    resource: str  # key of RESOURCE
    name: str
    pattern: str  # "literal" | "prefixed"
    operation: str  # key of OPERATION

    def wire(self) -> tuple[int, str, int, str, str, int, int]:
        return (
            RESOURCE[self.resource],
            self.name,
            PATTERN[self.pattern],
            self.principal,
            "*",
            OPERATION[self.operation],
            ALLOW,
        )


def acl_bindings(settings: Settings, prefix: str | None = None) -> list[AclBinding]:
    """Least privilege for the arcbeat principals of one deployment (topic prefix)."""
    pre = settings.topic_prefix if prefix is None else prefix
    heartbeats = f"{pre}.heartbeats"
    out: list[AclBinding] = []
    for agent in settings.kafka_agent_users:
        user = f"User:{agent}"
        out += [
            AclBinding(user, "topic", heartbeats, "literal", op) for op in ("write", "describe")
        ]
        # idempotent producers (acks=all, enable_idempotence) need no cluster ACL since
        # Kafka 2.8 (WRITE on a topic implies IDEMPOTENT_WRITE)
    worker = f"User:{settings.kafka_worker_user}"
    app = settings.app_id
    for op in ("read", "write", "describe", "describe_configs"):
        out.append(AclBinding(worker, "topic", f"{pre}.", "prefixed", op))
    # changelog and repartition topics: <app_id>-<table>-changelog, created by Faust
    for op in ("read", "write", "describe", "describe_configs", "create", "alter_configs"):
        out.append(AclBinding(worker, "topic", app, "prefixed", op))
    out += [AclBinding(worker, "group", app, "prefixed", op) for op in ("read", "describe")]
    out += [
        AclBinding(worker, "transactional_id", app, "prefixed", op) for op in ("write", "describe")
    ]
    out.append(AclBinding(worker, "cluster", "kafka-cluster", "literal", "describe"))
    history = f"User:{settings.kafka_history_user}"
    # the maintenance windows are read without a consumer group, from the beginning
    for topic in (f"{pre}.status", f"{pre}.fleet", f"{pre}.maintenance"):
        out += [AclBinding(history, "topic", topic, "literal", op) for op in ("read", "describe")]
    out += [
        AclBinding(history, "group", f"{app}-history", "prefixed", op)
        for op in ("read", "describe")
    ]
    return out


async def create_acls(
    bootstrap: str, options: Mapping[str, Any], bindings: Iterable[AclBinding]
) -> int:
    """Create ACLs with Kafka's CreateAcls request (aiokafka has the request but no helper,
    aio-libs/aiokafka#955). Existing identical ACLs are fine. Returns how many were sent."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.protocol.admin import CreateAclsRequest
    from arcbeat.deploy.topics import close_quietly

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="arcbeat-acls", **dict(options)
    )
    sent = 0
    failures: list[str] = []
    try:
        await admin.start()
        for b in bindings:
            response = await admin._send_request(CreateAclsRequest(*b.wire()))
            for result in response.to_object().get("creation_responses", []):
                code = int(result.get("error_code", 0))
                if code:
                    failures.append(f"{b}: {result.get('error_message') or f'error {code}'}")
            sent += 1
    except Exception as exc:
        raise StackError(f"kafka: creating ACLs on {bootstrap} failed: {exc!r}") from exc
    finally:
        await close_quietly(admin)
    if failures:
        raise StackError("kafka: the broker refused ACLs: " + "; ".join(failures))
    return sent


# -- SCRAM users on a running broker -------------------------------------------------------------


async def sync_scram_users(
    bootstrap: str, options: Mapping[str, Any], passwords: Mapping[str, str]
) -> list[str]:
    """Upsert the SCRAM-SHA-512 credential of every user in ``passwords`` on a running broker.

    ``format --add-scram`` only works on the first start; users added to the settings later
    (a new agent principal), or whose password file was replaced (rotation), are written
    here with AlterUserScramCredentials, in the salted form. Returns the users that had no
    credential before (found with DescribeUserScramCredentials).
    """
    from aiokafka.admin import AIOKafkaAdminClient
    from arcbeat.deploy.scram_protocol import (
        SCRAM_SHA_512,
        AlterUserScramCredentialsRequest,
        DescribeUserScramCredentialsRequest,
    )
    from arcbeat.deploy.topics import close_quietly

    users = sorted(passwords)
    if not users:
        return []
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="arcbeat-scram", **dict(options)
    )
    try:
        await admin.start()
        described = await admin._send_request(DescribeUserScramCredentialsRequest(users))
        known = {
            r["user"]
            for r in described.to_object()["results"]
            if int(r["error_code"]) == 0 and r["credential_infos"]
        }
        upserts = []
        for user in users:
            salt = secrets.token_bytes(16)
            salted = salted_password(passwords[user], salt)
            upserts.append((user, SCRAM_SHA_512, SCRAM_ITERATIONS, salt, salted))
        response = await admin._send_request(AlterUserScramCredentialsRequest(upserts))
    except Exception as exc:
        raise StackError(f"kafka: syncing SCRAM users on {bootstrap} failed: {exc!r}") from exc
    finally:
        await close_quietly(admin)
    failures = [
        f"{r['user_name']}: {r['error_message'] or 'error ' + str(r['error_code'])}"
        for r in response.to_object()["results"]
        if int(r["error_code"])
    ]
    if failures:
        raise StackError("kafka: the broker refused SCRAM credentials: " + "; ".join(failures))
    return [u for u in users if u not in known]


async def grant_principals(
    bootstrap: str, options: Mapping[str, Any], settings: Settings, folder: Path
) -> tuple[list[str], int]:
    """Bring a running broker in line with the password files in ``folder``: every arcbeat
    user's SCRAM credential (upserted: a new user is added, a replaced file rotates it) and
    every principal's ACLs. Returns (users that were new, ACLs sent)."""
    users = [u for u in users_of(settings) if u != ADMIN_USER]
    passwords = ensure_passwords(folder, users)
    added = await sync_scram_users(bootstrap, options, passwords)
    return added, await create_acls(bootstrap, options, acl_bindings(settings))
