"""The layering of the packages, read from the source (every import, also inside functions).

- ``arcbeat.streams`` (the stream processor) imports nothing of ``arcbeat.exporters``,
  ``arcbeat.deploy``, ``arcbeat.dashboards`` or ``arcbeat.bench``;
- the decisions (``arcbeat.streams.decide``: the contract, the status machine, deadlines,
  maintenance windows, the engine) import nothing of Kafka, aiohttp or I/O, neither themselves
  nor through the arcbeat modules they import, and nothing of the Kafka runtime or the API;
- the Kafka runtime (``arcbeat.streams.kafka``) imports nothing of the API;
- the simulated fleet (``arcbeat.deploy.agents``) uses only the heartbeat contract and the
  settings of ``arcbeat.streams``, and nothing else of arcbeat.

``deploy/agent/`` is not part of this distribution: it is the machine agent's own
(``arcbeat-agent``, import root ``arcbeat_agent``); tests/agent/test_distribution.py checks
its imports.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AGENT_DISTRIBUTION = ROOT / "deploy" / "agent"
PACKAGE_DIRS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"][
    "setuptools"
]["package-dir"]

# Kafka clients, aiohttp, and modules that do network, process or event-loop I/O
IMPURE = (
    "aiokafka",
    "faust",
    "kafka",
    "confluent_kafka",
    "aiohttp",
    "asyncio",
    "socket",
    "ssl",
    "selectors",
    "subprocess",
    "urllib",
    "http",
    "niquests",
    "requests",
    "influxdb_client",
    "prometheus_client",
)


def _modules() -> dict[str, Path]:
    """Every module of the distribution: dotted name -> file."""
    out: dict[str, Path] = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.is_relative_to(AGENT_DISTRIBUTION):
                continue
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join((package, *parts))] = path
    return out


MODULES = _modules()

DECIDE = "arcbeat.streams.decide"
PURE_MODULES = tuple(sorted(m for m in MODULES if m == DECIDE or m.startswith(DECIDE + ".")))


def _imports(module: str) -> Iterator[str]:
    """The absolute names a module imports (relative imports resolved)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            yield name
            # `from arcbeat.streams.decide import records` imports the module ...decide.records
            yield from (f"{name}.{a.name}" for a in node.names if f"{name}.{a.name}" in MODULES)


def _within(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


def test_every_package_folder_is_read() -> None:
    assert set(PACKAGE_DIRS) == {
        "arcbeat.streams",
        "arcbeat.exporters",
        "arcbeat.dashboards",
        "arcbeat.deploy",
        "arcbeat.bench",
    }
    assert {"arcbeat.streams.decide.status", "arcbeat.deploy.cli"} <= set(MODULES)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _within(m, ("arcbeat.streams",))))
def test_streams_never_import_the_outer_packages(module: str) -> None:
    outer = ("arcbeat.exporters", "arcbeat.deploy", "arcbeat.dashboards", "arcbeat.bench")
    assert not [name for name in _imports(module) if _within(name, outer)]


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_modules_import_no_kafka_aiohttp_or_io(module: str) -> None:
    seen: set[str] = set()
    todo = [module]
    found: list[str] = []
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in _imports(current):
            if _within(name, IMPURE):
                found.append(f"{current} imports {name}")
            elif name in MODULES:
                todo.append(name)
    assert not found, found


# what the agents may use of arcbeat, besides their own package
AGENT_NEEDS = (
    "arcbeat.streams.decide.records",
    "arcbeat.streams.decide.resource_ids",
    "arcbeat.streams.decide.timestamps",
    "arcbeat.streams.decide.quoting",
    "arcbeat.streams.decide.identity",
    "arcbeat.streams.settings",
    "arcbeat.streams.kafka.client",
    "arcbeat.streams.decide.partitioner",
)


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if _within(m, ("arcbeat.deploy.agents",)))
)
def test_agents_use_only_the_heartbeat_contract_and_the_settings(module: str) -> None:
    allowed = ("arcbeat.deploy.agents", *AGENT_NEEDS)
    assert not [
        name
        for name in _imports(module)
        if _within(name, ("arcbeat",)) and not _within(name, allowed)
    ]


def test_the_decisions_import_neither_the_kafka_runtime_nor_the_api() -> None:
    assert len(PURE_MODULES) > 5
    runtime = ("arcbeat.streams.kafka", "arcbeat.streams.api", "arcbeat.streams.app")
    assert not [(m, n) for m in PURE_MODULES for n in _imports(m) if _within(n, runtime)]


def test_the_kafka_runtime_does_not_import_the_api() -> None:
    runtime = [m for m in MODULES if _within(m, ("arcbeat.streams.kafka",))]
    assert runtime
    assert not [
        (m, n) for m in runtime for n in _imports(m) if _within(n, ("arcbeat.streams.api",))
    ]


def test_the_status_machine_imports_no_other_arcbeat_module() -> None:
    assert not [n for n in _imports("arcbeat.streams.decide.status") if n.startswith("arcbeat")]


def _cycles(modules: set[str]) -> list[list[str]]:
    """Import cycles among ``modules`` (every import counts, also one inside a function)."""
    graph = {m: {n for n in _imports(m) if n in modules and n != m} for m in modules}
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        order[v] = low[v] = len(order)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(modules):
        if v not in order:
            visit(v)
    return found


def test_deploy_has_no_import_cycle() -> None:
    assert _cycles({m for m in MODULES if _within(m, ("arcbeat.deploy",))}) == []


def test_kafka_administration_needs_neither_the_local_stack_nor_the_worker() -> None:
    admin = [m for m in MODULES if _within(m, ("arcbeat.deploy.kafka_admin",))]
    assert admin
    local = (
        "arcbeat.deploy.stack",
        "arcbeat.deploy.services",
        "arcbeat.deploy.errors",
        "arcbeat.deploy.kafka_security",
        "arcbeat.deploy.worker",
        "arcbeat.deploy.commands",
    )
    assert not [(m, n) for m in admin for n in _imports(m) if _within(n, local)]
