"""The Kubernetes manifests (deploy/kubernetes/), checked offline.

The base and the example overlay are rendered with kustomize (installed by deploy/install.sh)
and every object is validated against the Kubernetes schemas kubernetes-validate ships
(strict: an unknown field is an error), for the oldest and the newest version it knows. Then:
every ``ARCBEAT_*`` variable is a real setting and the settings load; the workers are a
StatefulSet whose pod name gives the worker id and whose peers resolve it through a headless
Service; probes, non-root and read-only root filesystem, a PodDisruptionBudget of one, every
Secret and ConfigMap referenced exists in the overlay, and the Prometheus scrape jobs pass
``promtool check config``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from arcbeat.deploy.settings import SETTINGS, Settings
from arcbeat.streams.api.auth import parse_tokens
from arcbeat.streams.decide.identity import load_bindings
from arcbeat.streams.kafka import ticks
from arcbeat.streams.settings import read_secret
from tests.support.paths import REPO

ROOT = REPO / "deploy" / "kubernetes"
KUSTOMIZATIONS = {"base": ROOT / "base", "example": ROOT / "overlays" / "example"}
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
# variables arcbeat reads that are not settings
OTHER_VARIABLES = {"ARCBEAT_CONFIG"}

Doc = dict[str, Any]


def render(name: str) -> list[Doc]:
    kustomize = shutil.which("kustomize")
    assert kustomize, "kustomize is missing: bash deploy/install.sh builds it"
    done = subprocess.run(
        [kustomize, "build", str(KUSTOMIZATIONS[name])],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module", params=sorted(KUSTOMIZATIONS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Doc]]:
    return request.param, render(request.param)


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name)]
    assert len(found) == 1, (kind, name, [d["metadata"]["name"] for d in docs])
    return found[0]


def containers(docs: list[Doc]) -> list[Doc]:
    return [
        c
        for d in docs
        if d["kind"] in ("StatefulSet", "Deployment")
        for c in d["spec"]["template"]["spec"]["containers"]
    ]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_is_valid(rendered: tuple[str, list[Doc]], version: str) -> None:
    _, docs = rendered
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} on {version}: {exc.message}")


def test_every_arcbeat_variable_is_a_setting_and_the_settings_load() -> None:
    docs = render("example")
    known = {s.env for s in SETTINGS.values()} | OTHER_VARIABLES
    config = one(docs, "ConfigMap", "arcbeat-settings")["data"]
    named = set(config)
    for c in containers(docs):
        named |= {e["name"] for e in c.get("env", []) if e["name"].startswith("ARCBEAT_")}
    assert named, "no ARCBEAT_* variable found"
    unknown = sorted(v for v in named if v.startswith("ARCBEAT_") and v not in known)
    assert not unknown, f"not settings (docs/settings.md): {unknown}"

    worker = containers([one(docs, "StatefulSet", "arcbeat-worker")])[0]
    env = dict(config)
    pod = "arcbeat-worker-2"
    for e in worker["env"]:
        if "value" in e:
            env[e["name"]] = e["value"].replace("$(POD_NAME)", pod)
    env.pop("ARCBEAT_INFLUX_TOKEN_FILE")  # read at load: a Secret mounted in the pod
    s = Settings.load(env=env, toml_path="/nonexistent/arcbeat.toml")
    assert s.worker.ordinal == 2 and s.worker.advertised_host == f"{pod}.arcbeat-worker"
    assert s.worker.web_host == "0.0.0.0" and s.worker.api_tokens_file
    assert s.kafka.replication_factor == 3 and s.kafka.min_insync_replicas == 2
    assert s.kafka.startup_deadline == 120


def test_workers_statefulset_services_and_disruption_budget() -> None:
    docs = render("example")
    sts = one(docs, "StatefulSet", "arcbeat-worker")
    headless = one(docs, "Service", "arcbeat-worker")
    api = one(docs, "Service", "arcbeat-api")
    assert sts["spec"]["serviceName"] == headless["metadata"]["name"]
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    for svc in (headless, api):
        assert svc["spec"]["selector"].items() <= labels.items()
    assert sts["spec"]["replicas"] == 4  # the overlay's
    pdb = one(docs, "PodDisruptionBudget", "arcbeat-worker")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    one(docs, "Deployment", "arcbeat-history")
    one(docs, "Service", "arcbeat-history")


def test_probes_resources_and_security() -> None:
    docs = render("example")
    for d in docs:
        if d["kind"] not in ("StatefulSet", "Deployment"):
            continue
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, d["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            where = f"{d['metadata']['name']}/{c['name']}"
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, where
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], where
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in c, (where, probe)
            start = c["startupProbe"]
            assert start["periodSeconds"] * start["failureThreshold"] >= 120, where
            assert c["resources"]["limits"]["memory"], where
            assert c["resources"]["requests"]["cpu"], where
    worker = containers([one(docs, "StatefulSet", "arcbeat-worker")])[0]
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_every_secret_and_config_map_referenced_exists() -> None:
    docs = render("example")
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for d in docs:
        if d["kind"] not in ("StatefulSet", "Deployment"):
            continue
        pod = d["spec"]["template"]["spec"]
        for v in pod.get("volumes", []):
            if "secret" in v:
                assert ("Secret", v["secret"]["secretName"]) in names, v
        for c in pod["containers"]:
            for ref in c.get("envFrom", []):
                assert ("ConfigMap", ref["configMapRef"]["name"]) in names, ref
            mounted = {m["name"] for m in c["volumeMounts"]}
            assert mounted <= {v["name"] for v in pod["volumes"]}, d["metadata"]["name"]


def test_the_prometheus_scrape_jobs_pass_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: bash deploy/install.sh installs prometheus"
    docs = render("base")
    text = one(docs, "ConfigMap", "arcbeat-prometheus-scrape")["data"]["prometheus-scrape.yml"]
    token = tmp_path / "token"
    token.write_text("a-read-token\n")
    config = yaml.safe_load(text.replace("/etc/prometheus/secrets/arcbeat/token", str(token)))
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"arcbeat", "arcbeat-history"}  # the names the alert rules use
    assert jobs["arcbeat"]["authorization"]["credentials_file"] == str(token)
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [promtool, "check", "config", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_example_secrets_have_the_formats_arcbeat_reads() -> None:
    """The placeholders are in the real formats, so the example starts once they are replaced
    by real values of the same shape."""
    secrets = KUSTOMIZATIONS["example"] / "secrets"
    tokens = parse_tokens((secrets / "api-tokens").read_text(), "api-tokens")
    capacity = (secrets / "capacity-token").read_text().strip()
    assert tokens, "no token"
    assert read_secret("", str(secrets / "capacity-token"), "capacity_token") == capacity
    assert capacity in (secrets / "api-tokens").read_text(), "the capacity token is not a token"
    assert ticks.read_keys(str(secrets / "tick-keys"))
    assert load_bindings(secrets / "identity-bindings.toml")
    for path in secrets.iterdir():
        assert "REPLACE" in path.read_text(), f"{path.name}: an example secret must say REPLACE"
