"""The local stack's Prometheus: a client of its HTTP API, and :func:`fast_prometheus`, which
runs it with a test configuration.

The shared Prometheus scrapes and evaluates every 15 s and the alert rules wait ``for:`` up to
15 minutes: :func:`fast_prometheus` reloads it (``/-/reload``) with a copy of its configuration
that scrapes and evaluates every 2 s and loads a copy of deploy/prometheus/rules/*.yml with
every ``for:`` set to ``0s``, and restores the original afterwards.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from arcbeat.deploy import services
from arcbeat.deploy.stack import Stack
from tests.support.net import http, http_json
from tests.support.paths import REPO
from tests.support.waiting import wait_until

RULES_DIR = REPO / "deploy" / "prometheus" / "rules"
WORKER_PORTS = (6066, 6067)  # job "arcbeat" targets of deploy/prometheus/prometheus.yml
HISTORY_PORT = 6070  # job "arcbeat-history"
FAST_INTERVAL = "2s"  # scrape and rule evaluation interval of the test configuration
FAST_SECONDS = 2.0
TEST_CONFIG_MARKER = "# arcbeat observability e2e test configuration"


class Prometheus:
    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    def _api(self, path: str, params: Mapping[str, str]) -> Any:
        doc = http_json(f"{self.base}{path}", params=params, timeout=20)
        if doc.get("status") != "success":
            raise ValueError(f"Prometheus {path} {params}: {doc}")
        return doc["data"]

    def query(self, expr: str, at: float | None = None) -> dict[str, Any]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data: dict[str, Any] = self._api("/api/v1/query", params)
        return data

    def vector(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        data = self.query(expr, at)
        if data["resultType"] != "vector":
            raise ValueError(f"{expr}: expected a vector, got {data['resultType']}")
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> dict[str, Any]:
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        data: dict[str, Any] = self._api("/api/v1/query_range", params)
        return data

    def config_yaml(self) -> str:
        data = self._api("/api/v1/status/config", {})
        return str(data["yaml"])

    def rule_durations(self) -> dict[str, float]:
        """Alert name -> its ``for:`` duration in seconds, as loaded (max over rules)."""
        out: dict[str, float] = {}
        for group in self._api("/api/v1/rules", {"type": "alert"})["groups"]:
            for rule in group["rules"]:
                out[rule["name"]] = max(out.get(rule["name"], 0.0), float(rule["duration"]))
        return out

    def reload(self) -> None:
        status, body = http(f"{self.base}/-/reload", method="POST", body=b"")
        if status != 200:
            raise AssertionError(f"Prometheus /-/reload answered HTTP {status}: {body!r}")


def render_fast_rules(src_dir: Path, dest_dir: Path) -> list[Path]:
    """Copies of the rule files with every ``for:`` set to ``0s`` (nothing else changed)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    for src in sorted(src_dir.glob("*.yml")):
        text, n = re.subn(r"^(\s*)for:\s*\S+\s*$", r"\g<1>for: 0s", src.read_text(), flags=re.M)
        doc = yaml.safe_load(text)  # still valid YAML, same rules
        assert doc["groups"], f"{src}: no rule groups"
        target = dest_dir / src.name
        target.write_text(f"# {src} with every for: set to 0s ({n} rules)\n{text}")
        out.append(target)
    if not out:
        raise AssertionError(f"no rule files in {src_dir}")
    return out


def render_fast_config(original: str, rules_glob: str) -> str:
    """The running configuration with 2 s scrape/evaluation intervals and the test rules."""
    doc = yaml.safe_load(original)
    jobs = {j["job_name"]: j for j in doc.get("scrape_configs", [])}
    for job, port in [("arcbeat", p) for p in WORKER_PORTS] + [("arcbeat-history", HISTORY_PORT)]:
        targets = [t for sc in jobs.get(job, {}).get("static_configs", []) for t in sc["targets"]]
        if f"127.0.0.1:{port}" not in targets:
            raise AssertionError(
                f"the stack's Prometheus configuration does not scrape 127.0.0.1:{port} as job "
                f"{job!r} (targets {targets}); see deploy/prometheus/prometheus.yml"
            )
    glob = doc.setdefault("global", {})
    glob["scrape_interval"] = FAST_INTERVAL
    glob["scrape_timeout"] = FAST_INTERVAL
    glob["evaluation_interval"] = FAST_INTERVAL
    doc["rule_files"] = [rules_glob]
    return f"{TEST_CONFIG_MARKER}; the original is restored when the test ends\n" + yaml.safe_dump(
        doc, sort_keys=False
    )


@contextlib.contextmanager
def fast_prometheus(
    stack: Stack, rules_dir: Path, say: Callable[[str], None]
) -> Iterator[Prometheus]:
    """The stack's Prometheus with the test configuration, restored on exit; ``say``
    reports the restoring."""
    svc = stack.service("prometheus")
    assert isinstance(svc, services.Prometheus)
    config_path = svc.config
    prom = Prometheus(stack.settings.stack.prometheus_url)
    original = config_path.read_text()
    render_fast_rules(RULES_DIR, rules_dir)
    config_path.write_text(render_fast_config(original, str(rules_dir / "*.yml")))
    try:
        prom.reload()
        wait_until(
            "Prometheus to run the 2 s test configuration with for: 0s rules",
            lambda: (
                True
                if f"scrape_interval: {FAST_INTERVAL}" in prom.config_yaml()
                and prom.rule_durations().get("ArcMachineOffline") == 0.0
                else None
            ),
            timeout=20,
        )
        yield prom
    finally:
        if TEST_CONFIG_MARKER in original:  # left behind by a killed run: render it anew
            svc.refresh(say)
        else:
            config_path.write_text(original)
            prom.reload()
        say(f"Prometheus configuration restored ({config_path})")
