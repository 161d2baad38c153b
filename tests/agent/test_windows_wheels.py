"""The agent's dependencies install on Windows: pip finds a win_amd64 wheel (no compiler
needed) for every one of them, for each Python the agent supports there. Needs PyPI: it fails,
saying so, when PyPI cannot be reached."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.paths import REPO

DEPENDENCIES = tomllib.loads((REPO / "deploy" / "agent" / "pyproject.toml").read_text())[
    "project"
]["dependencies"]
UNREACHABLE = ("Could not fetch URL", "NewConnectionError", "Max retries exceeded",
               "Temporary failure in name resolution", "ConnectTimeout", "ProxyError")


@pytest.mark.services
@pytest.mark.parametrize("python", ["3.11", "3.12"])
def test_windows_wheels_exist_for_every_dependency(python: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
         "--platform", "win_amd64", "--only-binary=:all:", "--python-version", python,
         "--implementation", "cp", "-d", str(tmp_path), *DEPENDENCIES],
        capture_output=True, text=True, timeout=600, check=False,
    )
    if proc.returncode != 0 and any(marker in proc.stderr for marker in UNREACHABLE):
        pytest.fail(f"PyPI is unreachable from this machine, so the Windows wheels cannot be "
                    f"checked:\n{proc.stderr[-2000:]}", pytrace=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheels = sorted(p.name for p in tmp_path.iterdir())
    for name in ("aiokafka", "orjson"):
        matching = [w for w in wheels if w.startswith(name + "-")]
        assert matching, wheels
        assert all("win_amd64" in w or w.endswith("-none-any.whl") for w in matching), matching
    assert all(w.endswith(".whl") for w in wheels), wheels  # nothing to build from source
