"""The Kafka topics of one arcbeat deployment, created idempotently with aiokafka's admin client.

Topics (``prefix`` = ``settings.topic_prefix``):

- ``<prefix>.heartbeats``: agent heartbeats. ``message.timestamp.type=LogAppendTime`` so the
  record timestamp is the broker's arrival time (agents' clocks cannot move deadlines), and a
  ``max.message.bytes`` well above the worker's own limit so an oversized heartbeat reaches the
  worker, which rejects it to the DLQ with a reason instead of the producer failing silently.
- ``<prefix>.status``: StatusChanged / scope events.
- ``<prefix>.heartbeats.dlq``: rejected heartbeats with the reason.
- ``<prefix>.fleet``: per-partition fleet snapshots and window counts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from arcbeat.deploy.errors import StackError

if TYPE_CHECKING:
    from arcbeat.streams.settings import Settings

HEARTBEAT_TOPIC_MAX_BYTES = 2 * 1024 * 1024
# A DLQ record carries the rejected payload plus the reason, so it gets a little more room.
# a rejected message is kept whole, base64-encoded when not UTF-8 (4/3 of its size)
DLQ_TOPIC_MAX_BYTES = 2 * HEARTBEAT_TOPIC_MAX_BYTES
_TOPIC_ALREADY_EXISTS = 36
_AUTHORIZATION_FAILED = (29, 31)  # TOPIC_, CLUSTER_AUTHORIZATION_FAILED

T = TypeVar("T")


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


def topic_specs(prefix: str, partitions: int) -> list[TopicSpec]:
    """The topics of a deployment with topic prefix ``prefix``."""
    if partitions < 1:
        raise StackError(f"topics: partitions must be >= 1, got {partitions}")
    return [
        TopicSpec(
            f"{prefix}.heartbeats",
            partitions,
            {
                "message.timestamp.type": "LogAppendTime",
                "max.message.bytes": str(HEARTBEAT_TOPIC_MAX_BYTES),
            },
        ),
        TopicSpec(f"{prefix}.status", partitions),
        TopicSpec(
            f"{prefix}.heartbeats.dlq",
            partitions,
            {"max.message.bytes": str(DLQ_TOPIC_MAX_BYTES)},
        ),
        TopicSpec(f"{prefix}.fleet", partitions),
    ]


async def ensure_topics_async(
    bootstrap: str,
    prefix: str,
    partitions: int,
    *,
    timeout: float = 30.0,
    options: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Create the deployment's topics; existing topics are left as they are.

    ``options``: TLS/SASL keyword arguments (``arcbeat.streams.kafka_client.client_options``).
    Returns ``{topic: "created" | "exists"}``. Raises :class:`StackError` when the broker
    cannot be reached or refuses a topic.
    """
    return await ensure_specs_async(
        bootstrap, topic_specs(prefix, partitions), timeout=timeout, options=options
    )


async def ensure_specs_async(
    bootstrap: str,
    specs: Sequence[TopicSpec],
    *,
    timeout: float = 30.0,
    options: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Create the topics of ``specs`` that do not exist yet.

    Existing topics are found first with a metadata request, so a principal that may only
    describe and use them (a worker on a secured broker, whose topics an admin created)
    never sends a CreateTopics it is not allowed to.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="arcbeat-topics",
        request_timeout_ms=int(timeout * 1000),
        **dict(options or {}),
    )
    names = [s.name for s in specs]
    try:
        await asyncio.wait_for(admin.start(), timeout)
        described = await admin.describe_topics(names)
        present = {str(t["topic"]) for t in described if int(t["error_code"]) == 0}
        missing = [s for s in specs if s.name not in present]
        outcome = {name: "exists" for name in names if name in present}
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(s.name, s.partitions, replication_factor=1, topic_configs=s.configs)
                    for s in missing
                ],
                timeout_ms=int(timeout * 1000),
            )
            outcome.update(_outcomes(response.to_object(), bootstrap))
    except StackError:
        raise
    except Exception as exc:
        raise StackError(
            f"topics: cannot create topics {names} on Kafka at {bootstrap}: "
            f"{exc!r}. Is the broker up? (`arcbeat stack status`)"
        ) from exc
    finally:
        await close_quietly(admin)
    return outcome


