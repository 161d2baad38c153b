"""What the agent reports about its machine, and where it keeps its files, per platform.

Everything takes its inputs as arguments (defaults read the running system), so Windows
answers are tested on Linux by feeding Windows values.
"""

from __future__ import annotations

import os
import platform
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Final

from arcbeat_agent.contract import MAX_OS_NAME, MAX_OS_VERSION

_NAME_BAD: Final = re.compile(r"[^A-Za-z0-9_.-]+")

# Windows Server releases by build number (the kernel version is 10.0 from 2016 on)
_SERVER_BUILDS: Final = ((26100, "2025"), (20348, "2022"), (17763, "2019"), (14393, "2016"))
_SERVER_KERNELS: Final = {"6.3": "2012 R2", "6.2": "2012", "6.1": "2008 R2", "6.0": "2008"}


def is_windows(platform_name: str = sys.platform) -> bool:
    return platform_name.startswith("win")


def os_type(platform_name: str = sys.platform) -> str:
    return "windows" if is_windows(platform_name) else "linux"


def machine_name(hostname: str | None = None) -> str:
    """A valid machineName from the host name: bad characters become ``-``, at most 64."""
    name = _NAME_BAD.sub("-", hostname if hostname is not None else socket.gethostname())
    name = name.strip("-.")[:64].rstrip("-.")
    return name or "localhost"


def read_os_release(path: str | Path = "/etc/os-release") -> tuple[str, str]:
    """(NAME, VERSION_ID) from os-release (shell-style ``KEY="value"`` lines); empty if absent."""
    values: dict[str, str] = {}
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "", ""
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value.replace('\\"', '"').replace("\\\\", "\\")
    return values.get("NAME", "")[:MAX_OS_NAME], values.get("VERSION_ID", "")[:MAX_OS_VERSION]


def windows_os(version: str, edition: str, *, server: bool) -> tuple[str, str]:
    """(osName, osVersion) of Windows from ``platform.win32_ver()[1]`` (``10.0.17763``) and
    ``platform.win32_edition()`` (``ServerDatacenter``): e.g. ``Windows Server 2019
    Datacenter``, ``10.0.17763``, the names the worker's supported-OS list knows."""
    parts = version.split(".")
    kernel = ".".join(parts[:2])
    build = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0
    flavour = edition.removeprefix("Server").removesuffix("Eval").removesuffix("Core")
    if server or edition.startswith("Server"):
        release = _SERVER_KERNELS.get(kernel, "")
        if kernel == "10.0":
            release = next((year for first, year in _SERVER_BUILDS if build >= first), "")
        name = " ".join(p for p in ("Windows Server", release, flavour) if p)
    elif kernel == "10.0":
        name = "Windows 11" if build >= 22000 else "Windows 10"
        name = f"{name} {flavour}" if flavour else name
    else:
        name = "Windows"
    return name[:MAX_OS_NAME], version[:MAX_OS_VERSION]


def os_info(platform_name: str = sys.platform, os_release: str | Path = "/etc/os-release") -> (
    tuple[str, str]
):
    """(osName, osVersion) of this machine: os-release on Linux, the Windows API on Windows."""
    if is_windows(platform_name):
        _release, version, _csd, product_type = platform.win32_ver()
        edition = platform.win32_edition() or ""
        # product type: "Multiprocessor Free" on both; the edition tells a server apart
        del product_type
        return windows_os(version, edition, server=edition.startswith("Server"))
    return read_os_release(os_release)


@dataclass(frozen=True, slots=True)
class Paths:
    """Where the agent keeps its files on this platform."""

    config: Path  # the configuration file
    state_dir: Path  # state.json (identity after connect, last heartbeat, last error)
    log_dir: Path  # service logs (Windows; systemd keeps them in the journal)


def default_paths(
    platform_name: str = sys.platform, environ: dict[str, str] | None = None
) -> Paths:
    env = os.environ if environ is None else environ
    if is_windows(platform_name):
        data = env.get("ProgramData") or env.get("PROGRAMDATA") or r"C:\ProgramData"
        root = PureWindowsPath(data)
        base = root / "arcbeat"
        return Paths(
            Path(str(base / "agent.toml")),
            Path(str(base / "agent")),
            Path(str(base / "logs")),
        )
    return Paths(
        Path("/etc/arcbeat/agent.toml"),
        Path("/var/lib/arcbeat-agent"),
        Path("/var/log/arcbeat-agent"),
    )
