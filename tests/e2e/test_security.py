"""Security and hardening (issue 7) against a SECOND, SASL_SSL-only Kafka.

The broker is started from the stack code (``kafka_security = "sasl_ssl"``) in its own state
folder on other ports (client 29093, controller 29094), so the shared stack on 9092 is never
touched, and stopped at the end. Also: the small fuzz of decode_heartbeat, and secrets never
in logs or reprs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError

from arcbeat.bench.fuzz import run as run_fuzz
from arcbeat.deploy import kafka_security as ks
from arcbeat.deploy.settings import Settings
from arcbeat.deploy.stack import Stack, StackError
from arcbeat.streams.decide.engine import Engine
from arcbeat.streams.decide.identity import IdentityBindings, make_binding
from arcbeat.streams.decide.resource_ids import resource_id
from arcbeat.streams.kafka.client import client_options
from arcbeat.streams.settings import SettingsError
from arcbeat_agent.check import run_check
from arcbeat_agent.config import AgentConfig, load_config
from arcbeat_agent.daemon import deliver_once
from arcbeat_agent.errors import KafkaRefused
from arcbeat_agent.state import AgentState
from tests.support.deployment import E2E_TIMING
from tests.support.net import free_port_block
from tests.support.paths import REPO
from tests.support.waiting import wait_for

KAFKA_PORT = 29093
CONTROLLER_PORT = 29094
SUB_A = "00000000-0000-0000-0000-0000000000a1"
SUB_B = "00000000-0000-0000-0000-0000000000b2"
IDENTITY_SECRET = "agent-1-identity-secret-" + uuid.uuid4().hex


@dataclass
class SecureKafka:
    stack: Stack
    settings: Settings  # the deployment (no client credentials)
    root: Path

    def as_user(self, user: str) -> Settings:
        return ks.client_settings(self.settings, self.root, user)

    def password(self, user: str) -> str:
        return ks.password_file(self.root, user).read_text().strip()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    busy = [p for p in (KAFKA_PORT, CONTROLLER_PORT) if not _port_free(p)]
    if busy:
        pytest.fail(f"ports {busy} are in use; the secure test broker needs them", pytrace=False)
    root = tmp_path_factory.mktemp("secure-kafka")
    shared_jars = REPO / "state" / "jars"
    if (shared_jars / ".pom.sha256").is_file():
        (root / "jars").symlink_to(shared_jars)  # reuse the jar cache (read only)
    prefix = f"sec{uuid.uuid4().hex[:8]}"
    settings = Settings.load(
        env={},
        toml_path=root / "none.toml",
        state_dir=str(root),
        kafka_bootstrap=f"127.0.0.1:{KAFKA_PORT}",
        kafka_controller_port=CONTROLLER_PORT,
        kafka_security="sasl_ssl",
        kafka_agent_users="agent-1,agent-2",
        topic_prefix=prefix,
        app_id=f"{prefix}-app",
        partitions=3,
        regions="*",
    )
    stack = Stack(settings, only=("kafka",))
    try:
        stack.up(lambda m: print(f"[secure-kafka] {m}"))
        stack.ensure_topics()
    except StackError as exc:
        stack.down()
        pytest.fail(f"the SASL_SSL test broker could not start:\n{exc}", pytrace=False)
    try:
        yield SecureKafka(stack, settings, root)
    finally:
        stack.down(lambda m: print(f"[secure-kafka] {m}"))


def _handshake(root: Path, version: ssl.TLSVersion) -> str:
    """Negotiated version, or raises ssl.SSLError when the broker refuses."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ks.secrets_dir(root) / "ca.pem")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = version
        ctx.maximum_version = version
    ctx.set_ciphers("ALL:@SECLEVEL=0")  # let the client *offer* old versions
    with (
        socket.create_connection(("127.0.0.1", KAFKA_PORT), timeout=10) as sock,
        ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        return str(tls.version())


@pytest.mark.services
def test_tls_1_0_and_1_1_refused_1_2_and_1_3_accepted(secure: SecureKafka) -> None:
    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        with pytest.raises(ssl.SSLError) as info:
            _handshake(secure.root, old)
        assert "PROTOCOL_VERSION" in str(info.value).upper() or "VERSION" in str(info.value)
    assert _handshake(secure.root, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert _handshake(secure.root, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"


@pytest.mark.services
def test_client_helper_refuses_below_tls_1_2(secure: SecureKafka) -> None:
    ctx = client_options(secure.as_user("agent-1").kafka)["ssl_context"]
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.services
async def test_wrong_password_and_plaintext_are_refused(secure: SecureKafka) -> None:
    bad = secure.as_user("agent-1").replace(kafka_password="wrong", kafka_password_file="")
    producer = AIOKafkaProducer(
        bootstrap_servers=secure.settings.kafka.bootstrap,
        request_timeout_ms=10_000,
        **client_options(bad.kafka),
    )
    with pytest.raises(KafkaError):
        await asyncio.wait_for(producer.start(), 30)
    await producer.stop()
    plain = AIOKafkaProducer(
        bootstrap_servers=secure.settings.kafka.bootstrap, request_timeout_ms=5_000
    )
    with pytest.raises((KafkaError, asyncio.TimeoutError)):
        await asyncio.wait_for(plain.start(), 15)
    await plain.stop()


@pytest.mark.services
async def test_agent_writes_heartbeats_but_cannot_read_or_write_status(secure: SecureKafka) -> None:
    s = secure.settings
    opts = client_options(secure.as_user("agent-1").kafka)
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka.bootstrap, **opts)
    await producer.start()
    try:
        md = await producer.send_and_wait(s.topics.heartbeats, b"{}", key=b"k")
        assert md.offset >= 0
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(s.topics.status, b"{}", key=b"k")
    finally:
        await producer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka.bootstrap, **opts)
    await admin.start()
    try:
        described = {
            t["topic"]: t["error_code"] for t in await admin.describe_topics([s.topics.status])
        }
    finally:
        await admin.close()
    assert described[s.topics.status] == 29  # TOPIC_AUTHORIZATION_FAILED
    consumer = AIOKafkaConsumer(
        s.topics.status,
        group_id=f"{s.kafka.app_id}-spy",
        bootstrap_servers=s.kafka.bootstrap,
        **opts,
    )
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await consumer.start()
            await asyncio.wait_for(consumer.getone(), 20)
    finally:
        await consumer.stop()


def _agent_config(secure: SecureKafka, tmp_path: Path, password_file: Path | None = None) -> (
    AgentConfig
):
    """The machine agent's configuration for ``agent-1`` on the SASL_SSL broker, signing."""
    identity = tmp_path / "identity.secret"
    identity.write_text(IDENTITY_SECRET + "\n")
    identity.chmod(0o600)
    password = password_file or ks.password_file(secure.root, "agent-1")
    path = tmp_path / "agent.toml"
    path.write_text(
        f'[kafka]\nbootstrap = "{secure.settings.kafka.bootstrap}"\n'
        'security_protocol = "SASL_SSL"\nusername = "agent-1"\n'
        f'password_file = "{password}"\nca_file = "{ks.secrets_dir(secure.root) / "ca.pem"}"\n'
        f'topic_prefix = "{secure.settings.kafka.topic_prefix}"\n'
        f'[identity]\nprincipal = "agent-1"\nsecret_file = "{identity}"\n'
        f'[agent]\nstate_dir = "{tmp_path / "state"}"\n'
    )
    return load_config(str(path))


@pytest.mark.services
async def test_signed_agent_through_sasl_ssl_to_worker_principal(
    secure: SecureKafka, tmp_path: Path
) -> None:
    """arcbeat-agent (signing) -> SASL_SSL -> consumer as the worker principal -> Engine with
    bindings: the agent's own machine passes, a forged one is rejected as unauthorized."""
    s = secure.settings
    config = _agent_config(secure, tmp_path)
    mine = resource_id(SUB_A, "rg-a", "m1")
    forged = resource_id(SUB_B, "rg-b", "victim")
    for rid in (mine, forged):
        state = AgentState(resource_id=rid, location="westeurope")
        for kind in ("connect", "heartbeat"):
            await deliver_once(config, state, kind)
    worker = secure.as_user("worker")
    consumer = AIOKafkaConsumer(
        s.topics.heartbeats,
        group_id=f"{s.kafka.app_id}-check",
        bootstrap_servers=s.kafka.bootstrap,
        auto_offset_reset="earliest",
        **client_options(worker.kafka),
    )
    await consumer.start()
    engine = Engine(
        s,
        identity=IdentityBindings(
            {"agent-1": make_binding("agent-1", IDENTITY_SECRET.encode(), [SUB_A])}
        ),
    )
    verdicts: dict[str, str] = {}
    try:
        async with asyncio.timeout(30):
            while len(verdicts) < 2:
                for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                    for r in records:
                        if r.key is None or not r.key.startswith(b"/subscriptions/"):
                            continue  # the raw write of the ACL test
                        emits, hb = engine.handle_message(
                            tp.partition,
                            r.offset,
                            r.key,
                            r.value,
                            r.timestamp / 1000,
                            topic=r.topic,
                            wall_now=r.timestamp / 1000,
                            headers=list(r.headers),
                        )
                        reason = json.loads(emits[0].value).get("reason") if emits else None
                        verdicts[r.key.decode()] = "ok" if hb else str(reason)
    finally:
        await consumer.stop()
    assert verdicts == {mine.lower(): "ok", forged.lower(): "unauthorized"}


@pytest.mark.services
async def test_agent_check_and_a_refused_login(secure: SecureKafka, tmp_path: Path) -> None:
    """`arcbeat-agent check` on the SASL_SSL broker: TLS 1.2+, the SCRAM login, WRITE on the
    heartbeats topic and none on the status topic; a wrong password is named as such."""
    config = _agent_config(secure, tmp_path)
    prefix = secure.settings.kafka.topic_prefix
    verdicts = await run_check(config)
    lines = [v.line() for v in verdicts]
    assert [(v.outcome, v.check) for v in verdicts] == [
        ("PASS", "dns"), ("PASS", "tcp"), ("PASS", "tls"), ("PASS", "sasl"),
        ("PASS", "permission"), ("PASS", "permission"),
    ], lines
    assert "TLSv1." in lines[2] and "certificate" in lines[2]
    assert f"'agent-1' may write {prefix}.heartbeats" in lines[4]
    assert f"'agent-1' may not write {prefix}.status (as it should)" in lines[5]

    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    bad = _agent_config(secure, tmp_path, password_file=wrong)
    verdicts = await run_check(bad)
    assert verdicts[-1].outcome == "FAIL" and verdicts[-1].check == "sasl", verdicts
    assert "refused the login of 'agent-1'" in verdicts[-1].detail
    assert "not-the-password" not in verdicts[-1].line()
    state = AgentState(resource_id=resource_id(SUB_A, "rg-a", "m1"), location="westeurope")
    with pytest.raises(KafkaRefused, match="refused the login of 'agent-1'"):
        await deliver_once(bad, state, "heartbeat")


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "arcbeat.deploy.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def _agent_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "arcbeat_agent", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


@pytest.mark.services
def test_secrets_never_in_logs_or_repr(secure: SecureKafka, tmp_path: Path) -> None:
    s = secure.settings
    agent_pw = secure.password("agent-1")
    influx_token, influx_pw = "influx-token-" + uuid.uuid4().hex, "influx-pw-" + uuid.uuid4().hex
    env = {
        "ARCBEAT_CONFIG": str(tmp_path / "none.toml"),
        "ARCBEAT_STATE_DIR": str(secure.root),
        "ARCBEAT_KAFKA_BOOTSTRAP": s.kafka.bootstrap,
        "ARCBEAT_KAFKA_CONTROLLER_PORT": str(CONTROLLER_PORT),
        "ARCBEAT_KAFKA_SECURITY": "sasl_ssl",
        "ARCBEAT_TOPIC_PREFIX": s.kafka.topic_prefix,
        "ARCBEAT_REGIONS": "*",
        "ARCBEAT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "ARCBEAT_KAFKA_USERNAME": "agent-1",
        "ARCBEAT_KAFKA_PASSWORD": agent_pw,
        "ARCBEAT_KAFKA_CA_FILE": str(ks.secrets_dir(secure.root) / "ca.pem"),
        "ARCBEAT_INFLUX_TOKEN": influx_token,
        "ARCBEAT_INFLUX_PASSWORD": influx_pw,
        "ARCBEAT_IDENTITY_PRINCIPAL": "agent-1",
        "ARCBEAT_IDENTITY_SECRET": IDENTITY_SECRET,
    }
    secrets = [agent_pw, influx_token, influx_pw, IDENTITY_SECRET, secure.password("admin")]
    outputs = []
    # the machine agent onboarding with its password file, then with a wrong password
    wrong = tmp_path / "wrong.password"
    wrong.write_text(agent_pw[::-1] + "\n")
    wrong.chmod(0o600)
    for folder, password_file, refused in (("good", None, False), ("bad", wrong, True)):
        (tmp_path / folder).mkdir()
        _agent_config(secure, tmp_path / folder, password_file=password_file)
        run = _agent_cli(
            "--config", str(tmp_path / folder / "agent.toml"), "connect",
            "--resource-id", resource_id(SUB_A, "rg-a", "m2"), "--location", "westeurope",
        )  # fmt: skip
        assert (run.returncode != 0) is refused, run.stderr[-2000:]
        outputs.append(run.stdout + run.stderr)
    status = _cli(env, "stack", "status")
    outputs.append(status.stdout + status.stderr)
    loaded = Settings.load(env=env)
    outputs.append(repr(loaded))
    # the broker's own logs: the format command line is redacted, passwords never logged
    for log in (secure.root / "logs").glob("*.log"):
        outputs.append(log.read_text(errors="replace"))
    for log in (secure.root / "kafka" / "logs").glob("*.log"):
        outputs.append(log.read_text(errors="replace"))
    for text in outputs:
        for secret in secrets:
            assert secret not in text
    assert "redacted" in (secure.root / "logs" / "kafka.log").read_text()


def test_fuzz_decode_heartbeat_small() -> None:
    result = run_fuzz(400, mutants=10, seed_value=7)
    assert result["ok"], result["violations"]
    assert result["inputs"] >= 4000
    assert "accepted" in result["outcomes"] and "schema" in result["outcomes"]


# -- users added after the first format, and rotation ------------------------------------------


async def _agent_can_write(settings: Settings) -> bool:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap,
        request_timeout_ms=10_000,
        **client_options(settings.kafka),
    )
    try:
        await asyncio.wait_for(producer.start(), 30)
        await producer.send_and_wait(settings.topics.heartbeats, b"{}", key=b"late")
        return True
    except KafkaError:
        return False
    finally:
        await producer.stop()


