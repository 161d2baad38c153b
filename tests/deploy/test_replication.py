"""Replication of arcbeat's topics and the local stack's Kafka layout, without services.

- Settings ``replication_factor`` / ``min_insync_replicas`` (0 = auto) and how auto resolves
  on clusters of 1, 2, 3 and more brokers.
- Existing topics with another partition count or replication factor: one error naming
  every such topic, what is wrong and how to fix it; warnings for weak replication on a
  multi-broker cluster.
- The cluster id of a new local Kafka never starts with ``-`` and is passed as
  ``--cluster-id=<id>``, so the storage tool can never read it as an option.
- ``stack up --brokers N``: ports, per-broker configuration, the layout a state folder keeps.
- Every producer of heartbeats (agent, simulator) asks for ``acks=all``.
"""

from __future__ import annotations

import argparse
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from arcbeat.deploy.commands import stack as stack_command
from arcbeat.deploy.commands.stack import format_status
from arcbeat.deploy.kafka_admin import KafkaAdminError
from arcbeat.deploy.kafka_admin.topics import (
    Replication,
    TopicSpec,
    check_existing,
    replication_warnings,
    topic_specs,
)
from arcbeat.deploy.services import (
    MAX_BROKERS,
    Kafka,
    StatePaths,
    broker_ports,
    cluster_bootstrap,
    new_cluster_id,
    package_dir,
    recorded_brokers,
    render_template,
    set_properties,
)
from arcbeat.deploy.settings import Settings
from arcbeat.deploy.stack import Stack, StackError
from arcbeat.deploy.worker import internal_specs
from arcbeat.streams.settings import SettingsError

BOOT = "127.0.0.1:9092"


# -- settings ---------------------------------------------------------------------------------


def test_replication_settings_default_to_auto_and_load_from_the_environment() -> None:
    s = Settings()
    assert (s.kafka.replication_factor, s.kafka.min_insync_replicas) == (0, 0)
    s = Settings.load(
        env={"ARCBEAT_REPLICATION_FACTOR": "3", "ARCBEAT_MIN_INSYNC_REPLICAS": "2"},
        toml_path="/nonexistent.toml",
    )
    assert Replication.of(s) == Replication(3, 2)


@pytest.mark.parametrize(
    ("env", "match"),
    [
        (
            {"ARCBEAT_REPLICATION_FACTOR": "-1"},
            r"replication_factor \(ARCBEAT_REPLICATION_FACTOR\)",
        ),
        ({"ARCBEAT_MIN_INSYNC_REPLICAS": "40000"}, r"min_insync_replicas .*1-32767"),
        ({"ARCBEAT_REPLICATION_FACTOR": "three"}, r"replication_factor .*bad value 'three'"),
        (
            {"ARCBEAT_REPLICATION_FACTOR": "2", "ARCBEAT_MIN_INSYNC_REPLICAS": "3"},
            r"min_insync_replicas .*3 is more than replication_factor \(2\).*at most 2",
        ),
    ],
)
def test_bad_replication_settings_are_refused(env: dict[str, str], match: str) -> None:
    with pytest.raises(SettingsError, match=match):
        Settings.load(env=env, toml_path="/nonexistent.toml")


@pytest.mark.parametrize(
    ("setting", "brokers", "want"),
    [
        ((0, 0), 1, (1, 1)),  # the single local broker
        ((0, 0), 2, (2, 1)),
        ((0, 0), 3, (3, 2)),
        ((0, 0), 6, (3, 2)),
        ((2, 0), 6, (2, 1)),
        ((3, 0), 1, (3, 2)),  # creation then fails, naming the brokers up
        ((0, 1), 3, (3, 1)),
        ((5, 3), 5, (5, 3)),
    ],
)
def test_auto_replication_is_right_for_the_cluster(
    setting: tuple[int, int], brokers: int, want: tuple[int, int]
) -> None:
    assert Replication(*setting).resolve(brokers, BOOT) == want


def test_explicit_min_insync_above_auto_copies_is_an_error() -> None:
    with pytest.raises(KafkaAdminError, match=r"min.insync.replicas 2 .*auto: 1 with 1 broker"):
        Replication(0, 2).resolve(1, BOOT)


# -- existing topics ---------------------------------------------------------------------------


def _specs(partitions: int = 12) -> list[TopicSpec]:
    settings = Settings().replace(partitions=partitions)
    return topic_specs("p", partitions) + internal_specs(settings)


def test_matching_topics_pass() -> None:
    specs = _specs()
    present = {s.name: (s.partitions, 3) for s in specs}
    check_existing(specs, present, Replication(), 3, 3, BOOT)
    check_existing(specs, present, Replication(3), 3, 3, BOOT)
    # auto: more copies than auto wants now (a broker is down) is fine
    check_existing(specs, present, Replication(), 2, 2, BOOT)


