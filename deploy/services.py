"""The four services of the local stack: where their files go, how they start, how they are
checked.

Each :class:`Service` knows its ports, its command line, the marker that recognises its process,
how to prepare its configuration under the state folder, and a health check that returns
``None`` when healthy or a short reason when not.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.resources
import json
import os
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from arcbeat.deploy import kafka_security
from arcbeat.deploy.aio import run_sync
from arcbeat.deploy.errors import StackError
from arcbeat.deploy.kafka_admin import KafkaAdminError
from arcbeat.deploy.kafka_admin.acls import grant_principals
from arcbeat.deploy.kafka_admin.client import close_quietly
from arcbeat.deploy.kafka_admin.scram import ADMIN_USER, ensure_passwords, scram_argument, users_of
from arcbeat.deploy.settings import Settings
from arcbeat.streams.kafka.client import client_options

Progress = Callable[[str], None]

LOOPBACK = "127.0.0.1"
_LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]", ""}
# Never use a proxy for loopback health checks, whatever http_proxy says.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def package_dir() -> Path:
    """Folder of the installed ``arcbeat.deploy`` package (holds kafka/, prometheus/, ...)."""
    root = importlib.resources.files("arcbeat.deploy")
    path = Path(str(root))
    if not (path / "kafka" / "pom.xml").is_file():
        raise StackError(
            f"arcbeat.deploy resources not found under {path}: install arcbeat from a folder "
            "or wheel (pip install .), not a zip archive"
        )
    return path


@dataclass(frozen=True)
class StatePaths:
    """Everything the local stack writes lives under one folder."""

    root: Path

    @classmethod
    def of(cls, settings: Settings) -> StatePaths:
        return cls(Path(settings.stack.state_dir).expanduser().resolve())

    @property
    def conf(self) -> Path:
        return self.root / "conf"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def jars(self) -> Path:
        return self.root / "jars"

    def log(self, service: str) -> Path:
        return self.logs / f"{service}.log"

    def pid(self, service: str) -> Path:
        return self.pids / f"{service}.pid"

    @property
    def cluster_file(self) -> Path:
        """The layout of a multi-broker Kafka (broker count, cluster id)."""
        return self.root / "kafka-cluster.json"

    def create(self) -> None:
        # Kafka's folders (kafka/ or kafka-<n>/) are made by each broker's prepare()
        for sub in (
            "conf/alertmanager",
            "logs",
            "pids",
            "prometheus/data",
            "alertmanager/data",
            "influxdb/meta",
            "influxdb/data",
            "influxdb/wal",
        ):
            (self.root / sub).mkdir(parents=True, exist_ok=True)


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_check(url: str, expect: int = 200, timeout: float = 2.0) -> str | None:
    """None if GET ``url`` answers ``expect``, else why not."""
    try:
        with _HTTP.open(url, timeout=timeout) as resp:
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        return f"GET {url} failed: {getattr(exc, 'reason', exc)}"
    if status != expect:
        return f"GET {url} answered HTTP {status}, expected {expect}"
    return None


def http_post(url: str, form: dict[str, str], timeout: float = 10.0) -> tuple[int, str]:
    data = urllib.parse.urlencode(form).encode()
    req = urllib.request.Request(url, data=data, method="POST")
    try:
        with _HTTP.open(req, timeout=timeout) as resp:
            return int(resp.status), resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def render_template(src: Path, **values: object) -> str:
    """``src`` with its ``${name}`` placeholders filled (a packaged config template)."""
    try:
        return Template(src.read_text()).substitute(values)
    except (KeyError, ValueError) as exc:
        raise StackError(f"config template {src}: cannot fill it: {exc!r}") from exc


def _url_port(setting: str, url: str, default: int) -> int:
    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in _LOOPBACK_NAMES:
        raise StackError(
            f"setting {setting} is {url!r}, but the local stack only serves on loopback "
            f"({LOOPBACK}); point it at 127.0.0.1 or use docker-compose for other hosts"
        )
    try:
        return parts.port or default
    except ValueError as exc:
        raise StackError(f"setting {setting}: bad port in {url!r}: {exc}") from exc


def kafka_port(settings: Settings) -> int:
    first = settings.kafka.bootstrap.split(",")[0].strip()
    return _url_port("kafka_bootstrap", f"kafka://{first}", 9092)


MAX_BROKERS = 9
BROKER_PORT_STEP = 100  # broker n of a cluster listens on the first port + 100 * (n - 1)


def broker_ports(settings: Settings, brokers: int) -> list[tuple[int, int]]:
    """(client port, controller port) of each broker of a local Kafka of ``brokers`` nodes.

    One broker: the first ``kafka_bootstrap`` address and ``kafka_controller_port``. More:
    the addresses of ``kafka_bootstrap`` when it lists one per broker, else the first
    address's port + 100 per broker (9092, 9192, 9292); controllers on
    ``kafka_controller_port`` + 0, 1, 2, ...
    """
    check_brokers(brokers)
    controller = settings.stack.kafka_controller_port
    if brokers == 1:
        return [(kafka_port(settings), controller)]
    addresses = [a.strip() for a in settings.kafka.bootstrap.split(",") if a.strip()]
    if len(addresses) == brokers:
        clients = [
            _url_port("kafka_bootstrap", f"kafka://{address}", 9092) for address in addresses
        ]
    elif len(addresses) == 1:
        first = kafka_port(settings)
        clients = [first + BROKER_PORT_STEP * i for i in range(brokers)]
    else:
        raise StackError(
            f"setting kafka_bootstrap lists {len(addresses)} addresses "
            f"({settings.kafka.bootstrap!r}) for a local Kafka of {brokers} brokers: list one "
            "address per broker, or only the first (the others then listen on its port + "
            f"{BROKER_PORT_STEP}, + {2 * BROKER_PORT_STEP}, ...)"
        )
    out = [(port, controller + i) for i, port in enumerate(clients)]
    for port in (p for pair in out for p in pair):
        if not 1 <= port <= 65535:
            raise StackError(
                f"a local Kafka of {brokers} brokers would listen on port {port}: move it with "
                "ARCBEAT_KAFKA_BOOTSTRAP / ARCBEAT_KAFKA_CONTROLLER_PORT"
            )
    return out


def cluster_bootstrap(settings: Settings, brokers: int) -> str:
    """The bootstrap list (every broker) for clients of a local Kafka of ``brokers``."""
    return ",".join(f"{LOOPBACK}:{client}" for client, _ in broker_ports(settings, brokers))


def check_brokers(brokers: int) -> None:
    if not 1 <= brokers <= MAX_BROKERS:
        raise StackError(
            f"stack: --brokers must be 1 (the default: one broker, also the controller) to "
            f"{MAX_BROKERS}, got {brokers}; 3 gives a cluster that survives one broker's loss"
        )


def recorded_brokers(paths: StatePaths) -> int | None:
    """How many brokers the Kafka of this state folder was formatted with (None: none yet)."""
    record = paths.cluster_file
    if record.is_file():
        try:
            brokers = int(json.loads(record.read_text())["brokers"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StackError(
                f"stack: {record} is unreadable ({exc!r}); it records the layout of this state "
                "folder's Kafka. Restore it, or stop the stack and remove the Kafka folders "
                f"(kafka-<n>/ and {record.name}) under {paths.root} to start over"
            ) from None
        check_brokers(brokers)
        return brokers
    if (paths.root / "kafka" / "data" / "meta.properties").exists():
        return 1
    return None


def record_cluster(paths: StatePaths, brokers: int) -> str:
    """Write (once) the layout of a multi-broker Kafka; returns its cluster id."""
    record = paths.cluster_file
    if record.is_file():
        return str(json.loads(record.read_text())["cluster_id"])
    cluster_id = new_cluster_id()
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps({"brokers": brokers, "cluster_id": cluster_id}) + "\n")
    tmp.replace(record)
    return cluster_id


# Kafka's own Uuid.randomUuid() never hands out these two, nor an id starting with "-"
_RESERVED_IDS = {bytes(16), bytes(15) + b"\x01"}  # Uuid.ZERO_UUID, Uuid.METADATA_TOPIC_ID


def new_cluster_id(random_bytes: Callable[[int], bytes] = os.urandom) -> str:
    """A random Kafka cluster id: 16 bytes, URL-safe base64 without padding (22 chars).

    Like Kafka's ``Uuid.randomUuid()``, ids that start with ``-`` are drawn again: command
    line parsers read them as an option (``kafka-storage format -t -abc...``).
    """
    while True:
        raw = random_bytes(16)
        if len(raw) != 16:
            raise ValueError(f"random_bytes(16) returned {len(raw)} bytes")
        text = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        if raw not in _RESERVED_IDS and not text.startswith("-"):
            return text


def set_properties(text: str, values: Mapping[str, str | None], header: str) -> str:
    """``text`` (a Java .properties file) with each key of ``values`` set where it is
    (``None``: the line is dropped); keys it does not have are appended under ``header``."""
    out: list[str] = []
    seen: set[str] = set()
    for line in text.splitlines():
        stripped = line.strip()
        key = stripped.split("=", 1)[0].strip() if "=" in stripped else ""
        if stripped.startswith("#") or key not in values:
            out.append(line)
            continue
        seen.add(key)
        value = values[key]
        if value is not None:
            out.append(f"{key}={value}")
    rest = [f"{k}={v}" for k, v in values.items() if k not in seen and v is not None]
    if rest:
        out += ["", header, *rest]
    return "\n".join(out) + "\n"


def _require(tool: str, package: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise StackError(
            f"`{tool}` not found on PATH: install it (Debian: apt-get install {package})"
        )
    return found


class Service:
    """One process of the stack. Subclasses fill in the specifics."""

    name: str = ""
    start_timeout: float = 30.0
    stop_timeout: float = 15.0

    def __init__(self, settings: Settings, paths: StatePaths) -> None:
        self.settings = settings
        self.paths = paths

    # -- identity ---------------------------------------------------------------------------
    @property
    def ports(self) -> list[int]:
        """Every port the service binds; the first is the one clients use."""
        raise NotImplementedError

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.ports[0]}"

    @property
    def marker(self) -> str:
        """A string found only in this stack's command line for this service."""
        raise NotImplementedError

    @property
    def log(self) -> Path:
        return self.paths.log(self.name)

    @property
    def pid_file(self) -> Path:
        return self.paths.pid(self.name)

    def extra_logs(self) -> list[Path]:
        """More logs worth naming when the service fails."""
        return []

    # -- lifecycle --------------------------------------------------------------------------
    def require_tools(self) -> None:
        """Fail early, with the install hint, if a binary is missing."""

    def prepare(self, progress: Progress) -> None:
        """Write configuration (and anything else needed) before the first start."""

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def check(self) -> str | None:
        """None when healthy, else a short reason."""
        raise NotImplementedError

    def after_healthy(self, progress: Progress) -> None:
        """Idempotent set-up that needs the running service."""

    def refresh(self, progress: Progress) -> None:
        """Bring a service that was already running up to date with the packaged config."""