@pytest.mark.services
def test_scram_user_added_after_format_and_rotated(secure: SecureKafka) -> None:
    """A principal added to kafka_agent_users later gets its SCRAM credential and ACLs on the
    next `stack up`; replacing its password file rotates the credential."""
    late = "agent-late"
    settings = secure.settings.replace(
        kafka_agent_users=(*secure.settings.stack.kafka_agent_users, late)
    )
    lines: list[str] = []
    Stack(settings, only=("kafka",)).up(lines.append)
    assert f"kafka: SCRAM users added: {late}" in lines, lines
    as_late = ks.client_settings(settings, secure.root, late)
    assert asyncio.run(_agent_can_write(as_late))
    old = secure.password(late)
    ks.password_file(secure.root, late).write_text("rotated-" + uuid.uuid4().hex + "\n")
    lines.clear()
    Stack(settings, only=("kafka",)).up(lines.append)
    assert not any("SCRAM users added" in line for line in lines), lines  # a rotation only
    assert asyncio.run(_agent_can_write(as_late))
    assert not asyncio.run(_agent_can_write(as_late.replace(kafka_password=old)))


# -- the whole pipeline over SASL_SSL, each process as its own principal ----------------------


def _pipeline_env(secure: SecureKafka, user: str, **extra: str) -> dict[str, str]:
    s = secure.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCBEAT_")}
    env.update(
        {
            "ARCBEAT_CONFIG": str(secure.root / "none.toml"),
            "ARCBEAT_STATE_DIR": str(secure.root),
            "ARCBEAT_KAFKA_BOOTSTRAP": s.kafka.bootstrap,
            "ARCBEAT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "ARCBEAT_KAFKA_USERNAME": user,
            "ARCBEAT_KAFKA_PASSWORD_FILE": str(ks.password_file(secure.root, user)),
            "ARCBEAT_KAFKA_CA_FILE": str(ks.secrets_dir(secure.root) / "ca.pem"),
            "ARCBEAT_TOPIC_PREFIX": s.kafka.topic_prefix,
            "ARCBEAT_APP_ID": s.kafka.app_id,
            "ARCBEAT_PARTITIONS": str(s.kafka.partitions),
            "ARCBEAT_REGIONS": "*",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update({"ARCBEAT_" + k.upper(): v for k, v in {**E2E_TIMING, **extra}.items()})
    return env


def _spawn(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "arcbeat.deploy.cli", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _influx(url: str, db: str, q: str) -> list[list[Any]]:
    query = urllib.parse.urlencode({"db": db, "q": q})
    with urllib.request.urlopen(f"{url}/query?{query}", timeout=10) as r:
        body = json.loads(r.read())
    series = body["results"][0].get("series") or [{"values": []}]
    return list(series[0]["values"])


@pytest.mark.services
def test_worker_simulator_and_history_over_sasl_ssl(
    secure: SecureKafka, stack: Stack, tmp_path: Path
) -> None:
    """The worker (principal `worker`), the simulator (`agent-1`) and the history exporter
    (`history`) run against the SASL_SSL-only broker with the ACLs `stack up` grants: every
    onboarding and outage reaches the status topic and InfluxDB. The worker started with an
    agent's credentials is refused with a clear message."""
    base = free_port_block(3)
    influx_url, db = stack.settings.influx.url, f"sec_{uuid.uuid4().hex[:8]}"
    worker_env = _pipeline_env(
        secure, "worker", web_port=str(base), data_dir=str(tmp_path / "data")
    )
    refused = subprocess.run(
        [sys.executable, "-m", "arcbeat.deploy.cli", "worker"],
        env=_pipeline_env(secure, "agent-2", web_port=str(base + 2), data_dir=str(tmp_path / "d2")),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "authorization failed" in refused.stderr and "kafka_username" in refused.stderr
    worker = _spawn(worker_env, tmp_path / "worker.log", "worker", "--loglevel", "info")
    history = _spawn(
        _pipeline_env(
            secure,
            "history",
            history_port=str(base + 1),
            influx_url=influx_url,
            influx_db=db,
            capacity_source_url=f"http://127.0.0.1:{base}",
        ),
        tmp_path / "history.log",
        "history",
    )
    try:

        def worker_ready() -> bool | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{base}/readyz", timeout=2) as r:
                    return len(json.loads(r.read()).get("partitions", [])) == 3 or None
            except OSError:
                return None

        wait_for("the SASL_SSL worker to own 3 partitions", worker_ready, timeout=90)
        n = 40
        sim = subprocess.run(
            [
                sys.executable,
                "-m",
                "arcbeat.deploy.cli",
                "simulate",
                "-n",
                str(n),
                "--duration",
                "12",
                "--scenario",
                "steady,outages",
                "--outage-fraction",
                "0.25",
                "--outage-duration",
                "8",
            ],
            env=_pipeline_env(secure, "agent-1"),
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert sim.returncode == 0, sim.stdout[-2000:] + sim.stderr[-2000:]
        assert "0 errors" in sim.stdout + sim.stderr

        def transitions() -> list[list[Any]] | None:
            rows = _influx(
                influx_url, db, "SELECT count(machine_name) FROM transitions GROUP BY status"
            )
            got = _influx(influx_url, db, "SHOW TAG VALUES FROM transitions WITH KEY = status")
            return rows if {"Connected", "Disconnected"} <= {v[1] for v in got} else None

        wait_for("transitions in InfluxDB via the history principal", transitions, timeout=60)
        connected = _influx(
            influx_url, db, "SELECT count(machine_name) FROM transitions WHERE status = 'Connected'"
        )
        assert connected and connected[0][1] >= n  # every machine onboarded
    finally:
        _stop(worker)
        _stop(history)
        with contextlib.suppress(OSError):
            _influx(influx_url, db, f'DROP DATABASE "{db}"')
    secrets = [secure.password(u) for u in ("worker", "history", "agent-1", "agent-2")]
    for name in ("worker.log", "history.log"):
        text = (tmp_path / name).read_text(errors="replace")
        assert "AuthorizationFailed" not in text and "Traceback" not in text, text[-3000:]
        assert not any(secret in text for secret in secrets), f"a password is in {name}"
    assert not any(secret in refused.stdout + refused.stderr for secret in secrets)


def test_influx_credentials_from_files_never_shown(tmp_path: Path) -> None:
    token, password = "tok-" + uuid.uuid4().hex, "pw-" + uuid.uuid4().hex
    (tmp_path / "token").write_text(token + "\n")
    (tmp_path / "password").write_text(password + "\n")
    env = {
        "ARCBEAT_INFLUX_TOKEN_FILE": str(tmp_path / "token"),
        "ARCBEAT_INFLUX_USERNAME": "arcbeat",
        "ARCBEAT_INFLUX_PASSWORD_FILE": str(tmp_path / "password"),
    }
    s = Settings.load(env=env, toml_path=tmp_path / "none.toml")
    assert (s.influx.token, s.influx.password) == (token, password)
    assert token not in repr(s) and password not in repr(s)
    # a value given directly wins over the file
    direct = Settings.load(env={**env, "ARCBEAT_INFLUX_TOKEN": "direct"}, toml_path=tmp_path / "x")
    assert direct.influx.token == "direct"
    with pytest.raises(SettingsError) as info:
        Settings.load(
            env={"ARCBEAT_INFLUX_TOKEN_FILE": str(tmp_path / "absent")},
            toml_path=tmp_path / "none.toml",
        )
    assert "ARCBEAT_INFLUX_TOKEN_FILE" in str(info.value) and "absent" in str(info.value)
