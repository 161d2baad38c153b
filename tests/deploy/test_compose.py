"""docker-compose.yml is consistent with itself, the repository and the deploy/ configs.

No Docker engine here, and the official images cannot be pulled: the file is checked by reading
it (PyYAML). test_compose_run.py has podman-compose read it, and runs its arcbeat services on the
local stack.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from arcbeat.deploy.settings import SETTINGS, Settings
from tests.support.paths import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PROM_COMPOSE = yaml.safe_load((REPO / "deploy/prometheus/prometheus.compose.yml").read_text())
PROM_LOCAL = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())

OFFICIAL_IMAGES = {
    "kafka": "apache/kafka",
    "prometheus": "prom/prometheus",
    "alertmanager": "prom/alertmanager",
    "grafana": "grafana/grafana",
}
ARCBEAT_SERVICES = ("topics", "worker", "history", "simulate")


def _interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with the environment unset: the documented default."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def _env(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): _interpolate(str(v)) for k, v in env.items()}


def _container_ports(service: str) -> set[int]:
    """Ports a service listens on inside the network: `expose` and the container side of `ports`."""
    spec = SERVICES[service]
    ports = {int(str(p)) for p in spec.get("expose", [])}
    for mapping in spec.get("ports", []):
        container = str(mapping).rsplit(":", 1)[-1].split("/")[0]
        ports.add(int(container.split("-")[0]))
    return ports


def _published(service: str) -> dict[int, int]:
    """host port -> container port, for `ip:host:container` mappings."""
    result = {}
    for mapping in SERVICES[service].get("ports", []):
        parts = str(mapping).split(":")
        assert len(parts) == 3 and parts[0] == "127.0.0.1", (
            f"{service}: publish {mapping!r} on loopback only, as 127.0.0.1:host:container"
        )
        host, container = parts[1].split("-")[0], parts[2]
        result[int(host)] = int(container)
    return result


def _volumes(service: str) -> list[tuple[str, str]]:
    out = []
    for vol in SERVICES[service].get("volumes", []):
        if isinstance(vol, dict):
            out.append((str(vol["source"]), str(vol["target"])))
        else:
            source, target = str(vol).split(":")[:2]
            out.append((source, target))
    return out


def _targets(config: dict[str, Any], job: str) -> list[str]:
    [scrape] = [s for s in config["scrape_configs"] if s["job_name"] == job]
    targets = [t for sc in scrape.get("static_configs", []) for t in sc["targets"]]
    for sd in scrape.get("dns_sd_configs", []):
        targets += [f"{name}:{sd['port']}" for name in sd["names"]]
    return targets


def _alertmanager_targets(config: dict[str, Any]) -> list[str]:
    return [
        t
        for am in config["alerting"]["alertmanagers"]
        for sc in am["static_configs"]
        for t in sc["targets"]
    ]


def _port_of(url: str) -> int:
    port = urllib.parse.urlsplit(url).port
    assert port is not None, url
    return port


def test_every_expected_service_is_defined() -> None:
    expected = {"kafka", "prometheus", "alertmanager", "influxdb", "grafana", *ARCBEAT_SERVICES}
    assert expected <= set(SERVICES)


@pytest.mark.parametrize("service", sorted(OFFICIAL_IMAGES))
def test_official_images_pinned(service: str) -> None:
    image = SERVICES[service]["image"]
    name, _, tag = image.partition(":")
    assert name == OFFICIAL_IMAGES[service]
    assert tag and tag != "latest", f"{service}: pin a version, got {image!r}"


def test_influxdb_is_pinned_to_2() -> None:
    # influxdb:latest moved to InfluxDB 3, which has no setup mode or DBRP mappings.
    assert SERVICES["influxdb"]["image"] == "influxdb:2"


def test_arcbeat_services_build_from_the_dockerfile() -> None:
    commands = {s: SERVICES[s]["command"] for s in ARCBEAT_SERVICES}
    assert commands["worker"] == ["arcbeat", "worker"]
    assert commands["history"] == ["arcbeat", "history"]
    assert commands["simulate"] == ["arcbeat", "simulate"]
    assert commands["topics"] == ["arcbeat", "topics"]
    assert SERVICES["simulate"]["profiles"] == ["demo"]
    for service in ARCBEAT_SERVICES:
        assert SERVICES[service]["build"] == "."
    dockerfile = (REPO / "Dockerfile").read_text()
    # the base is a build argument, python:3.11-slim unless given (docs/containers.md)
    assert re.search(r"^ARG BASE=python:3\.11-slim\s*$", dockerfile, re.M)
    froms = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    assert froms and all(f == "${BASE}" for f in froms), froms
    assert re.search(r"pip install -r /tmp/requirements\.txt(\s|$)", dockerfile)
    assert re.search(r"pip install --no-deps --no-build-isolation \.(\s|$)", dockerfile)
    assert re.search(r"^USER 10001:10001\s*$", dockerfile, re.M)
    assert re.search(
        r"^HEALTHCHECK .*CMD \[\"python\", \"-m\", \"arcbeat\.deploy\.healthcheck\"\]",
        dockerfile,
        re.M | re.S,
    )


def test_the_image_gets_the_package_folders_of_pyproject(tmp_path: Path) -> None:
    """The Dockerfile's first stage, run on this checkout: it gathers pyproject.toml, README.md
    and exactly the folders of pyproject's package-dir, and requirements.txt: the build
    backend and the dependencies, installed in a layer of their own."""
    dockerfile = (REPO / "Dockerfile").read_text()
    [gather] = re.findall(r"^RUN python3 -c '(.+)'$", dockerfile, re.M)
    src = tmp_path / "src"
    subprocess.run(
        [sys.executable, "-c", gather.replace('"/src/', f'"{src}/')], cwd=REPO, check=True
    )
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    folders = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    assert {p.name for p in src.iterdir()} == {
        "pyproject.toml",
        "README.md",
        "requirements.txt",
        *folders,
    }
    requirements = (src / "requirements.txt").read_text().splitlines()
    assert requirements == [
        *pyproject["build-system"]["requires"],
        *pyproject["project"]["dependencies"],
    ]
    assert (src / "deploy" / "commands" / "__init__.py").is_file()


def test_mounted_host_paths_exist_and_named_volumes_are_declared() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    for service in SERVICES:
        for source, target in _volumes(service):
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{service}: mounts {source}, which is missing"
            else:
                assert source in declared, f"{service}: volume {source!r} is not declared"
            assert target.startswith("/"), f"{service}: mount target {target!r}"
    grafana = dict(_volumes("grafana"))
    assert grafana["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert "./dashboards" in grafana


def test_depends_on_names_existing_services() -> None:
    for service, spec in SERVICES.items():
        for dep in spec.get("depends_on", []):
            assert dep in SERVICES, f"{service} depends on unknown service {dep}"


def test_arcbeat_environment_names_real_settings() -> None:
    known = {s.env for s in SETTINGS.values()}
    for service in SERVICES:
        for key in _env(service):
            if key.startswith("ARCBEAT_"):
                assert key in known, f"{service}: {key} is not an arcbeat setting"
    # ... and their values load (a typo in a duration or port would fail at start).
    for service in ARCBEAT_SERVICES:
        Settings.load(env=_env(service), toml_path=os.devnull)


def test_arcbeat_services_reach_kafka_influxdb_prometheus_by_service_name() -> None:
    kafka_env = _env("kafka")
    for service in ARCBEAT_SERVICES:
        env = _env(service)
        host, port = env["ARCBEAT_KAFKA_BOOTSTRAP"].split(":")
        assert host == "kafka"
        assert f"://kafka:{port}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
        assert f"://:{port}" in kafka_env["KAFKA_LISTENERS"]
        influx = urllib.parse.urlsplit(env["ARCBEAT_INFLUX_URL"])
        assert influx.hostname == "influxdb" and influx.port in _container_ports("influxdb")
        assert env["ARCBEAT_INFLUX_API"] == "v2"  # InfluxDB 2: /api/v2/write with the token
        assert env["ARCBEAT_INFLUX_TOKEN"] == _env("influxdb")["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
        assert env["ARCBEAT_INFLUX_ORG"] == _env("influxdb")["DOCKER_INFLUXDB_INIT_ORG"]
        assert env["ARCBEAT_INFLUX_DB"] == _env("influxdb")["DOCKER_INFLUXDB_INIT_BUCKET"]
        for name, svc in (("PROMETHEUS", "prometheus"), ("ALERTMANAGER", "alertmanager")):
            url = urllib.parse.urlsplit(env[f"ARCBEAT_{name}_URL"])
            assert url.hostname == svc and url.port in _container_ports(svc)


def test_kafka_is_a_single_kraft_node() -> None:
    env = _env("kafka")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    node = env["KAFKA_NODE_ID"]
    controller_port = re.search(r"CONTROLLER://:(\d+)", env["KAFKA_LISTENERS"])
    assert controller_port is not None
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node}@kafka:{controller_port.group(1)}"
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR",
    ):
        assert env[key] == "1", key
    # The host listener is published on 9092 and advertised as localhost:9092.
    external = re.search(r"EXTERNAL://:(\d+)", env["KAFKA_LISTENERS"])
    assert external is not None
    assert _published("kafka") == {9092: int(external.group(1))}
    assert "EXTERNAL://localhost:9092" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_published_ports_match_the_local_stack_defaults() -> None:
    """The host CLI with default settings talks to compose exactly as to `arcbeat stack`."""
    defaults = Settings()
    assert 9092 in _published("kafka")
    assert defaults.kafka.bootstrap.endswith(":9092")
    assert _published("prometheus") == {_port_of(defaults.stack.prometheus_url): 9090}
    assert _published("alertmanager") == {_port_of(defaults.stack.alertmanager_url): 9093}
    assert _published("influxdb") == {_port_of(defaults.influx.url): 8086}
    assert _published("worker") == {defaults.worker.web_port: defaults.worker.web_port}
    assert _published("history") == {defaults.influx.history_port: defaults.influx.history_port}


def test_prometheus_compose_targets_are_compose_services_with_matching_ports() -> None:
    mounts = dict(_volumes("prometheus"))
    assert mounts["./deploy/prometheus/prometheus.compose.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["./deploy/prometheus/rules"] == "/etc/prometheus/rules"
    assert PROM_COMPOSE["rule_files"] == ["rules/*.yml"]  # relative to /etc/prometheus
    for scrape in PROM_COMPOSE["scrape_configs"]:
        for target in _targets(PROM_COMPOSE, scrape["job_name"]):
            host, port = target.rsplit(":", 1)
            if host == "localhost":  # Prometheus scraping itself
                assert scrape["job_name"] == "prometheus"
                continue
            assert host in SERVICES, f"job {scrape['job_name']}: no compose service {host}"
            assert int(port) in _container_ports(host), f"{target}: port not exposed by {host}"
    assert _targets(PROM_COMPOSE, "arcbeat") == [f"worker:{_env('worker')['ARCBEAT_WEB_PORT']}"]
    assert _targets(PROM_COMPOSE, "arcbeat-history") == [
        f"history:{_env('history')['ARCBEAT_HISTORY_PORT']}"
    ]
    [am] = _alertmanager_targets(PROM_COMPOSE)
    host, port = am.split(":")
    assert host == "alertmanager" and int(port) in _container_ports("alertmanager")


def test_local_and_compose_prometheus_configs_agree() -> None:
    jobs = [s["job_name"] for s in PROM_LOCAL["scrape_configs"]]
    assert jobs == [s["job_name"] for s in PROM_COMPOSE["scrape_configs"]]
    assert PROM_LOCAL["rule_files"] == PROM_COMPOSE["rule_files"]
    assert PROM_LOCAL["global"]["scrape_interval"] == PROM_COMPOSE["global"]["scrape_interval"]
    defaults = Settings()
    workers = [f"127.0.0.1:{defaults.worker.web_port + i}" for i in range(4)]
    assert _targets(PROM_LOCAL, "arcbeat") == workers
    assert _targets(PROM_LOCAL, "arcbeat-history") == [f"127.0.0.1:{defaults.influx.history_port}"]
    assert _alertmanager_targets(PROM_LOCAL) == [
        f"127.0.0.1:{_port_of(defaults.stack.alertmanager_url)}"
    ]
    assert _targets(PROM_LOCAL, "prometheus") == [
        f"127.0.0.1:{_port_of(defaults.stack.prometheus_url)}"
    ]


def test_alertmanager_mounts_its_compose_config_and_reaches_the_host() -> None:
    mounts = dict(_volumes("alertmanager"))
    [source] = [s for s, t in mounts.items() if t == "/etc/alertmanager/alertmanager.yml"]
    config = (REPO / source).read_text()
    yaml.safe_load(config)
    if "host.docker.internal" in config:
        assert "host.docker.internal:host-gateway" in SERVICES["alertmanager"]["extra_hosts"]
    assert "--cluster.listen-address=" in SERVICES["alertmanager"]["command"]


def test_influxdb_setup_and_dbrp_init_script() -> None:
    env = _env("influxdb")
    assert env["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    assert env["DOCKER_INFLUXDB_INIT_ORG"] == env["DOCKER_INFLUXDB_INIT_BUCKET"] == "arcbeat"
    assert len(env["DOCKER_INFLUXDB_INIT_PASSWORD"]) >= 8  # influx setup refuses shorter
    assert env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"] == "arcbeat-dev-token"  # documented default
    inits = [
        (s, t) for s, t in _volumes("influxdb") if t.startswith("/docker-entrypoint-initdb.d/")
    ]
    assert len(inits) == 1
    source, target = inits[0]
    script = REPO / source
    # The image runs executable *.sh files with run-parts.
    assert target.endswith(".sh") and os.access(script, os.X_OK)
    text = script.read_text()
    assert text.startswith("#!/bin/bash")
    assert "influx v1 dbrp create" in text and "--rp autogen" in text and "--default" in text


def test_compose_credentials_are_documented() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    for var in re.findall(r"\$\{([A-Z0-9_]+):-", text):
        assert re.search(rf"^#\s+{var}\b", text, re.M), f"document {var} in the header"


def _provisioning(kind: str) -> list[dict[str, Any]]:
    folder = REPO / "deploy/grafana/provisioning" / kind
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    assert files, f"no provisioning files in {folder}"
    return [yaml.safe_load(f.read_text()) for f in files]


def test_grafana_provisioning_matches_the_compose_services() -> None:
    env = _env("grafana")
    for config in _provisioning("datasources"):
        for ds in config["datasources"]:
            url = urllib.parse.urlsplit(ds["url"])
            assert url.hostname in SERVICES, f"datasource {ds['name']}: no service {url.hostname}"
            assert url.port in _container_ports(str(url.hostname)), ds["url"]
            text = yaml.safe_dump(ds)
            for var in re.findall(r"\$\{([A-Za-z0-9_]+)\}", text):
                assert var in env, f"datasource {ds['name']} needs ${var} in grafana's environment"
            if ds["type"] == "prometheus" and "timeInterval" in ds.get("jsonData", {}):
                interval = PROM_COMPOSE["global"]["scrape_interval"]
                assert ds["jsonData"]["timeInterval"] == interval
            if ds["type"] == "influxdb":
                assert ds["jsonData"]["dbName"] == _env("influxdb")["DOCKER_INFLUXDB_INIT_BUCKET"]
    mounts = dict(_volumes("grafana"))
    for config in _provisioning("dashboards"):
        for provider in config["providers"]:
            assert provider["options"]["path"] == mounts["./dashboards"]


def test_the_build_context_leaves_out_state_tests_and_docs() -> None:
    """The local stack's state (Kafka jars, data) would make the context gigabytes; tests and
    docs would start a new build on every change."""
    ignored = {
        line.strip().rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {"state", ".git", "tests", "docs"} <= ignored
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert not ignored & set(setuptools["package-dir"].values())
    assert not ignored & {"pyproject.toml", "README.md"}
