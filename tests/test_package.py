"""The installed distribution: its metadata, its one command and its import root."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys


def test_distribution_metadata_and_command() -> None:
    dist = importlib.metadata.distribution("arcbeat")
    assert dist.version
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts == {"arcbeat": "arcbeat.deploy.cli:main"}


def test_no_generic_top_level_names_installed(tmp_path: object) -> None:
    # the folders are installed under the arcbeat import root only (checked from a neutral
    # directory: `python -m pytest` puts the checkout itself on sys.path)
    code = (
        "import importlib.util as u; "
        "print([n for n in ('streams', 'exporters', 'dashboards', 'deploy', 'bench') "
        "if u.find_spec(n)]); print(bool(u.find_spec('arcbeat.streams.status')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=str(tmp_path)
    ).stdout.split("\n")
    assert out[0] == "[]"
    assert out[1] == "True"
