"""The Dockerfile, built with podman and run: a worker, the history exporter (both with a
read-only root filesystem) and a simulated fleet, each a container of the image on the host
network, on the local stack's Kafka and InfluxDB (this run's own topic prefix, consumer group,
ports and InfluxDB database).

The image is built on the local Debian base (no registry here; tests/support/image.py), in
podman's layer cache between runs: about 30 s the first time, a few seconds after. The run
itself takes about 40 s. A missing podman or stack fails, never skips.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from arcbeat.deploy.stack import Stack
from tests.support.image import Containers, arcbeat_image, containers, image_size, inspect, say
from tests.support.influx import Influx
from tests.support.kafka import delete_topics, read_topic
from tests.support.net import free_port_block, http_get
from tests.support.observed import Observed
from tests.support.podman import podman
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.services, pytest.mark.heavy]

MACHINES = 30
# compressed time: every machine connects within 2 s of the simulator's start
TIMING = {
    "ARCBEAT_HEARTBEAT_INTERVAL": "2",
    "ARCBEAT_DISCONNECT_AFTER": "6",
    "ARCBEAT_CHECK_INTERVAL": "0.5",
    "ARCBEAT_SESSION_TIMEOUT": "10",
}


@pytest.fixture(scope="module")
def image() -> str:
    return arcbeat_image()


def test_the_image_runs_as_non_root_with_a_python_healthcheck(image: str) -> None:
    doc = inspect(image)
    config = doc["Config"]
    assert isinstance(config, dict)
    assert config["User"] == "10001:10001"
    health = doc.get("Healthcheck")  # the OCI format would drop it: build --format docker
    assert isinstance(health, dict)
    assert health["Test"] == ["CMD", "python", "-m", "arcbeat.deploy.healthcheck"]
    out = podman("run", "--rm", "--health-interval=disable", image, "id", "-u").stdout
    assert out.strip() == "10001"
    say(f"image size: {image_size(image) / 1e6:.0f} MB")


def _container_env(stack: Stack, name: str, port: int, history_port: int) -> dict[str, str]:
    s = stack.settings
    return {
        "ARCBEAT_KAFKA_BOOTSTRAP": s.kafka.bootstrap,
        "ARCBEAT_TOPIC_PREFIX": name,
        "ARCBEAT_APP_ID": name,
        "ARCBEAT_WEB_HOST": "127.0.0.1",
        "ARCBEAT_WEB_PORT": str(port),
        "ARCBEAT_HISTORY_PORT": str(history_port),
        "ARCBEAT_INFLUX_URL": s.influx.url,
        "ARCBEAT_INFLUX_API": "v1",
        "ARCBEAT_INFLUX_DB": name.replace("-", "_"),
        "ARCBEAT_INFLUX_FLUSH_INTERVAL": "0.5",
        **TIMING,
    }


@pytest.fixture
def deployment(stack: Stack, image: str) -> Iterator[tuple[Containers, dict[str, str]]]:
    name = f"img-{uuid.uuid4().hex[:8]}"
    port = free_port_block(3)  # worker API, history /metrics
    env = _container_env(stack, name, port, port + 2)
    influx = Influx(stack.settings.influx.url, env["ARCBEAT_INFLUX_DB"])
    try:
        with containers(image, env) as running:
            yield running, env
    finally:
        delete_topics(stack.settings.kafka.bootstrap, (f"{name}.", f"{name}-"))
        influx.drop()


def test_worker_history_and_simulator_from_the_image(
    deployment: tuple[Containers, dict[str, str]], stack: Stack
) -> None:
    running, env = deployment
    name = env["ARCBEAT_TOPIC_PREFIX"]
    worker_url = f"http://127.0.0.1:{env['ARCBEAT_WEB_PORT']}"
    t0 = time.monotonic()

    # the topics, by the project's own `arcbeat topics`, from the image
    out = running.run(["arcbeat", "topics"])
    assert f"{name}.heartbeats" in out, out
    # as on Kubernetes with readOnlyRootFilesystem: only a tmpfs is writable, and the worker
    # keeps its data folder there
    read_only = ["--read-only", "--tmpfs", "/tmp"]
    worker = running.start(
        f"{name}-worker",
        ["arcbeat", "worker", "--loglevel", "info"],
        env={"ARCBEAT_DATA_DIR": "/tmp/arcbeat-worker"},
        options=read_only,
    )
    history = running.start(f"{name}-history", ["arcbeat", "history"], options=read_only)

    def ready() -> bool | None:
        for container in (worker, history):
            if not running.running(container):
                raise AssertionError(f"{container} exited\n{running.logs()}")
        try:
            status, _ = http_get(worker_url + "/readyz", timeout=3)
        except OSError:
            return None
        return True if status == 200 else None

    wait_for("the worker's /readyz 200", ready, timeout=120, every=1, on_timeout=running.logs)
    say(f"worker ready {time.monotonic() - t0:.1f}s after the start")
    # the image's HEALTHCHECK finds which command runs and probes it
    # (the worker's /readyz, the history exporter's /healthz)
    for container in (worker, history):
        code, said = running.healthcheck(container)
        assert code == 0, f"{container}: healthcheck {code}: {said}\n{running.logs()}"

    simulator = running.start(
        f"{name}-sim",
        ["arcbeat", "simulate", "-n", str(MACHINES), "--seed", "3", "--duration", "6"],
    )
    code, said = running.healthcheck(simulator)
    assert code == 0, f"the simulator's healthcheck {code}: {said}"
    rc = podman("wait", simulator, timeout=120).stdout.strip()
    assert rc == "0", f"simulator exited {rc}\n{running.logs()}"

    def connected() -> Observed | None:
        seen = Observed.parse(read_topic(stack.settings.kafka.bootstrap, f"{name}.status"))
        keys = {t.key for t in seen.all() if t.status == "Connected"}
        return seen if len(keys) >= MACHINES else None

    seen = wait_for(
        f"a Connected transition of each of the {MACHINES} machines on {name}.status",
        connected,
        timeout=60,
        every=1,
        on_timeout=running.logs,
    )
    say(f"{seen.records} status records {time.monotonic() - t0:.1f}s after the start")

    influx = Influx(stack.settings.influx.url, env["ARCBEAT_INFLUX_DB"])

    def in_influx() -> int | None:
        try:
            rows = influx.rows('SELECT count("transition_id") FROM "transitions"')
        except ValueError:  # the database is created by the first write
            return None
        n = int(rows[0]["count"]) if rows else 0
        return n if n >= MACHINES else None

    n = wait_for(
        "the transitions in InfluxDB", in_influx, timeout=60, every=1, on_timeout=running.logs
    )
    say(f"{n} transitions in InfluxDB {time.monotonic() - t0:.1f}s after the start")
    code, said = running.healthcheck(worker)
    assert code == 0, said
