"""The Windows service: a WinSW 2.x service definition (XML) beside a renamed ``WinSW.exe``.

Why WinSW and not a pywin32 ``ServiceFramework`` class: pywin32 would add a Windows-only
dependency of some 10 MB with a post-install step (``pywin32_postinstall``) and a service host
(``pythonservice.exe``) that must find the right virtual environment; WinSW is one signed
executable that runs the unchanged ``arcbeat-agent run`` under the service control manager,
restarts it on failure, rotates its log and stops it with Ctrl-C (which the agent handles as a
clean stop, see :mod:`arcbeat_agent.signals`). The agent's dependencies stay aiokafka and
orjson on every platform.
"""

from __future__ import annotations

from pathlib import Path, PureWindowsPath
from typing import Final
from xml.sax.saxutils import escape

from arcbeat_agent.errors import ConfigError
from arcbeat_agent.platform_info import default_paths
from arcbeat_agent.service import config_skeleton, template

SERVICE_ID: Final = "arcbeat-agent"
WINSW_VERSION: Final = "2.12.0"


def render_winsw(executable: str, config: str, state_dir: str, log_dir: str) -> str:
    for name, value in (("executable", executable), ("config", config)):
        if not (PureWindowsPath(value).is_absolute() or Path(value).is_absolute()):
            raise ConfigError(f"service install: the {name} path {value!r} must be absolute "
                              r"(such as C:\ProgramData\arcbeat\agent.toml)")
    return template("arcbeat-agent.xml").format(
        executable=escape(executable), config=escape(config), state_dir=escape(state_dir),
        log_dir=escape(log_dir),
    )


def _base(base: Path | None) -> Path:
    return base if base is not None else Path(str(default_paths("win32").config.parent))


def install(executable: str, base: Path | None = None) -> list[str]:
    """Write ``%ProgramData%\\arcbeat\\arcbeat-agent.xml`` and a configuration skeleton
    (``base`` replaces ``%ProgramData%\\arcbeat``)."""
    base = _base(base)
    xml_path = base / f"{SERVICE_ID}.xml"
    config_path = base / "agent.toml"
    for folder in (base, base / "agent", base / "logs"):  # WinSW starts the agent in agent/
        folder.mkdir(parents=True, exist_ok=True)
    xml_path.write_text(
        render_winsw(executable, str(config_path), str(base / "agent"), str(base / "logs")),
        encoding="utf-8",
    )
    lines = [f"wrote {xml_path}"]
    if config_path.exists():
        lines.append(f"kept {config_path} (it exists)")
    else:
        config_path.write_text(config_skeleton(f"{base}\\"), encoding="utf-8")
        lines.append(f"wrote {config_path} (a skeleton: set [kafka] bootstrap)")
    exe = base / f"{SERVICE_ID}.exe"
    lines += [
        "next steps (an elevated PowerShell):",
        f"  1. download WinSW-x64.exe {WINSW_VERSION} from "
        f"https://github.com/winsw/winsw/releases and save it as {exe}",
        f"  2. icacls {base} /inheritance:r /grant:r SYSTEM:(OI)(CI)F "
        "Administrators:(OI)(CI)F   (secrets readable by SYSTEM and administrators only)",
        f"  3. edit {config_path}, then: arcbeat-agent check",
        "  4. arcbeat-agent connect --location REGION --resource-id ID",
        f"  5. {exe} install; {exe} start",
    ]
    return lines


def uninstall(base: Path | None = None) -> list[str]:
    """Remove the service file, and the configuration if it is the untouched skeleton."""
    base = _base(base)
    exe = base / f"{SERVICE_ID}.exe"
    xml_path = base / f"{SERVICE_ID}.xml"
    lines = [f"first: {exe} stop; {exe} uninstall"]
    if xml_path.exists():
        xml_path.unlink()
        lines.append(f"removed {xml_path}")
    config_path = base / "agent.toml"
    if config_path.exists():
        if config_path.read_text(encoding="utf-8") == config_skeleton(f"{base}\\"):
            config_path.unlink()
            lines.append(f"removed {config_path} (the unchanged skeleton)")
        else:
            lines.append(f"kept {config_path} (edited)")
    return lines
