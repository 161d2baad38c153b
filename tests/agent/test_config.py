"""The configuration file and the secret files: every mistake names the file, the line and the
fix; nothing is guessed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from arcbeat_agent.config import AgentConfig, load_config, parse_duration, read_secret
from arcbeat_agent.errors import CONFIG, ConfigError

RID = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/"
    "Microsoft.HybridCompute/machines/web-01"
)
FULL = f"""\
# a fleet machine
[kafka]
bootstrap = "kafka-1.example.com:9093, kafka-2.example.com:9093"
security_protocol = "sasl_ssl"
username = "agent-web-01"
password_file = "/etc/arcbeat/kafka.password"
topic_prefix = "prod"
request_timeout = "20s"

[machine]
resource_id = "{RID}"
location = "westeurope"
tags = {{ env = "prod", team = "noc" }}

[heartbeat]
interval = "5m"
jitter = 0.2
backoff_max = 120

[identity]
principal = "agent-web-01"
secret_file = "/etc/arcbeat/identity.secret"

[agent]
state_dir = "/var/lib/arcbeat-agent"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_a_full_file(tmp_path: Path) -> None:
    config = load_config(str(_write(tmp_path, FULL)))
    assert config.kafka.brokers == ["kafka-1.example.com:9093", "kafka-2.example.com:9093"]
    assert config.kafka.security_protocol == "SASL_SSL"
    assert config.kafka.heartbeats_topic == "prod.heartbeats"
    assert config.kafka.status_topic == "prod.status"
    assert config.kafka.request_timeout == 20
    assert config.machine.tags == {"env": "prod", "team": "noc"}
    assert config.machine.full_resource_id().endswith("/machines/web-01")
    assert (config.heartbeat.interval, config.heartbeat.jitter) == (300, 0.2)
    assert config.heartbeat.backoff_max == 120
    assert config.state_file == Path("/var/lib/arcbeat-agent/state.json")
    assert config.where("heartbeat", "jitter") == f"{config.path}:17"


def test_no_file_at_the_default_path_means_defaults(tmp_path: Path) -> None:
    config = load_config(None, environ={})
    if config.path is None:  # no /etc/arcbeat/agent.toml on this machine
        assert config == AgentConfig(None, state_dir=config.state_dir)
        assert config.kafka.bootstrap == "localhost:9092"
        assert config.heartbeat.interval == 300


def test_a_named_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file") as info:
        load_config(str(tmp_path / "missing.toml"))
    assert info.value.exit_code == CONFIG
    env = {"ARCBEAT_AGENT_CONFIG": str(tmp_path / "other.toml")}
    with pytest.raises(ConfigError, match=r"other\.toml"):
        load_config(None, environ=env)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[kafka]\nbootstrap = \"a:1\"\nbootstrap_servers = \"x\"\n",
         r"agent.toml:3: unknown setting 'bootstrap_servers' in \[kafka\]; the settings of "
         r"\[kafka\] are bootstrap, "),
        ("[kafak]\nbootstrap = \"a:1\"\n", r"agent.toml:1: unknown section \[kafak\]"),
        ("[heartbeat]\n\ninterval = \"often\"\n",
         r"agent.toml:3: \[heartbeat\] interval: expected a duration such as 300, 30s or 5m"),
        ("[heartbeat]\njitter = 0.9\n", r"agent.toml:2: .*from 0 to 0.5"),
        ("[kafka]\nbootstrap = \"kafka-1\"\n", r"agent.toml:2: .*expected host:port"),
        ("[kafka]\nsecurity_protocol = \"TLS\"\n", r"agent.toml:2: .*PLAINTEXT, SSL, SASL_SSL"),
        ("[kafka]\nsecurity_protocol = \"SASL_SSL\"\n", r"agent.toml:2: SASL_SSL needs"),
        ("[kafka]\nca_file = \"/ca.pem\"\n", r"agent.toml:2: ca_file is only used"),
        ("[machine]\nresource_id = \"/subscriptions/xyz/resourceGroups/rg/providers/"
         "Microsoft.HybridCompute/machines/m\"\n",
         r"agent.toml:2: \[machine\] resource_id: subscriptionId 'xyz' is not a GUID"),
        ("[machine]\nlocation = \"West Europe\"\n", r"agent.toml:2: .*lower-case"),
        ("[machine]\ntags = \"env=prod\"\n", r"agent.toml:2: .*expected a table"),
        ("[identity]\nprincipal = \"p\"\n", r"agent.toml:2: .*needs secret_file"),
        ("[kafka]\nusername = 7\n", r"agent.toml:2: .*expected a string, got an integer"),
        ("[kafka\n", r"agent.toml: not valid TOML: .*line 1"),
        ("bootstrap = \"a:1\"\n",
         r"agent.toml:1: 'bootstrap' is outside any section; move it under \[kafka\]"),
    ],
)
def test_mistakes_name_the_file_line_and_fix(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(str(_write(tmp_path, text)))


def test_durations() -> None:
    assert parse_duration("5m") == 300
    assert parse_duration(" 1.5h ") == 5400
    assert parse_duration(30) == 30
    assert parse_duration("250ms") == 0.25
    for bad in ("0", -1, True, "5 minutes", ""):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_secret_files(tmp_path: Path) -> None:
    secret = tmp_path / "kafka.password"
    with pytest.raises(ConfigError, match=r"\[kafka\] password_file = .*: no such file.*chmod 600"):
        read_secret(str(secret), "[kafka] password_file")
    secret.write_text("s3cret\nignored\n")
    os.chmod(secret, 0o644)
    with pytest.raises(ConfigError, match=r"every user .* \(mode 0644\); run `chmod 600") as info:
        read_secret(str(secret), "[kafka] password_file")
    assert "s3cret" not in str(info.value)
    assert info.value.exit_code == CONFIG
    os.chmod(secret, 0o640)  # the agent's group may read it
    assert read_secret(str(secret), "[kafka] password_file") == "s3cret"
    os.chmod(secret, 0o600)
    assert read_secret(str(secret), "[kafka] password_file") == "s3cret"
    # Windows keeps ACLs, not mode bits
    os.chmod(secret, 0o644)
    assert read_secret(str(secret), "x", platform_name="win32") == "s3cret"
    empty = tmp_path / "empty"
    empty.write_text("\n")
    os.chmod(empty, 0o600)
    with pytest.raises(ConfigError, match="the file is empty"):
        read_secret(str(empty), "[identity] secret_file")
    with pytest.raises(ConfigError, match="not a regular file"):
        read_secret(str(tmp_path), "[identity] secret_file")


def test_secret_errors_name_the_config_file(tmp_path: Path) -> None:
    config = load_config(str(_write(tmp_path, "[identity]\nprincipal = \"p\"\n"
                                               "secret_file = \"/nonexistent/s\"\n")))
    with pytest.raises(ConfigError, match=r"agent.toml: \[identity\] secret_file = /nonexistent/s"):
        read_secret(config.identity.secret_file, "[identity] secret_file", config)