class Kafka(Service):
    """One Kafka node (broker and KRaft controller in one process).

    The single-broker stack (``brokers == 1``) is service ``kafka`` with its folders in
    ``<state>/kafka`` and a standalone controller. Node ``n`` of a cluster of ``brokers`` is
    service ``kafka-<n>`` with ``<state>/kafka-<n>/{data,logs}``; every node is a voter of
    a static controller quorum, and Kafka's own topics get 3 copies with 2 in sync.
    """

    start_timeout = 120.0  # JVM start on a busy 2-core machine, first start includes format
    stop_timeout = 30.0  # controlled shutdown flushes logs and snapshots
    heap = "1g"

    def __init__(
        self, settings: Settings, paths: StatePaths, node: int = 1, brokers: int = 1
    ) -> None:
        super().__init__(settings, paths)
        check_brokers(brokers)
        if not 1 <= node <= brokers:
            raise StackError(f"kafka: node {node} of a {brokers}-broker cluster does not exist")
        self.node = node
        self.brokers = brokers
        self.name = "kafka" if brokers == 1 else f"kafka-{node}"
        if brokers > 1:
            self.heap = "512m"  # three JVMs share a small machine

    @property
    def ports(self) -> list[int]:
        return list(broker_ports(self.settings, self.brokers)[self.node - 1])

    @property
    def folder(self) -> Path:
        return self.paths.root / self.name

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def logs_dir(self) -> Path:
        return self.folder / "logs"

    @property
    def server_properties(self) -> Path:
        return self.paths.conf / self.name / "server.properties"

    @property
    def log4j_properties(self) -> Path:
        return self.paths.conf / self.name / "log4j2.properties"

    @property
    def marker(self) -> str:
        return str(self.server_properties)

    def extra_logs(self) -> list[Path]:
        return [self.logs_dir / "server.log"]

    def require_tools(self) -> None:
        _require("java", "openjdk-17-jre-headless")
        if self.brokers > 1 and self.secure:
            raise StackError(
                "stack: kafka_security = sasl_ssl runs a single broker only; use "
                "ARCBEAT_KAFKA_SECURITY=plaintext for a local cluster (--brokers > 1)"
            )

    def prepare(self, progress: Progress) -> None:
        src = package_dir() / "kafka"
        kport, cport = self.ports
        for folder in (self.data_dir, self.logs_dir, self.server_properties.parent):
            folder.mkdir(parents=True, exist_ok=True)
        text = render_template(
            src / "server.properties",
            kafka_port=kport,
            controller_port=cport,
            data_dir=self.data_dir,
        )
        if self.brokers > 1:
            text = set_properties(text, self.cluster_properties(), "# ---- cluster (arcbeat)")
        scram: list[str] = []
        if self.secure:
            root = self.paths.root
            folder = kafka_security.secrets_dir(root)
            kafka_security.ensure_certificates(folder)
            passwords = ensure_passwords(folder, users_of(self.settings))
            text += kafka_security.local_server_properties(
                kport, cport, folder, passwords[ADMIN_USER]
            )
            scram = [scram_argument(u, p) for u, p in passwords.items()]
        self.server_properties.write_text(text)
        self.server_properties.chmod(0o600)  # holds the admin password in sasl_ssl mode
        shutil.copyfile(src / "log4j2.properties", self.log4j_properties)
        ensure_jars(self.paths, progress)
        self._format(progress, scram)

    def cluster_properties(self) -> dict[str, str | None]:
        """What node ``n`` of a multi-broker cluster changes in the packaged template."""
        voters = ",".join(
            f"{i}@{LOOPBACK}:{controller}"
            for i, (_, controller) in enumerate(broker_ports(self.settings, self.brokers), 1)
        )
        copies = str(min(3, self.brokers))
        in_sync = "2" if self.brokers >= 3 else "1"
        return {
            "node.id": str(self.node),
            # a static quorum: every node is a voter (3 nodes: one may be down)
            "controller.quorum.bootstrap.servers": None,
            "controller.quorum.voters": voters,
            "default.replication.factor": copies,
            "min.insync.replicas": in_sync,
            "offsets.topic.replication.factor": copies,
            "transaction.state.log.replication.factor": copies,
            "transaction.state.log.min.isr": in_sync,
            "share.coordinator.state.topic.replication.factor": copies,
            "share.coordinator.state.topic.min.isr": in_sync,
        }

    @property
    def secure(self) -> bool:
        return self.settings.stack.kafka_security == "sasl_ssl"

    def client_options(self) -> dict[str, object]:
        """How the stack itself talks to this broker (admin over SASL_SSL when secure)."""
        if not self.secure:
            return {}
        return client_options(kafka_security.admin_settings(self.settings, self.paths.root).kafka)

    def _java(self, heap: str) -> list[str]:
        return [
            _require("java", "openjdk-17-jre-headless"),
            f"-Xmx{heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_properties}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp",
            f"{self.paths.jars}/*",
        ]

    def format_argv(self, cluster_id: str) -> list[str]:
        """The storage format command (without the SCRAM users).

        ``--cluster-id=<id>`` in one argument: an id is never read as an option, whatever
        character it starts with.
        """
        quorum = ["--standalone"] if self.brokers == 1 else []  # cluster: static voters
        return [
            *self._java("256m"),
            "kafka.tools.StorageTool",
            "format",
            *quorum,
            f"--cluster-id={cluster_id}",
            "-c",
            str(self.server_properties),
        ]

    def _format(self, progress: Progress, scram: list[str]) -> None:
        data = self.data_dir
        if (data / "meta.properties").exists():
            return
        if self.brokers == 1:
            cluster_id = new_cluster_id()
        else:
            cluster_id = record_cluster(self.paths, self.brokers)
        progress(
            f"{self.name}: formatting storage in {data} (cluster id {cluster_id}, first start)"
        )
        argv = self.format_argv(cluster_id)
        shown = " ".join(argv) + (f" --add-scram <{len(scram)} users, redacted>" if scram else "")
        for arg in scram:
            argv += ["--add-scram", arg]
        with self.log.open("ab") as log:
            log.write(f"\n=== formatting: {shown}\n".encode())
            log.flush()
            try:
                rc = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=180,
                    check=False,
                ).returncode
            except subprocess.TimeoutExpired:
                rc = -1
        if rc != 0:
            raise StackError(
                f"{self.name}: formatting the storage failed (exit {rc}).\n"
                f"log: {self.log} (last lines below)\n{tail(self.log)}"
            )

    def argv(self) -> list[str]:
        return [*self._java(self.heap), "kafka.Kafka", str(self.server_properties)]

    def check(self) -> str | None:
        port = self.ports[0]
        if not port_open(port):
            return f"nothing listens on {LOOPBACK}:{port}"
        options = self.client_options()
        node = self.node if self.brokers > 1 else None
        return run_sync(
            lambda: kafka_metadata(f"{LOOPBACK}:{port}", timeout=5.0, node=node, **options)
        )

    def after_healthy(self, progress: Progress) -> None:
        if not self.secure:
            return
        options = self.client_options()
        bootstrap = f"{LOOPBACK}:{self.ports[0]}"
        folder = kafka_security.secrets_dir(self.paths.root)
        try:
            added, n = run_sync(lambda: grant_principals(bootstrap, options, self.settings, folder))
        except KafkaAdminError as exc:
            raise StackError(str(exc)) from exc
        if added:
            progress(f"kafka: SCRAM users added: {', '.join(added)}")
        progress(
            f"kafka: SASL_SSL on {self.address}, {n} ACLs for prefix "
            f"{self.settings.kafka.topic_prefix!r}; CA and passwords in {folder}"
        )


