"""``arcbeat topics``: create the deployment's topics; with ``--acls``, also its principals."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from arcbeat.deploy.aio import run_sync
from arcbeat.deploy.kafka_admin import KafkaAdminError
from arcbeat.deploy.kafka_admin.acls import grant_principals
from arcbeat.deploy.kafka_admin.scram import ADMIN_USER, users_of
from arcbeat.deploy.kafka_admin.topics import Replication, ensure_topics_async
from arcbeat.deploy.settings import Settings
from arcbeat.streams.kafka.client import client_options
from arcbeat.streams.settings import SettingsError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "topics",
        help="create the topics of the configured prefix (idempotent); --acls: also the "
        "SCRAM users and ACLs",
        description=(
            "Create <prefix>.heartbeats, .status, .heartbeats.dlq, .fleet and the compacted "
            "one-partition .maintenance on the Kafka of ARCBEAT_KAFKA_BOOTSTRAP, with "
            "ARCBEAT_PARTITIONS partitions and the replication of ARCBEAT_REPLICATION_FACTOR "
            "and ARCBEAT_MIN_INSYNC_REPLICAS. Existing topics are checked, never changed: "
            "another partition count or too few copies is an error naming the topic and the "
            "fix. Runs with the client settings (ARCBEAT_KAFKA_*): on a secured broker, as an "
            "admin. docker-compose's one-shot `topics` service runs it."
        ),
    )
    p.add_argument(
        "--acls",
        action="store_true",
        help="as admin on a SASL_SSL broker: also upsert the SCRAM users whose password "
        "files (<user>.password) sit next to ARCBEAT_KAFKA_PASSWORD_FILE, and grant every "
        "arcbeat principal its ACLs",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.load()
        options = client_options(settings.kafka)
        outcome = run_sync(
            lambda: ensure_topics_async(
                settings.kafka.bootstrap,
                settings.kafka.topic_prefix,
                settings.kafka.partitions,
                options=options,
                replication=Replication.of(settings),
                warn=lambda m: print(f"arcbeat topics: warning: {m}", file=sys.stderr),
            )
        )
        if args.acls:
            added = _grant(settings, options)
    except (KafkaAdminError, SettingsError) as exc:
        print(f"arcbeat topics: error: {exc}", file=sys.stderr)
        return 1
    for name, what in outcome.items():
        print(f"{name}: {what}")
    if args.acls:
        print(f"SCRAM users added: {', '.join(added) or 'none'}; ACLs granted")
    return 0


def _grant(settings: Settings, options: Mapping[str, Any]) -> list[str]:
    """Upsert the SCRAM users whose password files sit next to ``kafka_password_file``
    (compose's secrets volume), then grant every arcbeat principal its ACLs. Returns the
    users that were new."""
    folder = Path(settings.kafka.password_file).parent
    users = [u for u in users_of(settings) if u != ADMIN_USER]
    missing = [u for u in users if not (folder / f"{u}.password").is_file()]
    if missing:
        raise KafkaAdminError(
            f"topics --acls: no password file for {', '.join(missing)} in {folder}; run "
            "`python -m arcbeat.deploy.compose_secrets` with the same ARCBEAT_KAFKA_AGENT_USERS"
        )
    bootstrap = settings.kafka.bootstrap
    added, _ = run_sync(lambda: grant_principals(bootstrap, options, settings, folder))
    return added
