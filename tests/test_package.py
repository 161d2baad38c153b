"""The installed distribution: its metadata, its one command and its import root."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
# the one list of the package folders: import name -> folder
PACKAGE_DIRS: dict[str, str] = SETUPTOOLS["package-dir"]


def test_distribution_metadata_and_command() -> None:
    dist = importlib.metadata.distribution("arcbeat")
    assert dist.version
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts == {"arcbeat": "arcbeat.deploy.cli:main"}


def test_no_generic_top_level_names_installed(tmp_path: object) -> None:
    # the folders are installed under the arcbeat import root only (checked from a neutral
    # directory: `python -m pytest` puts the checkout itself on sys.path)
    folders = tuple(PACKAGE_DIRS.values())
    code = (
        "import importlib.util as u; "
        f"print([n for n in {folders!r} if u.find_spec(n)]); "
        "print(bool(u.find_spec('arcbeat.streams.decide.status')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=str(tmp_path)
    ).stdout.split("\n")
    assert out[0] == "[]"
    assert out[1] == "True"


def test_every_package_folder_is_an_arcbeat_package() -> None:
    assert all(name.startswith("arcbeat.") for name in PACKAGE_DIRS)
    assert set(PACKAGE_DIRS.values()) == {"streams", "exporters", "dashboards", "deploy", "bench"}


def test_every_sub_package_is_listed_for_the_wheel() -> None:
    on_disk = set()
    for package, folder in PACKAGE_DIRS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            if init.is_relative_to(ROOT / "deploy" / "agent"):
                continue  # the machine agent's own distribution (deploy/agent/pyproject.toml)
            parts = init.parent.relative_to(ROOT / folder).parts
            on_disk.add(".".join((package, *parts)))
    assert set(SETUPTOOLS["packages"]) == on_disk