async def kafka_metadata(
    bootstrap: str, timeout: float, node: int | None = None, **options: object
) -> str | None:
    """None if a metadata request to ``bootstrap`` succeeds and lists a broker (``node``:
    lists that node, i.e. it has joined its cluster)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="arcbeat-stack",
        request_timeout_ms=int(timeout * 1000),
        **options,
    )
    try:
        await admin.start()
        info = await admin.describe_cluster()
    except Exception as exc:
        return f"metadata request to {bootstrap} failed: {exc!r}"
    finally:
        await close_quietly(admin)
    brokers = {int(b["node_id"]) for b in info.get("brokers") or ()}
    if not brokers:
        return f"metadata from {bootstrap} lists no broker yet"
    if node is not None and node not in brokers:
        return f"node {node} has not joined its cluster yet (brokers up: {sorted(brokers)})"
    return None


@dataclass(frozen=True)
class ClusterReport:
    """Partition health of a Kafka cluster, as one metadata request sees it."""

    brokers: tuple[int, ...]  # node ids of the brokers up
    partitions: int
    under_replicated: int  # fewer replicas in sync than assigned
    under_min_isr: int  # fewer in sync than min.insync.replicas: acks=all writes fail
    offline: int  # no leader
    leaders: Counter[int] = field(default_factory=Counter)  # node -> partitions it is the leader of
    lagging: Counter[int] = field(default_factory=Counter)  # node -> of them under-replicated

    def as_dict(self) -> dict[str, Any]:
        return {
            "brokers": list(self.brokers),
            "partitions": self.partitions,
            "under_replicated": self.under_replicated,
            "under_min_isr": self.under_min_isr,
            "offline": self.offline,
        }

    def summary(self) -> str:
        return (
            f"{len(self.brokers)} broker(s) up {list(self.brokers)}, {self.partitions} "
            f"partitions, {self.under_replicated} under-replicated, {self.offline} offline"
            + (f", {self.under_min_isr} below min.insync.replicas" if self.under_min_isr else "")
        )


async def cluster_report(bootstrap: str, timeout: float = 10.0, **options: object) -> ClusterReport:
    """Leaders, in-sync replicas and under-replicated partitions of every topic."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="arcbeat-stack",
        request_timeout_ms=int(timeout * 1000),
        **options,
    )
    try:
        await asyncio.wait_for(admin.start(), timeout)
        info = await admin.describe_cluster()
        topics = await admin.describe_topics()
        names = [str(t["topic"]) for t in topics if int(t["error_code"]) == 0]
        configs = (
            await admin.describe_configs(
                [
                    ConfigResource(ConfigResourceType.TOPIC, n, {"min.insync.replicas": None})
                    for n in names
                ]
            )
            if names
            else []
        )
    finally:
        await close_quietly(admin)
    min_isr: dict[str, int] = {}
    for response in configs:
        for res in response.to_object().get("resources", []):
            for entry in res.get("config_entries", []):
                if entry["config_names"] == "min.insync.replicas" and entry["config_value"]:
                    min_isr[str(res["resource_name"])] = int(entry["config_value"])
    leaders: Counter[int] = Counter()
    lagging: Counter[int] = Counter()
    total = under = below = offline = 0
    for t in topics:
        if int(t["error_code"]) != 0:
            continue
        for part in t["partitions"]:
            total += 1
            leader = int(part["leader"])
            isr = len(part["isr"])
            if leader < 0:
                offline += 1
            else:
                leaders[leader] += 1
            if isr < len(part["replicas"]):
                under += 1
                if leader >= 0:
                    lagging[leader] += 1
            if isr < min_isr.get(str(t["topic"]), 1):
                below += 1
    brokers = tuple(sorted(int(b["node_id"]) for b in info.get("brokers") or ()))
    return ClusterReport(brokers, total, under, below, offline, leaders, lagging)


