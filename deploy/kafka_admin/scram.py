"""SCRAM-SHA-512 users of a deployment: their passwords, the salted form, upserts on a broker.

A password is only ever read from a private file and sent in the salted form (RFC 5802's
SaltedPassword): it never appears on a command line, in a log or on the wire.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka.admin import AIOKafkaAdminClient

from arcbeat.deploy.kafka_admin.client import close_quietly
from arcbeat.deploy.kafka_admin.errors import KafkaAdminError
from arcbeat.deploy.kafka_admin.scram_protocol import (
    SCRAM_SHA_512,
    AlterUserScramCredentialsRequest,
    DescribeUserScramCredentialsRequest,
)

if TYPE_CHECKING:
    from arcbeat.deploy.settings import Settings

ADMIN_USER = "admin"
SCRAM_ITERATIONS = 8192


def users_of(settings: Settings) -> list[str]:
    """Every SCRAM user of a deployment, admin first, without duplicates."""
    names = [
        ADMIN_USER,
        settings.stack.kafka_worker_user,
        settings.stack.kafka_history_user,
        *settings.stack.kafka_agent_users,
    ]
    return list(dict.fromkeys(n for n in names if n))


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only (folder 0700, file 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def ensure_passwords(folder: Path, users: Iterable[str]) -> dict[str, str]:
    """A random password per user in ``folder`` (``<user>.password``), created once and kept
    (the broker keeps only its salted hash)."""
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
    """``kafka-storage format --add-scram`` value in the salted form (the password itself
    never leaves Python)."""
    salt = salt or secrets.token_bytes(16)
    salted = salted_password(password, salt)
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-512=[name={user},iterations={SCRAM_ITERATIONS},"
        f'salt="{b64(salt).decode()}",saltedpassword="{b64(salted).decode()}"]'
    )


async def sync_scram_users(
    bootstrap: str, options: Mapping[str, Any], passwords: Mapping[str, str]
) -> list[str]:
    """Upsert the SCRAM-SHA-512 credential of every user in ``passwords`` on a running broker.

    ``format --add-scram`` only works on the first start; users added to the settings later
    (a new agent principal), or whose password file was replaced (rotation), are written
    here with AlterUserScramCredentials, in the salted form. Returns the users that had no
    credential before (found with DescribeUserScramCredentials).
    """
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
        raise KafkaAdminError(f"kafka: syncing SCRAM users on {bootstrap} failed: {exc!r}") from exc
    finally:
        await close_quietly(admin)
    failures = [
        f"{r['user_name']}: {r['error_message'] or 'error ' + str(r['error_code'])}"
        for r in response.to_object()["results"]
        if int(r["error_code"])
    ]
    if failures:
        raise KafkaAdminError("kafka: the broker refused SCRAM credentials: " + "; ".join(failures))
    return [u for u in users if u not in known]