def _outcomes(obj: dict[str, Any], bootstrap: str) -> dict[str, str]:
    result: dict[str, str] = {}
    failures: list[str] = []
    denied: list[str] = []
    for entry in obj.get("topic_errors", []):
        name, code = str(entry["topic"]), int(entry["error_code"])
        if code == 0:
            result[name] = "created"
        elif code == _TOPIC_ALREADY_EXISTS:
            result[name] = "exists"
        elif code in _AUTHORIZATION_FAILED:
            denied.append(name)
        else:
            message = entry.get("error_message") or f"error code {code}"
            failures.append(f"{name}: {message}")
    if denied:
        raise StackError(
            f"topics: Kafka at {bootstrap} does not let this principal see or create "
            f"{', '.join(sorted(denied))} (authorization failed). Check kafka_username: an "
            "agent principal may only write heartbeats. The deployment's topics are created "
            "by an admin (`arcbeat stack up` on the local stack, which also grants arcbeat's "
            "users their ACLs, or `python -m arcbeat.deploy.topics` with admin credentials)"
        )
    if failures:
        raise StackError(f"topics: Kafka at {bootstrap} refused to create: {'; '.join(failures)}")
    return result


async def close_quietly(admin: AIOKafkaAdminClient) -> None:
    with contextlib.suppress(Exception):
        await admin.close()


def run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, even when called inside an event loop.

    Inside a running loop (e.g. an async test) the coroutine runs on a fresh loop in a helper
    thread, because ``asyncio.run`` refuses to nest.
    """

    async def wrapper() -> T:
        return await make()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wrapper())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, wrapper()).result()


def main() -> int:
    """``python -m arcbeat.deploy.topics [--acls]``: create the topics of the configured prefix.

    Used by docker-compose's one-shot ``topics`` service; settings come from ``ARCBEAT_*``.
    ``--acls`` (as admin, SASL_SSL): also upsert SCRAM users and grant arcbeat's ACLs.
    """
    from arcbeat.streams.kafka_client import client_options
    from arcbeat.streams.settings import Settings, SettingsError

    grant = "--acls" in sys.argv[1:]
    try:
        settings = Settings.load()
        options = client_options(settings)
        outcome = run_sync(
            lambda: ensure_topics_async(
                settings.kafka_bootstrap,
                settings.topic_prefix,
                settings.partitions,
                options=options,
            )
        )
        if grant:
            added = _grant(settings, options)
    except (StackError, SettingsError) as exc:
        print(f"arcbeat topics: error: {exc}", file=sys.stderr)
        return 1
    for name, what in outcome.items():
        print(f"{name}: {what}")
    if grant:
        print(f"SCRAM users added: {', '.join(added) or 'none'}; ACLs granted")
    return 0


def _grant(settings: Settings, options: Mapping[str, Any]) -> list[str]:
    """``--acls`` (run as admin on a secured broker): upsert the SCRAM users whose password
    files sit next to ``kafka_password_file`` (compose's secrets volume), then grant every
    arcbeat principal its ACLs. Returns the users that were new."""
    from pathlib import Path

    from arcbeat.deploy import kafka_security as ks

    folder = Path(settings.kafka_password_file).parent
    users = [u for u in ks.users_of(settings) if u != ks.ADMIN_USER]
    missing = [u for u in users if not (folder / f"{u}.password").is_file()]
    if missing:
        raise StackError(
            f"topics --acls: no password file for {', '.join(missing)} in {folder}; run "
            "`python -m arcbeat.deploy.compose_secrets` with the same ARCBEAT_KAFKA_AGENT_USERS"
        )
    bootstrap = settings.kafka_bootstrap
    added, _ = run_sync(lambda: ks.grant_principals(bootstrap, options, settings, folder))
    return added


if __name__ == "__main__":
    raise SystemExit(main())
