"""The systemd units of the server (deploy/systemd/): `systemd-analyze verify` prints nothing.

``verify`` checks that ``ExecStart``'s program exists on this host, so the units are rendered
with the installed ``arcbeat`` in place of ``/opt/arcbeat/bin/arcbeat``; any output (an unknown
key only warns, with exit 0) fails the test. The worker unit is a template: instance 0 and 3
are verified.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO

UNITS = REPO / "deploy" / "systemd"
INSTALLED = "/opt/arcbeat/bin/arcbeat"
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "RestrictSUIDSGID": "yes",
    "CapabilityBoundingSet": "",
    "User": "arcbeat",
}


def _arcbeat() -> str:
    beside = Path(sys.executable).parent / "arcbeat"
    found = str(beside) if beside.is_file() else shutil.which("arcbeat")
    assert found, "the arcbeat command is not installed (bash deploy/install.sh)"
    return str(Path(found).resolve()) if Path(found).resolve().is_file() else found


def _service(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return dict(parser["Service"])


def test_units_verify_clean(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: bash deploy/install.sh installs systemd"
    units = sorted(UNITS.glob("*.service"))
    assert [u.name for u in units] == ["arcbeat-history.service", "arcbeat-worker@.service"]
    program = _arcbeat()
    for unit in units:
        text = unit.read_text()
        assert INSTALLED in text, unit
        (tmp_path / unit.name).write_text(text.replace(INSTALLED, program))
    names = ["arcbeat-worker@0.service", "arcbeat-worker@3.service", "arcbeat-history.service"]
    done = subprocess.run(
        [analyze, "verify", *(str(tmp_path / n) for n in names)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    out = (done.stdout + done.stderr).strip()
    assert done.returncode == 0 and out == "", out


@pytest.mark.parametrize("name", ["arcbeat-worker@.service", "arcbeat-history.service"])
def test_units_are_hardened_and_restart(name: str) -> None:
    service = _service(UNITS / name)
    for key, value in HARDENING.items():
        assert service.get(key) == value, (name, key, service.get(key))
    assert service["Restart"] == "on-failure"
    assert service["RestrictAddressFamilies"] == "AF_INET AF_INET6 AF_UNIX"


def test_the_worker_template_takes_its_id_from_the_instance() -> None:
    service = _service(UNITS / "arcbeat-worker@.service")
    assert service["ExecStart"] == f"{INSTALLED} worker --id %i"
    assert "-/etc/arcbeat/worker-%i.env" in (UNITS / "arcbeat-worker@.service").read_text()
