"""Operating system, machine name and paths, with Linux and Windows inputs."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from arcbeat.exporters.capacity.os_rules import os_supported
from arcbeat_agent import platform_info as p
from arcbeat_agent.contract import parse_resource_id, resource_id


@pytest.mark.parametrize(
    ("version", "edition", "server", "expected"),
    [
        ("10.0.17763", "ServerDatacenter", True, "Windows Server 2019 Datacenter"),
        ("10.0.20348", "ServerStandard", True, "Windows Server 2022 Standard"),
        ("10.0.14393", "ServerStandardEval", True, "Windows Server 2016 Standard"),
        ("10.0.26100", "ServerDatacenter", True, "Windows Server 2025 Datacenter"),
        ("6.3.9600", "ServerStandard", True, "Windows Server 2012 R2 Standard"),
        ("6.1.7601", "ServerStandard", True, "Windows Server 2008 R2 Standard"),
        ("10.0.22631", "Professional", False, "Windows 11 Professional"),
        ("10.0.19045", "Enterprise", False, "Windows 10 Enterprise"),
        ("", "", False, "Windows"),
    ],
)
def test_windows_names(version: str, edition: str, server: bool, expected: str) -> None:
    assert p.windows_os(version, edition, server=server) == (expected, version)


def test_windows_names_meet_the_supported_os_list() -> None:
    # what the server's capacity report uses to flag unsupported systems
    for version, edition, ok in (
        ("10.0.17763", "ServerDatacenter", True),
        ("6.3.9600", "ServerStandard", True),
        ("6.1.7601", "ServerStandard", False),
    ):
        name, ver = p.windows_os(version, edition, server=True)
        assert os_supported(name, ver) is ok, name


def test_os_info_on_windows_asks_the_platform_not_os_release(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(platform, "win32_ver", lambda: ("2019Server", "10.0.17763", "", "x"))
    monkeypatch.setattr(platform, "win32_edition", lambda: "ServerDatacenter")
    os_release = tmp_path / "os-release"
    os_release.write_text('NAME="Ubuntu"\nVERSION_ID="22.04"\n')
    assert p.os_info("win32", os_release) == ("Windows Server 2019 Datacenter", "10.0.17763")
    assert p.os_info("linux", os_release) == ("Ubuntu", "22.04")
    assert p.os_type("win32") == "windows"
    assert p.os_type("linux") == "linux"


def test_read_os_release(tmp_path: Path) -> None:
    path = tmp_path / "os-release"
    path.write_text('# c\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n')
    assert p.read_os_release(path) == ("Debian GNU/Linux", "12")
    path.write_text("NAME='SLES'\nVERSION_ID=15\n")
    assert p.read_os_release(path) == ("SLES", "15")
    assert p.read_os_release(tmp_path / "missing") == ("", "")


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [("web-01", "web-01"), ("my host!", "my-host"), ("ümlaut", "mlaut"), ("-.-", "localhost"),
     ("", "localhost"), ("x" * 100, "x" * 64), ("WIN-SRV01", "WIN-SRV01")],
)
def test_machine_name(hostname: str, expected: str) -> None:
    assert p.machine_name(hostname) == expected
    parse_resource_id(resource_id("00000000-0000-0000-0000-000000000000", "rg", expected))


def test_default_paths() -> None:
    win = p.default_paths("win32", {"ProgramData": r"D:\ProgramData"})
    assert str(win.config) == r"D:\ProgramData\arcbeat\agent.toml"
    assert str(win.state_dir) == r"D:\ProgramData\arcbeat\agent"
    assert str(win.log_dir) == r"D:\ProgramData\arcbeat\logs"
    assert str(p.default_paths("win32", {}).config) == r"C:\ProgramData\arcbeat\agent.toml"
    linux = p.default_paths("linux", {})
    assert linux.config == Path("/etc/arcbeat/agent.toml")
    assert linux.state_dir == Path("/var/lib/arcbeat-agent")
