"""Early warning, live and short: a worker, and the simulator's "uplink degrades" scenario
in compressed time (1 s heartbeats, Disconnected after 4 s: one interval stands for five
production minutes). The degrading location's ScopeDegraded reaches the status topic at
least one interval before its first Disconnected; late machines show in the API
(``?late=1``) and in /metrics. About 60 s on the 2-core machine.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from arcbeat.deploy.stack import Stack
from arcbeat.streams.decide.timestamps import parse_rfc3339
from tests.support.deployment import Deployment
from tests.support.kafka import read_topic
from tests.support.progress import say
from tests.support.waiting import wait_for

pytestmark = pytest.mark.services


def test_a_degrading_uplink_warns_before_its_machines_disconnect(
    stack: Stack, tmp_path: Path
) -> None:
    # mass silence left out (it would hold the Disconnected this test measures against)
    dep = Deployment(tmp_path, f"early-{int(time.time())}", outage_min_machines="1000")
    try:
        w = dep.start_worker(0)
        w.wait_ready()
        sim = dep.simulate(
            "-n", "150", "--seed", "3", "--duration", "22",
            "--scenario", "uplink-degrades", "--degrade-location", "westasia",
        )  # fmt: skip

        def late_machines() -> list[dict[str, object]] | None:
            status, body = w.get("/machines", {"late": "1", "location": "westasia"})
            assert status == 200, body
            return body["items"] or None

        late = wait_for("late machines in westasia", late_machines, timeout=60)
        assert all(m["late"] and m["status"] == "Connected" for m in late), late[:2]
        assert all(float(str(m["lateSeconds"])) >= 0 for m in late)
        status, text = w.get("/metrics")
        assert status == 200 and 'arcbeat_machines_late{location="westasia"}' in str(text)
        assert 'arcbeat_delivery_delay_seconds_bucket{le="0.05",location="westasia"}' in str(text)
        sim.wait(90)
        time.sleep(2)

        def records() -> list[dict[str, object]]:
            out = []
            for r in read_topic(dep.settings.kafka.bootstrap, dep.settings.topics.status):
                if r.value:
                    out.append(orjson.loads(r.value))
            return out

        def warned() -> list[dict[str, object]] | None:
            recs = records()
            return recs if any(r["type"] == "ScopeDegraded" for r in recs) else None

        recs = wait_for("a ScopeDegraded record", warned, timeout=20)
        warnings = [r for r in recs if r["type"] == "ScopeDegraded"]
        say(f"early warning: {[(r['scope'], r['signal'], r['at']) for r in warnings]}")
        asia = [r for r in warnings if r["scope"] == "location=westasia"]
        assert asia, warnings
        first_off = min(
            parse_rfc3339(str(r["decidedAt"]))
            for r in recs
            if r["type"] == "StatusChanged"
            and r["location"] == "westasia"
            and r["reason"] == "heartbeat_timeout"
        )
        lead = first_off - parse_rfc3339(str(asia[0]["at"]))
        say(f"early warning: lead {lead:.1f}s = {lead / 1.0 * 5:.0f} production minutes")
        assert lead >= dep.settings.timing.heartbeat_interval  # five production minutes

        # the replay reports the warning and its head start too (its own judgement of the
        # partitions' samples), beside the recorded one, and reproduces every transition
        proc = subprocess.run(
            [sys.executable, "-m", "arcbeat.deploy.cli", "replay", "--since", "1h",
             "--format", "json", "--no-progress"],
            env=dep.env, cwd=dep.root, capture_output=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr.decode()
        report = orjson.loads(proc.stdout)
        assert report["oracle"]["identical"], report["oracle"]
        for side in ("left", "right"):
            ws = [x for x in report[side]["degradedWarnings"] if x["scope"] == "location=westasia"]
            assert ws and ws[0]["leadSeconds"] >= 1.0, (side, report[side]["degradedWarnings"])
        say(f"replay: warnings {report['right']['degradedWarnings']}")
    finally:
        dep.close()
