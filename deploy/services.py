"""The four services of the local stack: where their files go, how they start, how they are
checked.

Each :class:`Service` knows its ports, its command line, the marker that recognises its process,
how to prepare its configuration under the state folder, and a health check that returns
``None`` when healthy or a short reason when not.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.resources
import os
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template

from aiokafka.admin import AIOKafkaAdminClient
from arcbeat.deploy import kafka_security
from arcbeat.deploy.errors import StackError
from arcbeat.deploy.topics import close_quietly, run_sync
from arcbeat.streams.kafka_client import client_options
from arcbeat.streams.settings import Settings

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
        return cls(Path(settings.state_dir).expanduser().resolve())

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

    def create(self) -> None:
        for sub in (
            "conf/kafka",
            "conf/alertmanager",
            "logs",
            "pids",
            "kafka/data",
            "kafka/logs",
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
    first = settings.kafka_bootstrap.split(",")[0].strip()
    return _url_port("kafka_bootstrap", f"kafka://{first}", 9092)


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
    name = "kafka"
    start_timeout = 120.0  # JVM start on a busy 2-core machine, first start includes format
    stop_timeout = 30.0  # controlled shutdown flushes logs and snapshots
    heap = "1g"

    @property
    def ports(self) -> list[int]:
        return [kafka_port(self.settings), self.settings.kafka_controller_port]

    @property
    def server_properties(self) -> Path:
        return self.paths.conf / "kafka" / "server.properties"

    @property
    def log4j_properties(self) -> Path:
        return self.paths.conf / "kafka" / "log4j2.properties"

    @property
    def marker(self) -> str:
        return str(self.server_properties)

    def extra_logs(self) -> list[Path]:
        return [self.paths.root / "kafka" / "logs" / "server.log"]

    def require_tools(self) -> None:
        _require("java", "openjdk-17-jre-headless")

    def prepare(self, progress: Progress) -> None:
        src = package_dir() / "kafka"
        kport, cport = self.ports
        text = render_template(
            src / "server.properties",
            kafka_port=kport,
            controller_port=cport,
            data_dir=self.paths.root / "kafka" / "data",
        )
        scram: list[str] = []
        if self.secure:
            root = self.paths.root
            folder = kafka_security.secrets_dir(root)
            kafka_security.ensure_certificates(folder)
            passwords = kafka_security.ensure_passwords(
                folder, kafka_security.users_of(self.settings)
            )
            text += kafka_security.local_server_properties(
                kport, cport, folder, passwords[kafka_security.ADMIN_USER]
            )
            scram = [kafka_security.scram_argument(u, p) for u, p in passwords.items()]
        self.server_properties.write_text(text)
        self.server_properties.chmod(0o600)  # holds the admin password in sasl_ssl mode
        shutil.copyfile(src / "log4j2.properties", self.log4j_properties)
        ensure_jars(self.paths, progress)
        self._format(progress, scram)

    @property
    def secure(self) -> bool:
        return self.settings.kafka_security == "sasl_ssl"

    def client_options(self) -> dict[str, object]:
        """How the stack itself talks to this broker (admin over SASL_SSL when secure)."""
        if not self.secure:
            return {}
        return client_options(kafka_security.admin_settings(self.settings, self.paths.root))

    def _java(self, heap: str) -> list[str]:
        return [
            _require("java", "openjdk-17-jre-headless"),
            f"-Xmx{heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_properties}",
            f"-Dkafka.logs.dir={self.paths.root / 'kafka' / 'logs'}",
            "-cp",
            f"{self.paths.jars}/*",
        ]

    def _format(self, progress: Progress, scram: list[str]) -> None:
        data = self.paths.root / "kafka" / "data"
        if (data / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        progress(f"kafka: formatting storage in {data} (cluster id {cluster_id}, first start)")
        argv = [
            *self._java("256m"),
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            cluster_id,
            "-c",
            str(self.server_properties),
        ]
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
                f"kafka: formatting the storage failed (exit {rc}).\n"
                f"log: {self.log} (last lines below)\n{tail(self.log)}"
            )

    def argv(self) -> list[str]:
        return [*self._java(self.heap), "kafka.Kafka", str(self.server_properties)]

    def check(self) -> str | None:
        port = self.ports[0]
        if not port_open(port):
            return f"nothing listens on {LOOPBACK}:{port}"
        options = self.client_options()
        return run_sync(lambda: kafka_metadata(f"{LOOPBACK}:{port}", timeout=5.0, **options))

    def after_healthy(self, progress: Progress) -> None:
        if not self.secure:
            return
        options = self.client_options()
        bootstrap = f"{LOOPBACK}:{self.ports[0]}"
        folder = kafka_security.secrets_dir(self.paths.root)
        added, n = run_sync(
            lambda: kafka_security.grant_principals(bootstrap, options, self.settings, folder)
        )
        if added:
            progress(f"kafka: SCRAM users added: {', '.join(added)}")
        progress(
            f"kafka: SASL_SSL on {self.address}, {n} ACLs for prefix "
            f"{self.settings.topic_prefix!r}; CA and passwords in {folder}"
        )


async def kafka_metadata(bootstrap: str, timeout: float, **options: object) -> str | None:
    """None if a metadata request to ``bootstrap`` succeeds and lists a broker."""
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
    if not info.get("brokers"):
        return f"metadata from {bootstrap} lists no broker yet"
    return None


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
        return [_url_port("prometheus_url", self.settings.prometheus_url, 9090)]

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
        am_port = _url_port("alertmanager_url", self.settings.alertmanager_url, 9093)
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
        return [_url_port("alertmanager_url", self.settings.alertmanager_url, 9093)]

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
            _url_port("influx_url", self.settings.influx_url, 8086),
            self.settings.influx_rpc_port,
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
        db = self.settings.influx_db
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


def build_services(settings: Settings, paths: StatePaths) -> list[Service]:
    """The services in start order (Kafka first: it takes longest to come up)."""
    return [
        Kafka(settings, paths),
        Prometheus(settings, paths),
        Alertmanager(settings, paths),
        InfluxDB(settings, paths),
    ]
