"""The error of Kafka administration."""

from __future__ import annotations


class KafkaAdminError(RuntimeError):
    """Kafka could not do what was asked (create or check topics, upsert SCRAM users, create
    ACLs); the message names the broker, the topics or principals, and the fix."""
