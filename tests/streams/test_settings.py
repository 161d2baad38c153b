"""Settings: flat names (ARCBEAT_*, arcbeat.toml keys, load/replace arguments) fill the typed
sections; each section checks its own values. Pure: reads temporary files only."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from arcbeat.deploy.settings import SETTINGS, Settings
from arcbeat.exporters.capacity.settings import CapacitySettings
from arcbeat.streams.settings import KafkaSettings, SettingsError, parse_duration
from arcbeat.streams.topics import Topics

NO_TOML = "/nonexistent/arcbeat.toml"


def test_environment_and_toml_fill_the_sections(tmp_path: Path) -> None:
    toml = tmp_path / "arcbeat.toml"
    toml.write_text(
        '[arcbeat]\nkafka_bootstrap = "b1:9092,b2:9092"\nregions = ["WestEurope", "northeurope"]\n'
        'disconnect_after = "15m"\ncapacity_source_url = "http://w:6066"\n',
        encoding="utf-8",
    )
    env = {
        "ARCBEAT_KAFKA_BOOTSTRAP": "env:9092",  # the environment wins over the file
        "ARCBEAT_PARTITIONS": "1_000",
        "ARCBEAT_INFLUX_API": "v2",
        "ARCBEAT_API_INSECURE": "yes",
        "ARCBEAT_CAPACITY_INTERVAL": "2m",
        "ARCBEAT_KAFKA_AGENT_USERS": "a1, A2",
    }
    s = Settings.load(env=env, toml_path=toml)
    assert s.kafka.bootstrap == "env:9092"
    assert s.kafka.partitions == 1000
    assert s.input.regions == ("westeurope", "northeurope")
    assert s.timing.disconnect_after == 900.0
    assert s.influx.api == "v2"
    assert s.worker.api_insecure is True
    assert s.capacity.interval == 120.0 and s.capacity.source_url == "http://w:6066"
    assert s.stack.kafka_agent_users == ("a1", "a2")
    assert s.value("kafka_bootstrap") == "env:9092" and s.value("capacity_interval") == 120.0


def test_defaults_are_the_sections_defaults() -> None:
    s = Settings.load(env={}, toml_path=NO_TOML)
    assert s == Settings()
    for name, setting in SETTINGS.items():
        assert s.value(name) == setting.default, name


def test_unknown_names_are_errors(tmp_path: Path) -> None:
    toml = tmp_path / "arcbeat.toml"
    toml.write_text("kafka_bootstrapp = 'x'\n", encoding="utf-8")
    with pytest.raises(SettingsError, match=r"unknown setting 'kafka_bootstrapp'.*kafka_bootstrap"):
        Settings.load(env={}, toml_path=toml)
    with pytest.raises(SettingsError, match=r"argument bootstrap: unknown setting"):
        Settings.load(env={}, toml_path=NO_TOML, bootstrap="x")
    with pytest.raises(SettingsError, match=r"unknown setting 'window_size'"):
        Settings().replace(window_size=1.0)
    with pytest.raises(SettingsError, match=r"unknown setting"):
        Settings().value("bootstrap")


def test_replace_takes_flat_names_and_whole_sections() -> None:
    s = Settings().replace(partitions=1, disconnect_after=4.0, heartbeat_interval=2.0)
    assert (s.kafka.partitions, s.timing.disconnect_after) == (1, 4.0)
    assert s.kafka.bootstrap == KafkaSettings().bootstrap  # the rest of the section stays
    s = s.replace(capacity=CapacitySettings(interval=0.0), limit_tags_per_machine=7)
    assert (s.capacity.interval, s.capacity.limit_tags_per_machine) == (0.0, 7)
    with pytest.raises(SettingsError, match=r"disconnect_after \(ARCBEAT_DISCONNECT_AFTER\)"):
        s.replace(disconnect_after=3.0)


def test_topics_follow_prefix_and_app_id() -> None:
    s = Settings().replace(topic_prefix="p", app_id="g")
    assert s.topics == s.kafka.topics == Topics.of("p", "g")
    assert (s.topics.heartbeats, s.topics.status, s.topics.dlq) == (
        "p.heartbeats",
        "p.status",
        "p.heartbeats.dlq",
    )


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("partitions", "0", "must be >= 1"),
        ("min_insync_replicas", "40000", "number of copies"),
        ("kafka_security_protocol", "TLS", "PLAINTEXT, SSL, SASL_SSL"),
        ("kafka_sasl_mechanism", "GSSAPI", "SCRAM-SHA-512"),
        ("topic_prefix", "a b", "letters, digits"),
        ("heartbeat_interval", "0", "must be > 0"),
        ("outage_ratio", "1.5", r"\(0, 1\]"),
        ("regions", ",", "at least one region"),
        ("web_port", "70000", "TCP port"),
        ("session_timeout", "5s", "group.min.session.timeout.ms"),
        ("history_port", "0", "TCP port"),
        ("influx_api", "v3", "v1, v2"),
        ("kafka_security", "ssl", "plaintext, sasl_ssl"),
        ("influx_rpc_port", "-1", "TCP port"),
        ("capacity_source_url", "w:6066", "base URL"),
        ("check_interval", "soon", "expected a duration"),
        ("api_insecure", "maybe", "expected true/false"),
    ],
)
def test_each_section_names_the_bad_setting(name: str, value: str, why: str) -> None:
    env = {SETTINGS[name].env: value}
    with pytest.raises(SettingsError, match=rf"setting {name}\b.*{why}"):
        Settings.load(env=env, toml_path=NO_TOML)


def test_cross_setting_checks() -> None:
    with pytest.raises(SettingsError, match="more than replication_factor"):
        Settings().replace(replication_factor=1, min_insync_replicas=2)
    with pytest.raises(SettingsError, match="api_tls_cert and api_tls_key go together"):
        Settings().replace(api_tls_key="/k.pem")


def test_secrets_from_files_and_hidden_from_repr(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\nignored\n", encoding="utf-8")
    s = Settings.load(
        env={"ARCBEAT_INFLUX_TOKEN_FILE": str(token), "ARCBEAT_KAFKA_PASSWORD": "kpw"},
        toml_path=NO_TOML,
    )
    assert s.influx.token == "s3cret"
    assert "s3cret" not in repr(s) and "kpw" not in repr(s)


def test_settings_and_sections_are_frozen_and_slotted() -> None:
    s = Settings()
    for obj in (s, *(getattr(s, f.name) for f in dataclasses.fields(s))):
        assert hasattr(type(obj), "__slots__") and not hasattr(obj, "__dict__"), type(obj)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, dataclasses.fields(obj)[0].name, None)


def test_durations() -> None:
    assert [parse_duration(v) for v in ("500ms", "15m", "2h", "45d", 3, "1.5")] == [
        0.5,
        900.0,
        7200.0,
        45 * 86400.0,
        3.0,
        1.5,
    ]


def test_each_section_lives_with_its_users_and_the_root_has_them_all(tmp_path: Path) -> None:
    """The stream processor declares its own sections; the exporters add InfluxDB and capacity
    planning, the local stack its own; the root the arcbeat command loads has every one."""
    from arcbeat.exporters import settings as exporters_settings
    from arcbeat.streams import settings as streams_settings

    core = set(streams_settings.Settings.sections())
    assert core == {"kafka", "identity", "timing", "input", "worker"}
    assert set(exporters_settings.Settings.sections()) - core == {"influx", "capacity"}
    assert set(Settings.sections()) - core == {"influx", "capacity", "stack"}
    for name, kind in Settings.sections().items():
        part = {"influx": "exporters", "capacity": "exporters", "stack": "deploy"}
        assert kind.__module__.startswith(f"arcbeat.{part.get(name, 'streams')}."), (name, kind)
    toml = tmp_path / "arcbeat.toml"
    toml.write_text('influx_url = "http://influx:8086"\nstate_dir = "/var/lib/arcbeat"\n')
    s = Settings.load(env={}, toml_path=toml)
    assert (s.influx.url, s.stack.state_dir) == ("http://influx:8086", "/var/lib/arcbeat")
    assert set(SETTINGS) == set(streams_settings.SETTINGS) | {
        n for n, st in SETTINGS.items() if st.section in ("influx", "capacity", "stack")
    }
    with pytest.raises(SettingsError, match="unknown setting 'influx_url'"):
        streams_settings.Settings.load(env={}, toml_path=toml)
