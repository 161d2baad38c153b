"""docker-compose.yml run for real with podman-compose.

- ``podman-compose config`` of the users' file (every profile) and of the file with the
  local-stack override (deploy/compose/local-stack.override.yml): interpolated, merged, and
  naming only real settings. Needs podman-compose and podman, no service.
- ``podman-compose up`` with the override: ``topics``, two workers, ``history`` and the
  simulator, all from the image (tests/support/image.py), on the host network and the local
  stack's Kafka and InfluxDB, under this run's own project name, topic prefix, InfluxDB
  database and ports (166xx). Both workers become ready, the image's health check passes in
  each, and transitions reach InfluxDB; then ``down`` removes everything. About a minute, the
  image build aside; the measured timings are printed (``pytest -s``).

The official third-party images (apache/kafka, prom/prometheus, prom/alertmanager, influxdb:2,
grafana/grafana) cannot be pulled here: the full file is checked by ``config`` only.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from arcbeat.deploy.settings import SETTINGS, Settings
from arcbeat.deploy.stack import Stack
from tests.support.image import arcbeat_image
from tests.support.influx import Influx
from tests.support.kafka import delete_topics
from tests.support.net import http_get, ports_free
from tests.support.paths import REPO
from tests.support.podman import podman, podman_env
from tests.support.progress import sayer
from tests.support.waiting import wait_for

say = sayer("compose")
OVERRIDE = "deploy/compose/local-stack.override.yml"
ARCBEAT_SERVICES = {"topics", "worker", "worker-2", "history", "simulate"}
THIRD_PARTY = {"kafka", "prometheus", "alertmanager", "influxdb", "grafana"}
SIM_MACHINES = 600  # default timing: 600 machines connect over 300 s, two a second


def compose(
    *args: str, env: Mapping[str, str] | None = None, project: str | None = None, timeout: float
) -> subprocess.CompletedProcess[str]:
    """``podman-compose [-p project] args`` in the repository; fails the test on exit != 0."""
    exe = shutil.which("podman-compose")
    if exe is None:
        pytest.fail(
            "podman-compose is not installed (pip install -e '.[dev]' installs it)", pytrace=False
        )
    cmd = [exe, *(("-p", project) if project else ()), *args]
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        env={**podman_env(), **(env or {})},
        text=True,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
            f"{proc.stderr[-3000:]}",
            pytrace=False,
        )
    return proc


def _config(*files: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    args = [a for f in files for a in ("-f", f)]
    out = compose(*args, "--profile", "demo", "config", env=env, timeout=60).stdout
    doc = yaml.safe_load(out)
    assert isinstance(doc, dict), out
    return doc


def _env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_podman_compose_config_of_the_users_file() -> None:
    doc = _config("docker-compose.yml")
    services = doc["services"]
    assert set(services) == ARCBEAT_SERVICES - {"worker-2"} | THIRD_PARTY
    # the credentials' documented defaults, interpolated
    assert _env_of(services["worker"])["ARCBEAT_INFLUX_TOKEN"] == "arcbeat-dev-token"
    assert _env_of(services["influxdb"])["DOCKER_INFLUXDB_INIT_PASSWORD"] == "arcbeat-dev-password"
    for name in ("topics", "worker", "history", "simulate"):
        assert services[name]["image"] == "arcbeat:dev"
        assert services[name]["build"]["context"] == str(REPO)


def test_podman_compose_config_with_the_local_stack_override() -> None:
    env = {
        "LOCAL_STACK_PREFIX": "cfg-test",
        "LOCAL_STACK_WEB_PORT": "16600",
        "LOCAL_STACK_HISTORY_PORT": "16604",
        "LOCAL_STACK_INFLUX_DB": "cfg_test",
    }
    services = _config("docker-compose.yml", OVERRIDE, env=env)["services"]
    # the third-party services are left out (profile "official-images")
    assert set(services) == ARCBEAT_SERVICES
    known = {s.env for s in SETTINGS.values()}
    for name, spec in services.items():
        assert spec["network_mode"] == "host", name
        for key in ("ports", "expose", "depends_on"):
            assert not spec.get(key), f"{name}: {key} left from docker-compose.yml"
        service_env = _env_of(spec)
        assert {k for k in service_env if k.startswith("ARCBEAT_")} <= known, name
        settings = Settings.load(env=service_env, toml_path="")
        assert settings.kafka.bootstrap == "127.0.0.1:9092"
        assert settings.kafka.topic_prefix == settings.kafka.app_id == "cfg-test"
        assert settings.influx.api == "v1" and settings.influx.db == "cfg_test"
        assert (settings.worker.web_host, settings.worker.web_port) == ("127.0.0.1", 16600)
        assert settings.influx.history_port == 16604
    assert "healthcheck" not in services["worker"]  # the image's own: it finds the port
    assert services["worker"]["command"] == ["arcbeat", "worker", "--id", "0"]
    assert services["worker-2"]["command"] == ["arcbeat", "worker", "--id", "1"]
    assert services["simulate"]["profiles"] == ["demo"]
    capacity = _env_of(services["history"])["ARCBEAT_CAPACITY_SOURCE_URL"]
    assert capacity == "http://127.0.0.1:16600"


# ---- podman-compose up with the override --------------------------------------------------


def _free_166xx(n: int) -> int:
    """A base port in 16600-16699 with ``n`` free ports from it (not the defaults 6066-6070,
    which the shared stack's users run on)."""
    offset = random.randrange(0, 100 - n)  # two runs at once rarely try the same block first
    for base in sorted(range(16600, 16700 - n), key=lambda b: (b - 16600 - offset) % 100):
        if ports_free(base, n):
            return base
    raise AssertionError("no free block of ports in 16600-16699")


@dataclass
class ComposeRun:
    project: str
    env: dict[str, str]
    files: tuple[str, ...] = ("-f", "docker-compose.yml", "-f", OVERRIDE, "--profile", "demo")
    timings: dict[str, float] = field(default_factory=dict)

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return compose(*self.files, *args, env=self.env, project=self.project, timeout=timeout)

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def logs(self) -> str:
        out = []
        for service in sorted(ARCBEAT_SERVICES):
            proc = podman("logs", "--tail", "30", self.container(service), check=False)
            out.append(f"--- {service} ---\n{proc.stdout}{proc.stderr}")
        return "\n".join(out)

    def remove_leftovers(self) -> list[str]:
        """Remove every container of the project `down` left, if any; their ids."""
        label = f"label=io.podman.compose.project={self.project}"
        ids = podman("ps", "-a", "-q", "--filter", label, check=False).stdout.split()
        if ids:
            podman("rm", "-f", *ids, check=False)
        return ids


@pytest.fixture
def compose_run(stack: Stack) -> Iterator[ComposeRun]:
    image = arcbeat_image()
    tag = uuid.uuid4().hex[:8]
    prefix = f"cmp-{tag}"
    port = _free_166xx(5)  # worker 0, worker 1, history at + 4
    env = {
        "LOCAL_STACK_IMAGE": image,
        "LOCAL_STACK_PREFIX": prefix,
        "LOCAL_STACK_WEB_PORT": str(port),
        "LOCAL_STACK_HISTORY_PORT": str(port + 4),
        "LOCAL_STACK_INFLUX_DB": prefix.replace("-", "_"),
        "LOCAL_STACK_SIM_MACHINES": str(SIM_MACHINES),
    }
    run = ComposeRun(f"arcbeat-test-{tag}", env)
    try:
        yield run
    finally:
        t0 = time.monotonic()
        left: list[str] = []
        try:
            run("down", "-t", "10", timeout=180)
        finally:
            run.timings["down"] = time.monotonic() - t0
            left = run.remove_leftovers()
            delete_topics(stack.settings.kafka.bootstrap, (f"{prefix}.", f"{prefix}-"))
            Influx(stack.settings.influx.url, env["LOCAL_STACK_INFLUX_DB"]).drop()
        say("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in run.timings.items()))
        assert not left, f"podman-compose down left containers {left}"


@pytest.mark.services
@pytest.mark.heavy
def test_podman_compose_up_with_the_local_stack_override(
    compose_run: ComposeRun, stack: Stack
) -> None:
    run = compose_run
    env = run.env
    t0 = time.monotonic()
    run("up", "-d")
    run.timings["up -d"] = time.monotonic() - t0
    say(f"{run.project}: up ({run.timings['up -d']:.1f}s); web ports {env['LOCAL_STACK_WEB_PORT']}")
    base = int(env["LOCAL_STACK_WEB_PORT"])
    urls = [f"http://127.0.0.1:{base + i}/readyz" for i in (0, 1)]
    last: dict[str, Any] = {}

    def both_ready() -> bool | None:
        for service in ("worker", "worker-2", "history"):
            state = podman("inspect", "--format", "{{.State.Status}}", run.container(service))
            if state.stdout.strip() != "running":
                raise AssertionError(f"{service} is {state.stdout.strip()}\n{run.logs()}")
        for url in urls:
            try:
                last[url] = http_get(url, timeout=3)
            except OSError as exc:
                last[url] = repr(exc)
        return True if all(last[u][0] == 200 for u in urls) else None

    wait_for(
        "both workers' /readyz 200",
        both_ready,
        timeout=180,
        every=1,
        on_timeout=lambda: f"last answers: {last}\n{run.logs()}",
    )
    run.timings["both workers ready"] = time.monotonic() - t0
    topics = podman("inspect", "--format", "{{.State.ExitCode}}", run.container("topics"))
    assert topics.stdout.strip() == "0", run.logs()
    for service in ("worker", "worker-2", "history", "simulate"):
        proc = podman("healthcheck", "run", run.container(service), check=False)
        assert proc.returncode == 0, f"{service}: {proc.stdout}{proc.stderr}\n{run.logs()}"

    influx = Influx(stack.settings.influx.url, env["LOCAL_STACK_INFLUX_DB"])

    def transitions() -> int | None:
        try:
            rows = influx.rows('SELECT count("transition_id") FROM "transitions"')
        except ValueError:  # no database before the first write
            return None
        n = int(rows[0]["count"]) if rows else 0
        return n if n >= 10 else None

    n = wait_for(
        "10 transitions in InfluxDB", transitions, timeout=90, every=1, on_timeout=run.logs
    )
    run.timings["10 transitions in InfluxDB"] = time.monotonic() - t0
    say(f"{n} transitions in InfluxDB database {influx.db}")
