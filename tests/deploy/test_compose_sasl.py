"""deploy/compose/sasl_ssl.yml: read as an override of docker-compose.yml, and run for real.

No Docker engine here, so the parts are run without it: ``compose_secrets`` writes the
secrets folder (with loopback listeners instead of kafka:9092), ``kafka-sasl.sh`` formats and
starts a real broker from the Maven jars (through stand-in ``kafka-storage.sh`` and
``kafka-server-start.sh`` that call the same Java classes as the image's scripts), and
``arcbeat topics --acls`` runs with the topics service's environment. Ports 29193-29195.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import TopicAuthorizationFailedError

from arcbeat.deploy.kafka_admin.scram import users_of
from arcbeat.deploy.settings import Settings
from arcbeat.deploy.stack import Stack
from arcbeat.streams.kafka.client import client_options
from tests.support.paths import REPO

BASE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
OVERRIDE = yaml.safe_load((REPO / "deploy/compose/sasl_ssl.yml").read_text())
INTERNAL, CONTROLLER, EXTERNAL = 29193, 29194, 29195
ARCBEAT_SERVICES = ("topics", "worker", "history", "simulate")


def _env(spec: dict[str, Any]) -> dict[str, str]:
    env = spec.get("environment", {})
    return {str(k): str(v) for k, v in env.items()}


def _merged(service: str) -> dict[str, Any]:
    """Compose's merge for what these tests read: environment by key, volumes by target."""
    base = dict(BASE["services"].get(service, {}))
    over = OVERRIDE["services"][service]
    out = {**base, **over}
    out["environment"] = {**_env(base), **_env(over)}
    volumes = {str(v).split(":")[1]: str(v) for v in base.get("volumes", [])}
    volumes.update({str(v).split(":")[1]: str(v) for v in over.get("volumes", [])})
    out["volumes"] = list(volumes.values())
    return out


def _default(value: str) -> str:
    if value.startswith("${") and ":-" in value:
        return value.split(":-", 1)[1].rstrip("}")
    return value


def test_override_names_base_services_and_declares_its_volume() -> None:
    assert set(OVERRIDE["services"]) - set(BASE["services"]) == {"kafka-secrets"}
    assert "kafka-secrets" in OVERRIDE["volumes"]
    for name, spec in OVERRIDE["services"].items():
        for vol in spec.get("volumes", []):
            source = str(vol).split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in OVERRIDE["volumes"], f"{name}: volume {source} undeclared"


