"""The command line: exit codes and messages for bad input, and ``show``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from arcbeat_agent import errors
from arcbeat_agent.cli import main
from arcbeat_agent.state import AgentState, save_state

RID = ("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/"
       "Microsoft.HybridCompute/machines/box")


def _config(tmp_path: Path, body: str = "") -> str:
    path = tmp_path / "agent.toml"
    path.write_text(
        '[kafka]\nbootstrap = "127.0.0.1:1"\nrequest_timeout = "2s"\n'
        f'[agent]\nstate_dir = "{tmp_path / "state"}"\n{body}'
    )
    return str(path)


def test_a_bad_config_file_is_exit_2_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, "[heartbeat]\nintervall = 5\n")
    assert main(["--config", config, "show"]) == errors.CONFIG
    err = capsys.readouterr().err
    assert f"{config}:7: unknown setting 'intervall' in [heartbeat]" in err


def test_a_resource_id_that_does_not_parse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> (
    None
):
    config = _config(tmp_path)
    bad = RID.replace("/machines/box", "/machines/b o x")
    assert main(["--config", config, "connect", "--resource-id", bad,
                 "--location", "westeurope"]) == errors.CONFIG
    err = capsys.readouterr().err
    assert "--resource-id: machineName 'b o x' may only contain" in err
    assert main(["--config", config, "connect", "--resource-id", RID]) == errors.CONFIG
    assert "no location: give --location REGION" in capsys.readouterr().err
    assert main(["--config", config, "connect", "--resource-id", RID, "--location", "westeurope",
                 "--tag", "novalue"]) == errors.CONFIG
    assert "--tag 'novalue': expected NAME=VALUE" in capsys.readouterr().err


def test_an_unreachable_broker_is_exit_3_and_loses_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path)
    assert main(["--config", config, "connect", "--resource-id", RID,
                 "--location", "westeurope"]) == errors.UNREACHABLE
    err = capsys.readouterr().err
    assert "cannot reach Kafka at 127.0.0.1:1" in err and "arcbeat-agent check" in err
    # nothing was recorded as connected
    assert not (tmp_path / "state" / "state.json").exists()


def test_not_onboarded_is_exit_5(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    assert main(["--config", config, "run"]) == errors.NOT_CONNECTED
    assert "not onboarded" in capsys.readouterr().err
    assert main(["--config", config, "disconnect"]) == errors.NOT_CONNECTED


def test_show_and_show_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    save_state(tmp_path / "state" / "state.json", AgentState(
        resource_id=RID, location="westeurope", status="connected",
        last_sent_at="2026-01-01T00:00:00.000Z", last_acknowledged_at="2026-01-01T00:00:00.010Z",
        last_error="cannot reach Kafka", last_error_at="2025-12-31T23:59:00.000Z",
    ))
    assert main(["--config", config, "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["resourceId"] == RID
    assert shown["broker"] == "127.0.0.1:1"
    assert shown["lastHeartbeatSent"] == "2026-01-01T00:00:00.000Z"
    assert shown["lastHeartbeatAcknowledged"] == "2026-01-01T00:00:00.010Z"
    assert shown["lastError"] == "cannot reach Kafka"
    assert shown["configFile"] == config
    assert main(["show", "--config", config]) == 0  # also after the command, as in the unit
    text = capsys.readouterr().out
    assert "Resource ID:" in text and RID in text and "Config file:" in text


def test_a_damaged_state_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state.json").write_text("{not json")
    assert main(["--config", config, "show"]) == errors.CONFIG
    assert "state.json: the agent's state file is damaged" in capsys.readouterr().err


def test_check_against_nothing_listening(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> (
    None
):
    config = _config(tmp_path)
    assert main(["--config", config, "check", "--timeout", "2"]) == errors.CHECK_FAILED
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("PASS  dns")
    assert out[1].startswith("FAIL  tcp         127.0.0.1:1:") and "fix: open TCP 1" in out[1]
    path = tmp_path / "dns.toml"
    path.write_text('[kafka]\nbootstrap = "no-such-host.invalid:9092"\n')
    assert main(["--config", str(path), "check"]) == errors.CHECK_FAILED
    assert "FAIL  dns         no-such-host.invalid: does not resolve" in capsys.readouterr().out


def test_the_command_is_installed_and_documents_its_exit_codes() -> None:
    proc = subprocess.run([sys.executable, "-m", "arcbeat_agent", "--help"],
                          capture_output=True, text=True, check=True, timeout=60)
    assert "exit codes: 0 done;" in proc.stdout
    for command in ("connect", "disconnect", "run", "show", "check", "service"):
        assert command in proc.stdout