def test_another_partition_count_names_the_topics_and_the_fix() -> None:
    specs = _specs()
    present = {s.name: (s.partitions, 1) for s in specs}
    present["p.status"] = (6, 1)
    present["p.fleet"] = (6, 1)
    present["arcbeat-scopes"] = (3, 1)
    present["p.maintenance"] = (12, 1)
    with pytest.raises(KafkaAdminError) as err:
        check_existing(specs, present, Replication(), 1, 1, BOOT)
    text = str(err.value)
    assert text.startswith(f"topics: existing topics on Kafka at {BOOT} do not match")
    assert (
        "p.status, p.fleet have 6 partition(s), arcbeat needs 12 (setting partitions, "
        "ARCBEAT_PARTITIONS). Fix: set ARCBEAT_PARTITIONS=6" in text
    )
    assert (
        "arcbeat-scopes has 3 partition(s), arcbeat needs 1. Fix: use another ARCBEAT_APP_ID"
        in (text)
    )
    assert (
        "p.maintenance has 12 partition(s), arcbeat needs 1. Fix: delete it and run "
        "`arcbeat topics`" in text
    )
    assert "p.heartbeats" not in text


def test_another_replication_factor_is_an_error() -> None:
    specs = _specs()
    present = {s.name: (s.partitions, 1) for s in specs}
    with pytest.raises(KafkaAdminError) as err:  # auto wants 3 on a 3-broker cluster
        check_existing(specs, present, Replication(), 3, 3, BOOT)
    text = str(err.value)
    assert "p.heartbeats, p.status" in text and "arcbeat-checkpoints, arcbeat-scopes" in text
    assert "have replication factor 1, arcbeat needs 3 (ARCBEAT_REPLICATION_FACTOR=0, auto: 3" in (
        text
    )
    assert "kafka-reassign-partitions.sh, or set ARCBEAT_REPLICATION_FACTOR=1" in text
    present = {s.name: (s.partitions, 3) for s in specs}
    with pytest.raises(
        KafkaAdminError, match=r"have replication factor 3, arcbeat needs 2 \(ARCBEAT_"
    ):
        check_existing(specs, present, Replication(2), 2, 3, BOOT)


def test_weak_replication_on_a_cluster_is_a_warning() -> None:
    own = ["p.heartbeats", "p.status"]
    shapes = {"p.heartbeats": (12, 1), "p.status": (12, 3), "__consumer_offsets": (50, 3)}
    # one broker: nothing to warn about
    assert replication_warnings(shapes, {"p.heartbeats": 1, "p.status": 1}, 1, 1, own, BOOT) == []
    lines = replication_warnings(
        shapes, {"p.heartbeats": 1, "p.status": 2, "__consumer_offsets": 2}, 3, 2, own, BOOT
    )
    assert len(lines) == 2, lines
    assert lines[0].startswith("topic p.heartbeats on Kafka at 127.0.0.1:9092 has min.insync")
    assert "arcbeat wants 2 (ARCBEAT_MIN_INSYNC_REPLICAS)" in lines[0]
    assert lines[1].startswith(f"Kafka at {BOOT} has 3 brokers, but p.heartbeats has 1 copy")
    assert "recommended: 3 copies, 2 in sync" in lines[1]
    assert "p.status" not in lines[1] and "__consumer_offsets" not in lines[1]
    # Kafka's own topics: the fix names the broker settings
    lines = replication_warnings({"__transaction_state": (50, 1)}, {}, 3, 2, own, BOOT)
    assert len(lines) == 1 and "transaction.state.log.replication.factor" in lines[0]
    # more in sync than copies: every acks=all write fails
    lines = replication_warnings({"p.status": (12, 2)}, {"p.status": 3}, 1, 1, own, BOOT)
    assert lines and "every acks=all write to it fails" in lines[0]


# -- the cluster id ---------------------------------------------------------------------------


def test_cluster_ids_never_start_with_a_dash() -> None:
    seen = set()
    for _ in range(100_000):  # ~1,500 raw ids start with "-" (1 in 64)
        cid = new_cluster_id()
        assert not cid.startswith("-"), cid
        assert len(cid) == 22
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16
        seen.add(cid)
    assert len(seen) == 100_000


def test_a_dash_or_a_reserved_id_is_drawn_again() -> None:
    draws: Iterator[bytes] = iter(
        [b"\xf8" + bytes(15), bytes(16), bytes(15) + b"\x01", b"\x01" * 16]
    )
    assert base64.urlsafe_b64encode(b"\xf8" + bytes(15)).startswith(b"-")
    assert new_cluster_id(lambda n: next(draws)) == "AQEBAQEBAQEBAQEBAQEBAQ"


