"""`arcbeat worker` and `arcbeat history` with no Kafka to reach: a progress line per retry, then
exit 2 naming the step, the deadline and the last error once ARCBEAT_STARTUP_DEADLINE is over.
Needs no service: the bootstrap address is a free port nothing listens on."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.net import free_port_block


@pytest.mark.parametrize("command", ["worker", "history"])
def test_no_kafka_until_the_deadline_is_a_clear_exit_2(command: str, tmp_path: Path) -> None:
    port = free_port_block(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCBEAT_")}
    env.update(
        {
            "ARCBEAT_CONFIG": str(tmp_path / "none.toml"),
            "ARCBEAT_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
            "ARCBEAT_STARTUP_DEADLINE": "2s",
            "ARCBEAT_WEB_PORT": str(port + 1),
            "ARCBEAT_HISTORY_PORT": str(port + 2),
            "ARCBEAT_CAPACITY_INTERVAL": "0",
            "ARCBEAT_DATA_DIR": str(tmp_path / "data"),
        }
    )
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "arcbeat.deploy.cli", command],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    took = time.monotonic() - t0
    err = done.stderr
    assert done.returncode == 2, err[-3000:]
    progress = [line for line in err.splitlines() if f"arcbeat {command}: start-up:" in line]
    assert len(progress) >= 2, err[-3000:]
    assert "Kafka not ready (KafkaConnectionError: " in progress[0], progress[0]
    assert "retry 1 in 0.5s" in progress[0] and "left of ARCBEAT_STARTUP_DEADLINE" in progress[0]
    assert "Kafka was still not usable after" in err and "ARCBEAT_STARTUP_DEADLINE=2s" in err
    assert "Traceback" not in err, err[-3000:]
    assert 2 <= took < 60, took