def ensure_jars(paths: StatePaths, progress: Progress) -> None:
    """Fill the Kafka jar cache with Maven, only when it is missing or the POM changed."""
    pom = (package_dir() / "kafka" / "pom.xml").read_bytes()
    digest = hashlib.sha256(pom).hexdigest()
    stamp = paths.jars / ".pom.sha256"
    if stamp.is_file() and stamp.read_text().strip() == digest and any(paths.jars.glob("*.jar")):
        return
    mvn = _require("mvn", "maven")
    progress(f"kafka: resolving the Kafka jars with Maven into {paths.jars} (once per POM change)")
    # Maven works on a copy so it never writes next to the installed package.
    work = paths.conf / "kafka" / "maven"
    work.mkdir(parents=True, exist_ok=True)
    (work / "pom.xml").write_bytes(pom)
    tmp = paths.root / "jars.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    log = paths.log("maven")
    argv = [
        mvn,
        "-q",
        "-B",
        "-Dstyle.color=never",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}",
        "-f",
        str(work / "pom.xml"),
    ]
    with log.open("ab") as out:
        try:
            rc = subprocess.run(
                argv,
                cwd=work,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=1200,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            rc = -1
    if rc != 0 or not any(tmp.glob("*.jar")):
        raise StackError(
            f"kafka: resolving the jars with Maven failed (exit {rc}); Maven Central must be "
            f"reachable on the first start.\nlog: {log} (last lines below)\n{tail(log)}"
        )
    if paths.jars.is_symlink():
        paths.jars.unlink()
    shutil.rmtree(paths.jars, ignore_errors=True)
    tmp.rename(paths.jars)
    stamp.write_text(digest + "\n")
    progress(f"kafka: {len(list(paths.jars.glob('*.jar')))} jars cached in {paths.jars}")


class Prometheus(Service):
    name = "prometheus"

    @property
    def ports(self) -> list[int]:
        return [_url_port("prometheus_url", self.settings.stack.prometheus_url, 9090)]

    @property
    def config(self) -> Path:
        return self.paths.conf / "prometheus.yml"

    @property
    def marker(self) -> str:
        return str(self.config)

    def require_tools(self) -> None:
        _require("prometheus", "prometheus")

    def prepare(self, progress: Progress) -> None:
        src = package_dir() / "prometheus"
        am_port = _url_port("alertmanager_url", self.settings.stack.alertmanager_url, 9093)
        self.config.write_text(
            render_prometheus_config(
                (src / "prometheus.yml").read_text(), src, self.ports[0], am_port
            )
        )

    def argv(self) -> list[str]:
        return [
            _require("prometheus", "prometheus"),
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.paths.root / 'prometheus' / 'data'}",
            f"--web.listen-address={self.address}",
            "--web.enable-lifecycle",
        ]

    def check(self) -> str | None:
        return http_check(f"http://{self.address}/-/ready")

    def refresh(self, progress: Progress) -> None:
        reload_config(self, progress)


