"""The agent's distribution: its own pyproject, the one command, aiokafka and orjson only, and
no import between it and the server (the contract is shared by test, not by import)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from tests.support.paths import REPO

AGENT = REPO / "deploy" / "agent"
PYPROJECT = tomllib.loads((AGENT / "pyproject.toml").read_text())
SERVER_FOLDERS = ("streams", "exporters", "dashboards", "deploy", "bench")
SERVER_ONLY = {"faust-streaming", "aiohttp", "grafana-client", "grafana-foundation-sdk",
               "influxdb-client", "prometheus-client", "arcbeat"}


def _name(requirement: str) -> str:
    return re.split(r"[ ;<>=!~\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_project_declares_aiokafka_and_orjson_only() -> None:
    project = PYPROJECT["project"]
    assert project["name"] == "arcbeat-agent"
    assert {_name(r) for r in project["dependencies"]} == {"aiokafka", "orjson"}
    assert project["scripts"] == {"arcbeat-agent": "arcbeat_agent.cli:main"}
    on_disk = {".".join(p.parent.relative_to(AGENT).parts)
               for p in AGENT.rglob("__init__.py") if "build" not in p.parts}
    assert set(PYPROJECT["tool"]["setuptools"]["packages"]) == on_disk


def test_the_installed_distribution_pulls_in_nothing_of_the_server() -> None:
    seen: set[str] = set()
    todo = ["arcbeat-agent"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for requirement in importlib.metadata.requires(name) or []:
            if "extra ==" not in requirement:
                todo.append(_name(requirement))
    assert {"aiokafka", "orjson"} <= seen
    assert not seen & SERVER_ONLY, seen & SERVER_ONLY
    dist = importlib.metadata.distribution("arcbeat-agent")
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts == {"arcbeat-agent": "arcbeat_agent.cli:main"}


def test_the_agent_imports_the_standard_library_aiokafka_and_orjson_only() -> None:
    allowed = set(sys.stdlib_module_names) | {"aiokafka", "orjson", "arcbeat_agent"}
    found = {
        f"{path.relative_to(AGENT)}: {name}"
        for path in (AGENT / "arcbeat_agent").rglob("*.py")
        for name in _imports(path)
        if name not in allowed
    }
    assert not found, found


def test_the_server_never_imports_the_agent() -> None:
    found = [
        str(path.relative_to(REPO))
        for folder in SERVER_FOLDERS
        for path in (REPO / folder).rglob("*.py")
        if not path.is_relative_to(AGENT) and "arcbeat_agent" in _imports(path)
    ]
    assert not found, found
