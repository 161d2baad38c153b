"""Least-privilege ACLs of a deployment's principals, and bringing a running broker in line.

Kafka's ``StandardAuthorizer`` denies everything no ACL allows; :func:`acl_bindings` gives
each arcbeat principal the least it needs (agents: write their heartbeats topic, nothing
else).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import CreateAclsRequest

from arcbeat.deploy.kafka_admin.client import close_quietly
from arcbeat.deploy.kafka_admin.errors import KafkaAdminError
from arcbeat.deploy.kafka_admin.scram import (
    ADMIN_USER,
    ensure_passwords,
    sync_scram_users,
    users_of,
)
from arcbeat.streams.topics import Topics

if TYPE_CHECKING:
    from arcbeat.deploy.settings import Settings

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
    pre = settings.kafka.topic_prefix if prefix is None else prefix
    names = Topics.of(pre, settings.kafka.app_id)
    heartbeats = names.heartbeats
    out: list[AclBinding] = []
    for agent in settings.stack.kafka_agent_users:
        user = f"User:{agent}"
        out += [
            AclBinding(user, "topic", heartbeats, "literal", op) for op in ("write", "describe")
        ]
        # idempotent producers (acks=all, enable_idempotence) need no cluster ACL since
        # Kafka 2.8 (WRITE on a topic implies IDEMPOTENT_WRITE)
    worker = f"User:{settings.stack.kafka_worker_user}"
    app = settings.kafka.app_id
    for op in ("read", "write", "describe", "describe_configs"):
        out.append(AclBinding(worker, "topic", f"{pre}.", "prefixed", op))
    # topics named after the app id: the worker's checkpoints and scope state, Faust's own
    for op in ("read", "write", "describe", "describe_configs", "create", "alter_configs"):
        out.append(AclBinding(worker, "topic", app, "prefixed", op))
    out += [AclBinding(worker, "group", app, "prefixed", op) for op in ("read", "describe")]
    out += [
        AclBinding(worker, "transactional_id", app, "prefixed", op) for op in ("write", "describe")
    ]
    out.append(AclBinding(worker, "cluster", "kafka-cluster", "literal", "describe"))
    history = f"User:{settings.stack.kafka_history_user}"
    # the maintenance windows are read without a consumer group, from the beginning
    for topic in (names.status, names.fleet, names.maintenance):
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
        raise KafkaAdminError(f"kafka: creating ACLs on {bootstrap} failed: {exc!r}") from exc
    finally:
        await close_quietly(admin)
    if failures:
        raise KafkaAdminError("kafka: the broker refused ACLs: " + "; ".join(failures))
    return sent


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
