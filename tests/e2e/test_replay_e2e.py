"""``arcbeat replay`` against a real run: the determinism oracle, a what-if, and the refusals.

One deployment (compressed time, tests/support/deployment.py): a worker decides outages,
flapping, disconnects and a location going silent; then the replay of its heartbeats log,
with the settings its ticks recorded, must reproduce every transition of the status topic
exactly (machine, transition, reason, decision time). Then the workers' settings change
while they run, and the replay refuses to compare rather than print a misleading diff.
About 80 s on the 2-core machine.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from arcbeat.deploy.stack import Stack
from tests.support.deployment import Deployment
from tests.support.progress import say
from tests.support.waiting import wait_for

pytestmark = pytest.mark.services


def _replay(dep: Deployment, *args: str) -> tuple[int, dict[str, Any] | None, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "arcbeat.deploy.cli", "replay", "--since", "1h",
         "--format", "json", "--no-progress", *args],
        env=dep.env, cwd=dep.root, capture_output=True, timeout=300,
    )  # fmt: skip
    out = proc.stdout.decode()
    body = orjson.loads(out) if out.strip() else None
    return proc.returncode, body, proc.stderr.decode()


def _committed(dep: Deployment) -> None:
    """Until the status topic holds the transitions of the whole log (the worker commits
    every commit_interval)."""
    time.sleep(2 * dep.settings.worker.commit_interval + dep.settings.timing.check_interval)


def test_replay_reproduces_the_run_and_refuses_when_it_cannot(stack: Stack, tmp_path: Path) -> None:
    dep = Deployment(tmp_path, f"replay-{int(time.time())}", expire_after="6")
    try:
        w = dep.start_worker(0)
        w.wait_ready()
        sim = dep.simulate(
            "-n", "150", "--seed", "7", "--duration", "24",
            "--scenario", "outages,flap,disconnect,location-silent",
            "--outage-fraction", "0.08", "--outage-permanent", "0.3",
            "--outage-duration", "5", "--outage-window", "2:14",
            "--flap-machines", "2", "--flap-down", "4.8", "--flap-up", "2",
            "--disconnect-fraction", "0.03",
            "--silent-location", "westasia", "--silent-at", "8", "--silent-for", "6",
        )  # fmt: skip
        sim.wait(120)
        # the permanent outages expire (expire_after 6 s) while ticks keep coming
        time.sleep(8)
        _committed(dep)
        recorded = dep.status()
        kinds = Counter((t.status, t.reason) for t in recorded.all())
        say(f"replay: recorded transitions {dict(kinds)}")
        assert kinds[("Disconnected", "heartbeat_timeout")] >= 5
        assert kinds[("Connected", "heartbeat_resumed")] >= 3

        # the oracle: same settings (read from the ticks), same transitions
        code, body, err = _replay(dep)
        assert code == 0 and body is not None, err
        o = body["oracle"]
        say(f"replay: oracle {o['compared']} compared, rate {body['replay']['rate']}/s")
        assert o["identical"], o
        assert o["compared"] >= sum(kinds.values()) - 10  # the last second may be past it
        assert body["settings"] == {}

        # a what-if: a longer deadline turns the short outages into nothing
        code, body, err = _replay(dep, "--set", "disconnect_after=10")
        assert code == 0 and body is not None, err
        assert body["oracle"] is None
        assert body["settings"]["disconnect_after"] == [4.0, 10.0]
        left, right = body["left"]["transitions"], body["right"]["transitions"]
        timeout = "Connected->Disconnected (heartbeat_timeout)"
        assert right.get(timeout, 0) < left.get(timeout, 0), (left, right)

        # two settings sets side by side need no recorded run
        code, body, err = _replay(
            dep, "--set", "disconnect_after=10", "--against-set", "disconnect_after=6"
        )
        assert code == 0 and body is not None, err
        assert body["settings"]["disconnect_after"] == [6.0, 10.0]

        # the settings change while the workers run: no comparison, and why
        w.stop()
        dep.env["ARCBEAT_DISCONNECT_AFTER"] = "5"
        w2 = dep.start_worker(0)
        w2.wait_ready()
        wait_for("ticks with the new settings", lambda: True, timeout=5)
        time.sleep(3)
        _committed(dep)
        code, body, err = _replay(dep)
        assert code == 2 and body is None
        assert "settings changed" in err and "disconnect_after 4.0 -> 5.0" in err, err

        # bad input: a clear error, nothing read
        code, body, err = _replay(dep, "--set", "disconnect_after=soon")
        assert code == 2 and "disconnect_after" in err, err
        code, body, err = _replay(dep, "--set", "no_such_setting=1")
        assert code == 2 and "no_such_setting" in err, err
    finally:
        dep.close()
