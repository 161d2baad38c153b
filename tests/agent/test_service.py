"""The service definitions: the systemd unit (checked by systemd-analyze), ``service install``
and ``uninstall``, and the WinSW service file of Windows (parsed and checked here, on Linux:
no Windows host runs in this suite)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from arcbeat_agent.cli import main
from arcbeat_agent.config import load_config
from arcbeat_agent.errors import ConfigError
from arcbeat_agent.service import agent_executable, config_skeleton, systemd, windows

HARDENING = {
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "Restart": "on-failure",
    "User": "arcbeat-agent",
    "StateDirectory": "arcbeat-agent",
    "RestartPreventExitStatus": "2 5",
}


def _keys(unit: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def test_the_unit_is_hardened() -> None:
    unit = systemd.render_unit("/usr/bin/arcbeat-agent", "/etc/arcbeat/agent.toml")
    keys = _keys(unit)
    for key, value in HARDENING.items():
        assert keys.get(key) == value, key
    assert keys["ExecStart"] == "/usr/bin/arcbeat-agent run --config /etc/arcbeat/agent.toml"
    assert keys["WantedBy"] == "multi-user.target"


def test_systemd_analyze_verify_prints_nothing(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing (bash deploy/install.sh installs systemd)")
    # verify checks that ExecStart exists on this host: this installation's arcbeat-agent
    exe = agent_executable()
    assert Path(exe).exists(), exe
    unit = tmp_path / "arcbeat-agent.service"
    unit.write_text(systemd.render_unit(exe, "/etc/arcbeat/agent.toml"))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")
    # and the check does see mistakes: an unknown key
    bad = tmp_path / "bad.service"
    bad.write_text(unit.read_text().replace("UMask=0027", "UMask=0027\nProtectEverything=yes"))
    proc = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert "ProtectEverything" in proc.stdout + proc.stderr


def test_unit_paths_must_be_absolute() -> None:
    with pytest.raises(ConfigError, match="must be absolute"):
        systemd.render_unit("arcbeat-agent", "/etc/arcbeat/agent.toml")
    with pytest.raises(ConfigError, match="no spaces"):
        systemd.render_unit("/opt/my agent/arcbeat-agent", "/etc/arcbeat/agent.toml")


def test_install_and_uninstall_under_a_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> (
    None
):
    code = main(["service", "install", "--root", str(tmp_path), "--no-create-user",
                 "--exec", "/opt/arcbeat-agent/bin/arcbeat-agent"])
    out = capsys.readouterr().out
    assert code == 0
    unit = tmp_path / "etc/systemd/system/arcbeat-agent.service"
    config = tmp_path / "etc/arcbeat/agent.toml"
    assert "ExecStart=/opt/arcbeat-agent/bin/arcbeat-agent run" in unit.read_text()
    assert config.stat().st_mode & 0o777 == 0o640
    assert "systemctl daemon-reload && systemctl enable --now arcbeat-agent" in out
    # the skeleton is a valid configuration
    assert load_config(str(config)).kafka.bootstrap == "localhost:9092"
    # a second install keeps the configuration
    config.write_text(config.read_text().replace("localhost:9092", "kafka:9093"))
    assert main(["service", "install", "--root", str(tmp_path), "--no-create-user"]) == 0
    assert "kept" in capsys.readouterr().out
    assert "kafka:9093" in config.read_text()
    # uninstall removes the unit but keeps the edited configuration: nothing is lost
    assert main(["service", "uninstall", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert not unit.exists()
    assert config.exists()
    assert "kept" in out
    # an untouched skeleton goes with the unit
    config.unlink()
    assert main(["service", "install", "--root", str(tmp_path), "--no-create-user"]) == 0
    assert main(["service", "uninstall", "--root", str(tmp_path)]) == 0
    assert not config.exists()


WIN_EXE = r"C:\Program Files\arcbeat-agent\Scripts\arcbeat-agent.exe"
WIN_CONFIG = r"C:\ProgramData\arcbeat\agent.toml"


def test_the_winsw_definition() -> None:
    xml = windows.render_winsw(WIN_EXE, WIN_CONFIG, r"C:\ProgramData\arcbeat\agent",
                               r"C:\ProgramData\arcbeat\logs")
    root = ET.fromstring(xml)
    assert root.tag == "service"
    assert root.findtext("id") == "arcbeat-agent"
    assert root.findtext("executable") == WIN_EXE
    assert root.findtext("arguments") == f'run --config "{WIN_CONFIG}"'
    assert root.findtext("startmode") == "Automatic"
    failures = root.findall("onfailure")
    assert failures and all(f.get("action") == "restart" for f in failures)
    assert [f.get("delay") for f in failures] == ["5 sec", "30 sec", "60 sec"]
    assert root.findtext("resetfailure") == "1 hour"
    assert root.findtext("stoptimeout") == "30 sec"  # the agent stops on Ctrl-C well before
    assert root.findtext("logpath") == r"C:\ProgramData\arcbeat\logs"
    log = root.find("log")
    assert log is not None and log.get("mode") == "roll-by-size"
    # only what WinSW 2.x knows
    known = {"id", "name", "description", "executable", "arguments", "workingdirectory",
             "startmode", "delayedAutoStart", "onfailure", "resetfailure", "stoptimeout",
             "logpath", "log"}
    assert {child.tag for child in root} <= known


def test_winsw_escapes_and_refuses_relative_paths() -> None:
    xml = windows.render_winsw(r"C:\a&b\arcbeat-agent.exe", WIN_CONFIG, "C:\\s", "C:\\l")
    assert ET.fromstring(xml).findtext("executable") == r"C:\a&b\arcbeat-agent.exe"
    with pytest.raises(ConfigError, match="must be absolute"):
        windows.render_winsw("arcbeat-agent.exe", WIN_CONFIG, "C:\\s", "C:\\l")


def test_windows_install_and_uninstall(tmp_path: Path) -> None:
    base = tmp_path / "ProgramData" / "arcbeat"
    lines = windows.install(WIN_EXE, base)
    xml = ET.fromstring((base / "arcbeat-agent.xml").read_text())
    assert xml.findtext("executable") == WIN_EXE
    assert xml.findtext("arguments") == f'run --config "{base / "agent.toml"}"'
    assert any("WinSW" in line for line in lines)
    assert (base / "agent").is_dir() and (base / "logs").is_dir()  # working and log folders
    assert (base / "agent.toml").read_text() == config_skeleton(f"{base}\\")
    windows.uninstall(base)
    assert not (base / "arcbeat-agent.xml").exists()
    assert not (base / "agent.toml").exists()


def test_the_windows_skeleton_is_a_valid_configuration(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(config_skeleton("C:\\ProgramData\\arcbeat\\"))
    assert load_config(str(path)).kafka.topic_prefix == "arcbeat"


def test_agent_executable_is_this_installation() -> None:
    assert Path(agent_executable()).parent == Path(sys.executable).parent