def test_the_cluster_id_is_one_argument_of_the_format_command(tmp_path: Path) -> None:
    settings = Settings().replace(state_dir=str(tmp_path))
    single = Kafka(settings, StatePaths(tmp_path))
    argv = single.format_argv("-Zq1aKs9Rq2Ey0D9M3y5Hw")
    assert "--cluster-id=-Zq1aKs9Rq2Ey0D9M3y5Hw" in argv
    assert "-t" not in argv and "--cluster-id" not in argv
    assert "--standalone" in argv  # one node: a standalone controller
    node = Kafka(settings, StatePaths(tmp_path), 2, 3)
    argv = node.format_argv("abc")
    assert "--standalone" not in argv and "--cluster-id=abc" in argv  # static voters
    assert str(node.server_properties) in argv


# -- the layout of a multi-broker stack -------------------------------------------------------


def test_broker_ports() -> None:
    s = Settings()
    assert broker_ports(s, 1) == [(9092, 19093)]
    assert broker_ports(s, 3) == [(9092, 19093), (9192, 19094), (9292, 19095)]
    assert cluster_bootstrap(s, 3) == "127.0.0.1:9092,127.0.0.1:9192,127.0.0.1:9292"
    listed = s.replace(kafka_bootstrap="127.0.0.1:1001,localhost:1002,127.0.0.1:1003")
    assert [c for c, _ in broker_ports(listed, 3)] == [1001, 1002, 1003]
    assert broker_ports(listed, 1) == [(1001, 19093)]
    with pytest.raises(StackError, match=r"lists 2 addresses .* for a local Kafka of 3 brokers"):
        broker_ports(s.replace(kafka_bootstrap="127.0.0.1:1,127.0.0.1:2"), 3)
    with pytest.raises(StackError, match=r"kafka_bootstrap .*loopback"):
        broker_ports(s.replace(kafka_bootstrap="kafka.example.com:9092"), 3)
    with pytest.raises(StackError, match=r"would listen on port 65592"):
        broker_ports(s.replace(kafka_bootstrap="127.0.0.1:65392"), 3)
    for bad in (0, MAX_BROKERS + 1):
        with pytest.raises(StackError, match=r"--brokers must be 1 .* got"):
            broker_ports(s, bad)


def test_set_properties_changes_in_place_drops_and_appends() -> None:
    text = "# a comment a=b\na=1\nb = 2\n\nc=3\n"
    out = set_properties(text, {"a": "9", "b": None, "d": "4"}, "# more")
    assert out == "# a comment a=b\na=9\n\nc=3\n\n# more\nd=4\n"


