"""Running the agent as a service: the systemd unit (:mod:`.systemd`) and the Windows service
(:mod:`.windows`, WinSW), each written by ``arcbeat-agent service install``."""

from __future__ import annotations

import shutil
import sys
from importlib import resources
from pathlib import Path


def template(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def agent_executable() -> str:
    """The ``arcbeat-agent`` program of this installation (beside the running Python)."""
    folder = Path(sys.executable).parent
    for name in ("arcbeat-agent", "arcbeat-agent.exe"):
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which("arcbeat-agent")
    return found or str(folder / "arcbeat-agent")


def config_skeleton(secret_dir: str) -> str:
    return template("agent.toml").format(secret_dir=secret_dir)