def test_every_arcbeat_service_is_its_own_principal_with_a_readable_password() -> None:
    secrets_cmd = OVERRIDE["services"]["kafka-secrets"]["command"]
    owner = secrets_cmd[secrets_cmd.index("--owner") + 1]
    principals = {}
    for service in ARCBEAT_SERVICES:
        spec = _merged(service)
        env = {k: _default(v) for k, v in spec["environment"].items()}
        assert str(spec["user"]) == owner, f"{service} must run as the secrets' owner {owner}"
        assert env["ARCBEAT_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["ARCBEAT_KAFKA_BOOTSTRAP"] == "kafka:9092"
        user = env["ARCBEAT_KAFKA_USERNAME"]
        assert env["ARCBEAT_KAFKA_PASSWORD_FILE"] == f"/secrets/{user}.password"
        assert "kafka-secrets:/secrets:ro" in spec["volumes"]
        # the settings load and name a user compose_secrets writes a password for
        settings = Settings.load(env=env, toml_path=REPO / "none.toml")
        assert user in users_of(settings)
        principals[service] = user
    assert principals == {
        "topics": "admin",
        "worker": "worker",
        "history": "history",
        "simulate": "agent-1",
    }


def test_kafka_runs_the_entrypoint_after_the_secrets() -> None:
    kafka = _merged("kafka")
    assert kafka["entrypoint"][-1] == "/arcbeat/kafka-sasl.sh"
    assert "./deploy/compose/kafka-sasl.sh:/arcbeat/kafka-sasl.sh:ro" in kafka["volumes"]
    assert kafka["depends_on"]["kafka-secrets"]["condition"] == "service_completed_successfully"
    assert "CLUSTER_ID" in kafka["environment"]  # from the base file, read by the script
    assert "/secrets/admin.properties" in " ".join(kafka["healthcheck"]["test"])


# -- the real run ------------------------------------------------------------------------------


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def compose_broker(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    busy = [p for p in (INTERNAL, CONTROLLER, EXTERNAL) if not _free(p)]
    if busy:
        pytest.fail(f"ports {busy} are in use; the compose SASL_SSL broker needs them")
    jars = stack.paths.jars
    root = tmp_path_factory.mktemp("compose-sasl")
    secrets, home = root / "secrets", root / "kafka-home"
    (home / "bin").mkdir(parents=True)
    # the image's scripts run these classes; the jars are the stack's Maven cache
    for script, cls, heap in (
        ("kafka-storage.sh", "kafka.tools.StorageTool", "256m"),
        ("kafka-server-start.sh", "kafka.Kafka", "512m"),
    ):
        path = home / "bin" / script
        path.write_text(f'#!/bin/sh\nexec java -Xmx{heap} -cp "{jars}/*" {cls} "$@"\n')
        path.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCBEAT_")}
    env.update({k: _default(v) for k, v in _env(OVERRIDE["services"]["kafka-secrets"]).items()})
    env["ARCBEAT_CONFIG"] = str(root / "none.toml")
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "arcbeat.deploy.compose_secrets",
            str(secrets),
            "--internal",
            f"127.0.0.1:{INTERNAL}",
            "--external",
            f"127.0.0.1:{EXTERNAL}",
            "--external-bind",
            str(EXTERNAL),
            "--controller",
            f"127.0.0.1:{CONTROLLER}",
            "--bind-host",
            "127.0.0.1",
            "--data-dir",
            str(root / "data"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    log = root / "kafka.log"
    kafka_env = {
        **env,
        "KAFKA_HOME": str(home),
        "ARCBEAT_KAFKA_SECRETS": str(secrets),
        "CLUSTER_ID": BASE["services"]["kafka"]["environment"]["CLUSTER_ID"],
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", str(REPO / "deploy/compose/kafka-sasl.sh")],
            env=kafka_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while _free(INTERNAL) or _free(EXTERNAL):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield secrets
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _client_env(secrets: Path, service: str, port: int = INTERNAL) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCBEAT_")}
    for k, v in _merged(service)["environment"].items():
        env[k] = _default(v).replace("/secrets/", f"{secrets}/")
    env["ARCBEAT_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{port}"
    env["ARCBEAT_CONFIG"] = str(secrets / "none.toml")
    return env


@pytest.mark.services
def test_secrets_folder_is_private_and_scram_values_are_salted(compose_broker: Path) -> None:
    files = {p.name: p for p in compose_broker.iterdir()}
    for name in ("ca.pem", "broker.pem", "server.properties", "scram.args", "admin.properties"):
        assert name in files
    for user in ("admin", "worker", "history", "agent-1"):
        assert f"{user}.password" in files
    assert oct(compose_broker.stat().st_mode & 0o777) == "0o700"
    for path in files.values():
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    scram = files["scram.args"].read_text()
    for user in ("admin", "worker", "history", "agent-1"):
        assert f"name={user}," in scram
        assert files[f"{user}.password"].read_text().strip() not in scram
    props = files["server.properties"].read_text()
    assert f"INTERNAL://127.0.0.1:{INTERNAL}" in props
    assert "ssl.enabled.protocols=TLSv1.2,TLSv1.3" in props


def _topics_acls(secrets: Path) -> subprocess.CompletedProcess[str]:
    """The compose `topics` service's command, with its environment."""
    command = _merged("topics")["command"]
    assert command == ["arcbeat", "topics", "--acls"]
    return subprocess.run(
        [sys.executable, "-m", "arcbeat.deploy.cli", *command[1:]],
        env=_client_env(secrets, "topics"),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


@pytest.mark.services
def test_topics_acls_then_each_principal_gets_only_its_rights(compose_broker: Path) -> None:
    done = _topics_acls(compose_broker)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "arcbeat.heartbeats: created" in done.stdout
    assert "ACLs granted" in done.stdout
    # the agent (simulate's principal) over the EXTERNAL listener: heartbeats only
    agent = Settings.load(env=_client_env(compose_broker, "simulate", EXTERNAL))
    worker = Settings.load(env=_client_env(compose_broker, "worker"))

    async def check() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=agent.kafka.bootstrap, **client_options(agent.kafka)
        )
        await producer.start()
        try:
            md = await producer.send_and_wait(agent.topics.heartbeats, b"{}", key=b"k")
            assert md.offset >= 0
            with pytest.raises(TopicAuthorizationFailedError):
                await producer.send_and_wait(agent.topics.status, b"{}", key=b"k")
        finally:
            await producer.stop()
        admin = AIOKafkaAdminClient(
            bootstrap_servers=worker.kafka.bootstrap, **client_options(worker.kafka)
        )
        await admin.start()
        try:
            seen = {t["topic"]: t["error_code"] for t in await admin.describe_topics()}
        finally:
            await admin.close()
        assert seen.get(worker.topics.status) == 0 and seen.get(worker.topics.heartbeats) == 0

    asyncio.run(check())
    # a second run is a no-op: topics exist, no user is new
    again = _topics_acls(compose_broker)
    assert again.returncode == 0, again.stderr
    assert "SCRAM users added: none" in again.stdout
