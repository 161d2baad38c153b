"""The Kafka topics of one arcbeat deployment, created idempotently with aiokafka's admin client.

Topics (``prefix`` = ``settings.kafka.topic_prefix``):

- ``<prefix>.heartbeats``: agent heartbeats. ``message.timestamp.type=LogAppendTime`` so the
  record timestamp is the broker's arrival time (agents' clocks cannot move deadlines), and a
  ``max.message.bytes`` well above the worker's own limit so an oversized heartbeat reaches the
  worker, which rejects it to the DLQ with a reason instead of the producer failing silently.
- ``<prefix>.status``: StatusChanged / scope events.
- ``<prefix>.heartbeats.dlq``: rejected heartbeats with the reason.
- ``<prefix>.fleet``: per-partition fleet snapshots and window counts.
- ``<prefix>.maintenance``: maintenance windows (key = window id), one partition read whole
  by every worker and by ``arcbeat history``; compacted, so it keeps the latest value of
  each window for as long as the deployment exists.

Replication (settings ``replication_factor`` and ``min_insync_replicas``, 0 = auto): every
topic arcbeat creates gets the same number of copies and the same ``min.insync.replicas``;
auto is 3 copies with 2 in sync, or every broker (1 in sync) on a cluster of fewer than 3
brokers, such as the single local broker. An existing topic is never changed: one with
another partition count or fewer copies than wanted is an error that names it, and a
multi-broker cluster whose topics keep fewer than 3 copies or 2 in sync gets a warning.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import for_code

from arcbeat.deploy.kafka_admin.client import close_quietly
from arcbeat.deploy.kafka_admin.errors import KafkaAdminError
from arcbeat.streams.topics import Topics

if TYPE_CHECKING:
    from arcbeat.streams.settings import Settings

HEARTBEAT_TOPIC_MAX_BYTES = 2 * 1024 * 1024
# A DLQ record carries the rejected payload plus the reason, so it gets a little more room.
# a rejected message is kept whole, base64-encoded when not UTF-8 (4/3 of its size)
DLQ_TOPIC_MAX_BYTES = 2 * HEARTBEAT_TOPIC_MAX_BYTES
_TOPIC_ALREADY_EXISTS = 36
_INVALID_REPLICATION_FACTOR = 38
_AUTHORIZATION_FAILED = (29, 31)  # TOPIC_, CLUSTER_AUTHORIZATION_FAILED
# what a topic on a multi-broker cluster should have: one broker may fail (or be stopped for
# maintenance) while acks=all writes still land on two copies
SAFE_REPLICATION_FACTOR = 3
SAFE_MIN_INSYNC = 2
MIN_INSYNC = "min.insync.replicas"
# Kafka's own topics that arcbeat relies on (consumer offsets; the worker's transactions)
KAFKA_INTERNAL_TOPICS = ("__consumer_offsets", "__transaction_state")

log = logging.getLogger(__name__)

Warn = Callable[[str], None]

# What to do about an existing topic whose partition count is not the one arcbeat needs,
# for topics whose count does not come from a setting.
RECREATE_WORKER_TOPIC = "use another ARCBEAT_APP_ID (the worker creates its topics anew)"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)
    # the setting the partition count comes from ("" = always this many)
    partitions_setting: str = "partitions"
    # the fix for another partition count when partitions_setting is ""
    recreate_hint: str = RECREATE_WORKER_TOPIC


@dataclass(frozen=True)
class Replication:
    """How many copies of each topic arcbeat creates, and how many of them must be in sync
    for an acks=all write (``min.insync.replicas``). 0 = auto, see :meth:`resolve`."""

    factor: int = 0
    min_insync: int = 0

    @classmethod
    def of(cls, settings: Settings) -> Replication:
        return cls(settings.kafka.replication_factor, settings.kafka.min_insync_replicas)

    def resolve(self, brokers: int, bootstrap: str) -> tuple[int, int]:
        """(replication factor, min.insync.replicas) on a cluster of ``brokers`` brokers.

        Auto: 3 copies, or every broker when there are fewer; 2 in sync when there are at
        least 3 copies, else 1.
        """
        factor = self.factor or max(1, min(SAFE_REPLICATION_FACTOR, brokers))
        min_insync = self.min_insync or (
            SAFE_MIN_INSYNC if factor >= SAFE_REPLICATION_FACTOR else 1
        )
        if min_insync > factor:
            raise KafkaAdminError(
                f"topics: min.insync.replicas {min_insync} (setting min_insync_replicas, "
                f"ARCBEAT_MIN_INSYNC_REPLICAS) is more than the replication factor {factor} "
                f"({self.describe_factor(factor, brokers)}) on Kafka at {bootstrap}: every "
                f"acks=all write would fail. Set ARCBEAT_MIN_INSYNC_REPLICAS to at most "
                f"{factor}, or 0 (auto)"
            )
        return factor, min_insync

    def describe_factor(self, factor: int, brokers: int) -> str:
        if self.factor:
            return f"ARCBEAT_REPLICATION_FACTOR={self.factor}"
        return f"ARCBEAT_REPLICATION_FACTOR=0, auto: {factor} with {brokers} broker(s) up"


# Compacted, keeping the latest value of each window. Windows change rarely, so a segment is
# rolled after 10 minutes (at the next write) and cleaned soon after: a worker start reads
# little more than the current windows. A tombstone (a deleted window) stays readable for a
# day, so a reader that was stopped for a while still sees the deletion.
MAINTENANCE_TOPIC_CONFIGS = {
    "cleanup.policy": "compact",
    "segment.ms": str(10 * 60 * 1000),
    "min.cleanable.dirty.ratio": "0.1",
    "delete.retention.ms": str(24 * 60 * 60 * 1000),
}


def topic_specs(prefix: str, partitions: int) -> list[TopicSpec]:
    """The topics of a deployment with topic prefix ``prefix``."""
    if partitions < 1:
        raise KafkaAdminError(f"topics: partitions must be >= 1, got {partitions}")
    names = Topics.of(prefix, "")  # the public topics only: the app id's are the worker's
    return [
        TopicSpec(
            names.heartbeats,
            partitions,
            {
                "message.timestamp.type": "LogAppendTime",
                "max.message.bytes": str(HEARTBEAT_TOPIC_MAX_BYTES),
            },
        ),
        TopicSpec(names.status, partitions),
        TopicSpec(
            names.dlq,
            partitions,
            {"max.message.bytes": str(DLQ_TOPIC_MAX_BYTES)},
        ),
        TopicSpec(names.fleet, partitions),
        TopicSpec(
            names.maintenance,
            1,
            dict(MAINTENANCE_TOPIC_CONFIGS),
            partitions_setting="",
            recreate_hint=(
                "delete it and run `arcbeat topics` (or `arcbeat stack up`), "
                "which creates it with 1 partition, then create its maintenance windows again"
            ),
        ),
    ]


async def ensure_topics_async(
    bootstrap: str,
    prefix: str,
    partitions: int,
    *,
    timeout: float = 30.0,
    options: Mapping[str, Any] | None = None,
    replication: Replication | None = None,
    warn: Warn | None = None,
) -> dict[str, str]:
    """Create the deployment's topics; existing topics are checked, never changed.

    ``options``: TLS/SASL keyword arguments (``arcbeat.streams.kafka.client.client_options``).
    Returns ``{topic: "created" | "exists"}``. Raises :class:`KafkaAdminError` when the broker
    cannot be reached, refuses a topic, or an existing topic does not match (see
    :func:`ensure_specs_async`).
    """
    return await ensure_specs_async(
        bootstrap,
        topic_specs(prefix, partitions),
        timeout=timeout,
        options=options,
        replication=replication,
        warn=warn,
    )


async def ensure_specs_async(
    bootstrap: str,
    specs: Sequence[TopicSpec],
    *,
    timeout: float = 30.0,
    options: Mapping[str, Any] | None = None,
    replication: Replication | None = None,
    warn: Warn | None = None,
) -> dict[str, str]:
    """Create the topics of ``specs`` that do not exist yet; check the ones that do.

    Existing topics are found first with a metadata request, so a principal that may only
    describe and use them (a worker on a secured broker, whose topics an admin created)
    never sends a CreateTopics it is not allowed to. An existing topic with another
    partition count, or with another replication factor (fewer copies than auto wants),
    raises :class:`KafkaAdminError` naming every such topic; nothing is changed. ``warn`` (default:
    a logged warning) hears of topics on a multi-broker cluster with fewer than 3 copies or
    ``min.insync.replicas`` below 2, and of existing topics with a lower
    ``min.insync.replicas`` than wanted.
    """
    rep = replication or Replication()
    say: Warn = warn or log.warning
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="arcbeat-topics",
        request_timeout_ms=int(timeout * 1000),
        **dict(options or {}),
    )
    names = [s.name for s in specs]
    try:
        await asyncio.wait_for(admin.start(), timeout)
        cluster = await admin.describe_cluster()
        brokers = len(cluster.get("brokers") or ())
        factor, min_insync = rep.resolve(brokers, bootstrap)
        described = await admin.describe_topics([*names, *KAFKA_INTERNAL_TOPICS])
        topics = {str(t["topic"]): t for t in described if int(t["error_code"]) == 0}
        present = {name: _shape(topics[name]) for name in names if name in topics}
        check_existing(specs, present, rep, factor, brokers, bootstrap)
        missing = [s for s in specs if s.name not in present]
        outcome = {name: "exists" for name in names if name in present}
        if missing:
            if factor > brokers:
                raise KafkaAdminError(
                    f"topics: cannot create {', '.join(s.name for s in missing)} with "
                    f"{factor} copies ({rep.describe_factor(factor, brokers)}): Kafka at "
                    f"{bootstrap} has {brokers} broker(s) up. Start the missing brokers, or "
                    f"set ARCBEAT_REPLICATION_FACTOR to at most {brokers} (0 = auto)"
                )
            response = await admin.create_topics(
                [
                    NewTopic(
                        s.name,
                        s.partitions,
                        replication_factor=factor,
                        topic_configs={MIN_INSYNC: str(min_insync), **s.configs},
                    )
                    for s in missing
                ],
                timeout_ms=int(timeout * 1000),
            )
            outcome.update(_outcomes(response.to_object(), bootstrap))
        existing = [n for n in (*names, *KAFKA_INTERNAL_TOPICS) if n in topics]
        in_sync = await _min_insync(admin, existing)
        for name in names:
            if outcome.get(name) == "created":
                present[name] = (specs[names.index(name)].partitions, factor)
                in_sync.setdefault(name, min_insync)
        for name in KAFKA_INTERNAL_TOPICS:
            if name in topics:
                present[name] = _shape(topics[name])
        for line in replication_warnings(present, in_sync, brokers, min_insync, names, bootstrap):
            say(line)
    except KafkaAdminError:
        raise
    except Exception as exc:
        raise KafkaAdminError(
            f"topics: cannot create topics {names} on Kafka at {bootstrap}: "
            f"{exc!r}. Is the broker up? (`arcbeat stack status`)"
        ) from exc
    finally:
        await close_quietly(admin)
    return outcome


def _shape(topic: Mapping[str, Any]) -> tuple[int, int]:
    """(partitions, replication factor) of a described topic; the factor is the fewest
    copies any of its partitions has."""
    parts = topic.get("partitions") or ()
    return len(parts), min((len(p["replicas"]) for p in parts), default=0)


def check_existing(
    specs: Iterable[TopicSpec],
    present: Mapping[str, tuple[int, int]],
    rep: Replication,
    factor: int,
    brokers: int,
    bootstrap: str,
) -> None:
    """Raise :class:`KafkaAdminError` naming every existing topic whose partition count differs
    from its spec, or whose replication factor differs from the explicit setting (auto:
    is lower than what auto wants now)."""
    # (what is wrong, how to fix it) -> topics
    problems: dict[tuple[str, str], list[str]] = {}
    for spec in specs:
        if spec.name not in present:
            continue
        partitions, copies = present[spec.name]
        if partitions != spec.partitions:
            if spec.partitions_setting:
                env = "ARCBEAT_" + spec.partitions_setting.upper()
                what = (
                    f"{partitions} partition(s), arcbeat needs {spec.partitions} "
                    f"(setting {spec.partitions_setting}, {env})"
                )
                fix = (
                    f"set {env}={partitions} if every topic of this deployment has "
                    f"{partitions}, or move to new topics (another ARCBEAT_TOPIC_PREFIX and "
                    "ARCBEAT_APP_ID)"
                )
            else:
                what = f"{partitions} partition(s), arcbeat needs {spec.partitions}"
                fix = spec.recreate_hint
            problems.setdefault((what, fix), []).append(spec.name)
        if copies != factor if rep.factor else copies < factor:
            what = (
                f"replication factor {copies}, arcbeat needs {factor} "
                f"({rep.describe_factor(factor, brokers)})"
            )
            fix = (
                "add copies with kafka-reassign-partitions.sh, or set "
                f"ARCBEAT_REPLICATION_FACTOR={copies} to use them as they are"
            )
            problems.setdefault((what, fix), []).append(spec.name)
    if problems:
        raise KafkaAdminError(
            f"topics: existing topics on Kafka at {bootstrap} do not match the settings "
            "(arcbeat never changes an existing topic's partitions or replication):"
            + "".join(
                f"\n  - {', '.join(names)} {'has' if len(names) == 1 else 'have'} {what}. "
                f"Fix: {fix}"
                for (what, fix), names in problems.items()
            )
        )


async def _min_insync(admin: AIOKafkaAdminClient, names: Sequence[str]) -> dict[str, int]:
    """The effective ``min.insync.replicas`` of ``names`` (topics this principal may not
    describe are left out)."""
    if not names:
        return {}
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n, {MIN_INSYNC: None}) for n in names]
        )
    except Exception as exc:  # e.g. no DescribeConfigs ACL: the check is advice only
        log.debug("topics: cannot read %s of %s: %r", MIN_INSYNC, names, exc)
        return {}
    out: dict[str, int] = {}
    for response in responses:
        for res in response.to_object().get("resources", []):
            if int(res["error_code"]) != 0:
                continue
            for entry in res["config_entries"]:
                if entry["config_names"] == MIN_INSYNC and entry["config_value"]:
                    out[str(res["resource_name"])] = int(entry["config_value"])
    return out


def replication_warnings(
    shapes: Mapping[str, tuple[int, int]],
    in_sync: Mapping[str, int],
    brokers: int,
    wanted_min_insync: int,
    own: Sequence[str],
    bootstrap: str,
) -> list[str]:
    """Warnings about the replication of ``shapes`` (topic -> (partitions, copies)).

    On a multi-broker cluster: topics with fewer than 3 copies or ``min.insync.replicas``
    below 2 (one broker failure can then lose acknowledged records or stop acks=all writes).
    Anywhere: an existing topic of ``own`` with a lower ``min.insync.replicas`` than wanted,
    or one higher than its copies (every acks=all write fails).
    """
    lines: list[str] = []
    weak: dict[tuple[int, int | None], list[str]] = {}
    for name, (_, copies) in shapes.items():
        isr = in_sync.get(name)
        if isr is not None and isr > copies:
            lines.append(
                f"topic {name} on Kafka at {bootstrap} has min.insync.replicas {isr} but only "
                f"{copies} copies: every acks=all write to it fails. Fix: kafka-configs.sh "
                f"--alter --entity-type topics --entity-name {name} --add-config "
                f"min.insync.replicas={copies}"
            )
        elif name in own and isr is not None and isr < wanted_min_insync:
            lines.append(
                f"topic {name} on Kafka at {bootstrap} has min.insync.replicas {isr}, arcbeat "
                f"wants {wanted_min_insync} (ARCBEAT_MIN_INSYNC_REPLICAS): an acknowledged write "
                f"may be on fewer copies. Fix: kafka-configs.sh --alter --entity-type topics "
                f"--entity-name {name} --add-config min.insync.replicas={wanted_min_insync}"
            )
        if brokers > 1 and (
            copies < SAFE_REPLICATION_FACTOR or (isr is not None and isr < SAFE_MIN_INSYNC)
        ):
            weak.setdefault((copies, isr), []).append(name)
    for (copies, isr), topics in sorted(weak.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        internal = [t for t in topics if t in KAFKA_INTERNAL_TOPICS]
        fix = (
            "set ARCBEAT_REPLICATION_FACTOR=3 and ARCBEAT_MIN_INSYNC_REPLICAS=2 (or 0, auto) "
            "before the topics are created; for existing topics add copies with "
            "kafka-reassign-partitions.sh and raise min.insync.replicas with kafka-configs.sh"
        )
        if internal:
            fix += (
                "; Kafka's own topics follow the brokers' offsets.topic.replication.factor, "
                "transaction.state.log.replication.factor and transaction.state.log.min.isr"
            )
        lines.append(
            f"Kafka at {bootstrap} has {brokers} brokers, but {', '.join(topics)} "
            f"{'has' if len(topics) == 1 else 'have'} {copies} "
            f"{'copy' if copies == 1 else 'copies'}"
            + (f" and min.insync.replicas {isr}" if isr is not None else "")
            + f" (recommended: {SAFE_REPLICATION_FACTOR} copies, {SAFE_MIN_INSYNC} in sync): "
            "one broker failure can lose acknowledged heartbeats, transitions or worker state, "
            f"or stop their writes. Fix: {fix}"
        )
    return lines


def _outcomes(obj: dict[str, Any], bootstrap: str) -> dict[str, str]:
    result: dict[str, str] = {}
    failures: list[str] = []
    denied: list[str] = []
    codes: list[int] = []  # of the failures
    for entry in obj.get("topic_errors", []):
        name, code = str(entry["topic"]), int(entry["error_code"])
        if code == 0:
            result[name] = "created"
        elif code == _TOPIC_ALREADY_EXISTS:
            result[name] = "exists"
        elif code in _AUTHORIZATION_FAILED:
            denied.append(name)
        else:
            codes.append(code)
            message = entry.get("error_message") or f"error code {code}"
            if code == _INVALID_REPLICATION_FACTOR:
                message += (
                    " (start the missing brokers, or lower ARCBEAT_REPLICATION_FACTOR; 0 = auto)"
                )
            failures.append(f"{name}: {message}")
    if denied:
        raise KafkaAdminError(
            f"topics: Kafka at {bootstrap} does not let this principal see or create "
            f"{', '.join(sorted(denied))} (authorization failed). Check kafka_username: an "
            "agent principal may only write heartbeats. The deployment's topics are created "
            "by an admin (`arcbeat stack up` on the local stack, which also grants arcbeat's "
            "users their ACLs, or `arcbeat topics --acls` with admin credentials)"
        )
    if failures:
        error = KafkaAdminError(
            f"topics: Kafka at {bootstrap} refused to create: {'; '.join(failures)}"
        )
        # e.g. NOT_CONTROLLER or REQUEST_TIMED_OUT while a dead broker is not fenced yet:
        # the cause tells a start-up retry (arcbeat.streams.kafka.startup) that it may pass
        transient = [c for c in codes if getattr(for_code(c), "retriable", False)]
        if transient and len(transient) == len(failures):
            raise error from for_code(transient[0])()
        raise error
    return result