def render_prometheus_config(text: str, src_dir: Path, prom_port: int, am_port: int) -> str:
    """The packaged prometheus.yml with rule_files made absolute and ports from the settings."""
    out, rules = re.subn(r"^(\s*-\s*)rules/", rf"\g<1>{src_dir}/rules/", text, flags=re.M)
    for needle, port in (("127.0.0.1:9093", am_port), ("127.0.0.1:9090", prom_port)):
        if f'"{needle}"' not in out:
            raise StackError(f'{src_dir}/prometheus.yml: expected the target "{needle}"')
        out = out.replace(f'"{needle}"', f'"{LOOPBACK}:{port}"')
    if not rules:
        raise StackError(f"{src_dir}/prometheus.yml: expected rule_files entries under rules/")
    return out


def reload_config(svc: Service, progress: Progress) -> None:
    """Re-render the config of a running Prometheus/Alertmanager and POST /-/reload.

    Keeps a long-lived local stack in step with edited rules and routes: every `stack up`
    refreshes them. A config the server rejects fails with the server's reason.
    """
    svc.prepare(progress)
    status, body = http_post(f"http://{svc.address}/-/reload", {})
    if status != 200:
        raise StackError(
            f"{svc.name}: reloading its configuration failed (HTTP {status}): {body.strip()}\n"
            f"log: {svc.log}"
        )
    progress(f"{svc.name}: configuration reloaded")


