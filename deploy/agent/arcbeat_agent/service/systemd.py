"""The systemd unit: rendering, ``service install`` and ``service uninstall`` on Linux."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Final

from arcbeat_agent.errors import AgentError, ConfigError
from arcbeat_agent.service import config_skeleton, template

UNIT_NAME: Final = "arcbeat-agent.service"
SERVICE_USER: Final = "arcbeat-agent"
UNIT_DIR: Final = Path("/etc/systemd/system")
CONFIG_FILE: Final = Path("/etc/arcbeat/agent.toml")


def render_unit(exec_start: str, config: str, user: str = SERVICE_USER) -> str:
    for name, value in (("executable", exec_start), ("config", config)):
        if not value.startswith("/") or any(c.isspace() for c in value):
            raise ConfigError(f"service install: the {name} path {value!r} must be absolute and "
                              "contain no spaces (systemd's ExecStart)")
    return template("arcbeat-agent.service").format(exec_start=exec_start, config=config,
                                                     user=user)


def _ensure_user(user: str, run: Callable[..., object]) -> bool:
    """Create the system user of the service when it does not exist; True if created."""
    try:
        pwd.getpwnam(user)
        return False
    except KeyError:
        pass
    if shutil.which("useradd") is None:
        raise AgentError(f"service install: no user {user!r} and no useradd to create it; "
                         f"create a system user {user!r} and run install again")
    run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
         "/var/lib/arcbeat-agent", "--shell", "/usr/sbin/nologin", user], check=True)
    return True


def install(
    exec_start: str,
    *,
    root: Path = Path("/"),
    user: str = SERVICE_USER,
    create_user: bool = True,
    run: Callable[..., object] = subprocess.run,
) -> list[str]:
    """Write the unit and (if absent) a configuration skeleton; returns what to tell the user.

    ``root`` writes under another root (tests, image builds); the paths inside the unit stay
    the machine's own."""
    unit_path = root / UNIT_DIR.relative_to("/") / UNIT_NAME
    config_path = root / CONFIG_FILE.relative_to("/")
    lines: list[str] = []
    if create_user and _ensure_user(user, run):
        lines.append(f"created the system user {user}")
    unit_path.parent.mkdir(parents=True, exist_ok=True)
    unit_path.write_text(render_unit(exec_start, str(CONFIG_FILE), user), encoding="utf-8")
    lines.append(f"wrote {unit_path}")
    if config_path.exists():
        lines.append(f"kept {config_path} (it exists)")
    else:
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(config_skeleton(f"{CONFIG_FILE.parent}/"), encoding="utf-8")
        os.chmod(config_path, 0o640)
        if create_user:
            shutil.chown(config_path, "root", user)
        lines.append(f"wrote {config_path} (a skeleton: set [kafka] bootstrap)")
    lines += [
        "next steps:",
        f"  1. edit {CONFIG_FILE}: [kafka] bootstrap and credentials (secret files: "
        f"chmod 640, group {user})",
        "  2. arcbeat-agent check",
        "  3. arcbeat-agent connect --location REGION --resource-id ID   (onboards this machine)",
        "  4. systemctl daemon-reload && systemctl enable --now arcbeat-agent",
        "  5. arcbeat-agent show   (journalctl -u arcbeat-agent for the log)",
    ]
    return lines


def uninstall(*, root: Path = Path("/")) -> list[str]:
    """Remove the unit, and the configuration if it is still the untouched skeleton (an
    edited configuration is kept: nothing the user wrote is lost)."""
    unit_path = root / UNIT_DIR.relative_to("/") / UNIT_NAME
    config_path = root / CONFIG_FILE.relative_to("/")
    lines = ["first: systemctl disable --now arcbeat-agent (if it runs)"]
    if unit_path.exists():
        unit_path.unlink()
        lines.append(f"removed {unit_path}")
    else:
        lines.append(f"{unit_path} was not installed")
    if config_path.exists():
        if config_path.read_text(encoding="utf-8") == config_skeleton(f"{CONFIG_FILE.parent}/"):
            config_path.unlink()
            lines.append(f"removed {config_path} (the unchanged skeleton)")
        else:
            lines.append(f"kept {config_path} (edited; remove it yourself if no longer needed)")
    lines.append("kept /var/lib/arcbeat-agent (the state; `arcbeat-agent disconnect` first "
                 "removes the machine from arcbeat)")
    lines.append("then: systemctl daemon-reload")
    return lines
