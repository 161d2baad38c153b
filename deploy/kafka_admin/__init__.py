"""Kafka administration of a deployment: its topics, SCRAM users and ACLs.

Needed in production (a worker declares its topics when it starts, ``arcbeat topics`` creates
a deployment's topics and grants its principals) as well as by the local stack, so it depends
on neither: nothing here imports the local stack manager or the worker.

- :mod:`.topics`: the deployment's topics, created idempotently and checked (partitions,
  replication);
- :mod:`.scram`: SCRAM-SHA-512 users (passwords, the salted form, upserts on a running broker);
- :mod:`.acls`: least-privilege ACLs of arcbeat's principals, and bringing a broker in line
  with both;
- :mod:`.client`: the admin client's helpers; :mod:`.scram_protocol`: wire schemas aiokafka
  lacks;
- :class:`KafkaAdminError`: what every function here raises when Kafka cannot do what was
  asked.
"""

from __future__ import annotations

from arcbeat.deploy.kafka_admin.errors import KafkaAdminError

__all__ = ["KafkaAdminError"]