class Alertmanager(Service):
    name = "alertmanager"

    @property
    def ports(self) -> list[int]:
        return [_url_port("alertmanager_url", self.settings.stack.alertmanager_url, 9093)]

    @property
    def config(self) -> Path:
        return self.paths.conf / "alertmanager" / "alertmanager.yml"

    @property
    def marker(self) -> str:
        return str(self.config)

    def require_tools(self) -> None:
        _require("prometheus-alertmanager", "prometheus-alertmanager")

    def prepare(self, progress: Progress) -> None:
        # Copy the whole folder: the config may name template files next to it.
        src = package_dir() / "alertmanager"
        if not (src / "alertmanager.yml").is_file():
            raise StackError(f"alertmanager: configuration {src / 'alertmanager.yml'} is missing")
        for f in src.iterdir():
            if f.is_file():
                shutil.copyfile(f, self.config.parent / f.name)

    def argv(self) -> list[str]:
        return [
            _require("prometheus-alertmanager", "prometheus-alertmanager"),
            f"--config.file={self.config}",
            f"--storage.path={self.paths.root / 'alertmanager' / 'data'}",
            f"--web.listen-address={self.address}",
            "--cluster.listen-address=",  # single node: no gossip port
        ]

    def check(self) -> str | None:
        return http_check(f"http://{self.address}/-/ready")

    def refresh(self, progress: Progress) -> None:
        reload_config(self, progress)