def test_cluster_node_configuration(tmp_path: Path) -> None:
    settings = Settings().replace(state_dir=str(tmp_path))
    node = Kafka(settings, StatePaths(tmp_path), 2, 3)
    assert node.name == "kafka-2" and node.ports == [9192, 19094]
    assert node.data_dir == tmp_path / "kafka-2" / "data"
    assert node.server_properties == tmp_path / "conf" / "kafka-2" / "server.properties"
    text = render_template(
        package_dir() / "kafka" / "server.properties",
        kafka_port=9192,
        controller_port=19094,
        data_dir=node.data_dir,
    )
    props = _props(set_properties(text, node.cluster_properties(), "# cluster"))
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:19093,2@127.0.0.1:19094,3@127.0.0.1:19095"
    )
    assert "controller.quorum.bootstrap.servers" not in props
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9192,CONTROLLER://127.0.0.1:19094"
    for key in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "share.coordinator.state.topic.replication.factor",
    ):
        assert props[key] == "3", key
    for key in (
        "min.insync.replicas",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "2", key
    # the single broker keeps its own folders and a standalone controller
    single = Kafka(settings, StatePaths(tmp_path))
    assert single.name == "kafka" and single.data_dir == tmp_path / "kafka" / "data"
    assert single.server_properties == tmp_path / "conf" / "kafka" / "server.properties"
    props = _props(text)
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19094"
    assert props["offsets.topic.replication.factor"] == "1"


def _props(text: str) -> dict[str, str]:
    return {
        k.strip(): v.strip()
        for k, _, v in (
            line.partition("=") for line in text.splitlines() if "=" in line and line[0] != "#"
        )
    }


def test_a_state_folder_keeps_its_broker_count(tmp_path: Path) -> None:
    settings = Settings().replace(state_dir=str(tmp_path))
    assert recorded_brokers(StatePaths(tmp_path)) is None
    assert [s.name for s in Stack(settings).services][:2] == ["kafka", "prometheus"]
    three = Stack(settings, brokers=3)
    assert [s.name for s in three.services] == [
        "kafka-1", "kafka-2", "kafka-3", "prometheus", "alertmanager", "influxdb",
    ]  # fmt: skip
    assert three.bootstrap == "127.0.0.1:9092,127.0.0.1:9192,127.0.0.1:9292"
    (tmp_path / "kafka-cluster.json").write_text(json.dumps({"brokers": 3, "cluster_id": "x"}))
    assert Stack(settings).brokers == 3  # status and down find every broker
    assert [s.name for s in Stack(settings, only=("kafka-2",)).services] == ["kafka-2"]
    with pytest.raises(StackError, match=r"formatted with 3 broker\(s\), not 1.*kafka-cluster"):
        Stack(settings, brokers=1)
    with pytest.raises(StackError, match=r"no service\(s\) \['kafka'\]; this stack has"):
        Stack(settings, only=("kafka",))
    (tmp_path / "kafka-cluster.json").write_text("{")
    with pytest.raises(StackError, match=r"kafka-cluster.json is unreadable"):
        Stack(settings)
    legacy = tmp_path / "legacy"
    (legacy / "kafka" / "data").mkdir(parents=True)
    (legacy / "kafka" / "data" / "meta.properties").write_text("node.id=1\n")
    old = settings.replace(state_dir=str(legacy))
    assert Stack(old).brokers == 1
    with pytest.raises(StackError, match=r"formatted with 1 broker\(s\), not 3.*kafka/\)"):
        Stack(old, brokers=3)


def test_sasl_ssl_runs_one_broker_only(tmp_path: Path) -> None:
    settings = Settings().replace(state_dir=str(tmp_path), kafka_security="sasl_ssl")
    with pytest.raises(StackError, match=r"sasl_ssl runs a single broker only"):
        Stack(settings, brokers=3).up()


def test_status_and_down_of_a_stopped_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "kafka-cluster.json").write_text(json.dumps({"brokers": 3, "cluster_id": "x"}))
    parser = argparse.ArgumentParser(prog="arcbeat")
    stack_command.register(parser.add_subparsers(dest="command", required=True))
    monkeypatch.setenv("ARCBEAT_STATE_DIR", str(state))
    monkeypatch.setenv("ARCBEAT_CONFIG", str(tmp_path / "none.toml"))
    args = parser.parse_args(["stack", "status", "--json"])
    assert args.func(args) == 1
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert list(report)[:3] == ["kafka-1", "kafka-2", "kafka-3"]
    assert report["kafka-2"]["address"] == "127.0.0.1:9192"
    args = parser.parse_args(["stack", "down"])
    assert args.func(args) == 0
    assert capsys.readouterr().out.count("not running") == 6
    args = parser.parse_args(["stack", "up", "--brokers", "2"])
    assert args.func(args) == 1
    assert "formatted with 3 broker(s), not 2" in capsys.readouterr().err
    statuses = Stack(Settings().replace(state_dir=str(state))).status()
    table = format_status(statuses, state)
    assert "kafka-3" in table and "kafka:" not in table  # no broker answered: no partition line


# -- producers --------------------------------------------------------------------------------


class _Refused(Exception):
    pass


class _FakeProducer:
    made: list[dict[str, Any]] = []

    def __init__(self, **kwargs: Any) -> None:
        _FakeProducer.made.append(kwargs)

    async def start(self) -> None:
        raise _Refused("no broker in this test")

    async def stop(self) -> None:
        pass


async def test_agents_and_simulator_produce_with_acks_all(monkeypatch: pytest.MonkeyPatch) -> None:
    from arcbeat.deploy.agents import producer
    from arcbeat_agent.config import AgentConfig
    from arcbeat_agent.kafka import producer_options

    _FakeProducer.made = []
    monkeypatch.setattr(producer, "AIOKafkaProducer", _FakeProducer)
    settings = Settings()
    producer.make_producer(settings)
    producer.make_producer(settings, linger_ms=20, enable_idempotence=False)  # load mode
    _FakeProducer.made.append(producer_options(AgentConfig(None)))  # the machine agent
    assert [m["acks"] for m in _FakeProducer.made] == ["all", "all", "all"]
    assert _FakeProducer.made[0]["enable_idempotence"] is True
    assert _FakeProducer.made[2]["enable_idempotence"] is True


def test_scope_board_records_may_be_as_large_as_a_producer_request() -> None:
    """A partition's early-warning sample is one scope-board record that grows with the
    (subscription, location) parts it holds: the topic takes what a producer may send."""
    settings = Settings()
    specs = {spec.name: spec for spec in internal_specs(settings)}
    assert specs[settings.topics.scopes].configs["max.message.bytes"] == str(8 * 1024 * 1024)