class InfluxDB(Service):
    name = "influxdb"

    @property
    def ports(self) -> list[int]:
        return [
            _url_port("influx_url", self.settings.influx.url, 8086),
            self.settings.stack.influx_rpc_port,
        ]

    @property
    def config(self) -> Path:
        return self.paths.conf / "influxdb.conf"

    @property
    def marker(self) -> str:
        return str(self.config)

    def require_tools(self) -> None:
        _require("influxd", "influxdb")

    def prepare(self, progress: Progress) -> None:
        base = self.paths.root / "influxdb"
        text = render_template(
            package_dir() / "influxdb" / "influxdb.conf",
            rpc_bind=f"{LOOPBACK}:{self.ports[1]}",
            http_bind=self.address,
            meta_dir=base / "meta",
            data_dir=base / "data",
            wal_dir=base / "wal",
        )
        self.config.write_text(text)

    def argv(self) -> list[str]:
        return [_require("influxd", "influxdb"), "-config", str(self.config)]

    def env(self) -> dict[str, str]:
        # INFLUXDB_* variables override the config file in 1.x: keep the stack's own values.
        return {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_")}

    def check(self) -> str | None:
        return http_check(f"http://{self.address}/ping", expect=204)

    def after_healthy(self, progress: Progress) -> None:
        db = self.settings.influx.db
        quoted = db.replace("\\", "\\\\").replace('"', '\\"')
        status, body = http_post(
            f"http://{self.address}/query", {"q": f'CREATE DATABASE "{quoted}"'}
        )
        if status != 200 or '"error"' in body:
            raise StackError(
                f"influxdb: CREATE DATABASE {db!r} failed (HTTP {status}): {body.strip()}\n"
                f"log: {self.log}"
            )
        progress(f"influxdb: database {db!r} ready")


def build_services(settings: Settings, paths: StatePaths, brokers: int = 1) -> list[Service]:
    """The services in start order (Kafka first: it takes longest to come up)."""
    return [
        *(Kafka(settings, paths, node, brokers) for node in range(1, brokers + 1)),
        Prometheus(settings, paths),
        Alertmanager(settings, paths),
        InfluxDB(settings, paths),
    ]
