"""End to end: ``arcbeat demo --scenario uplink-degrades`` on the local stack.

One run of the real command (300 machines, the shortest duration, its own topic prefix and
InfluxDB database): the demo prints westasia's ScopeDegraded as it is committed, then the
location's first Disconnected, and its summary gives the head start, which must be at least 5
production minutes (2 s of the demo's clock, compressed 150 times). About 75 s.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import uuid
from collections.abc import Iterator

import pytest

from arcbeat.deploy.demo import demo_env, reset
from arcbeat.deploy.settings import Settings
from arcbeat.deploy.stack import Stack
from tests.e2e.test_demo_e2e import TIME, Demo
from tests.support.net import free_port_block

pytestmark = pytest.mark.services

MACHINES = 300
DURATION = 45
LEAD = re.compile(
    r"ScopeDegraded location=westasia \(\w+\); first Disconnected \(or ScopeSilent\) there "
    r"\S+: ([\d.]+) s later, (\d+) production minutes of warning"
)


@pytest.fixture
def prefix(stack: Stack) -> Iterator[str]:
    """The run's own prefix; its topics, InfluxDB database and folder are deleted afterwards."""
    name = f"test-uplink-{uuid.uuid4().hex[:8]}"
    yield name
    settings = Settings.load({**os.environ, **demo_env(name)})
    reset(stack, settings, recreate_database=False)
    shutil.rmtree(stack.state_dir / name, ignore_errors=True)


def test_the_uplink_demo_warns_before_the_first_disconnected(stack: Stack, prefix: str) -> None:
    env = {
        **os.environ,
        "ARCBEAT_WEB_PORT": str(free_port_block(1)),
        "ARCBEAT_HISTORY_PORT": str(free_port_block(1)),
    }
    demo = Demo(
        [sys.executable, "-m", "arcbeat.deploy.cli", "demo", "--scenario", "uplink-degrades",
         "--prefix", prefix, "--machines", str(MACHINES), "--duration", str(DURATION)],
        env,
    )  # fmt: skip
    try:
        lines = demo.until("Press Ctrl-C", timeout=DURATION + 120)
        demo.proc.send_signal(signal.SIGINT)
        lines = demo.rest(timeout=90)
    finally:
        demo.close()
    assert demo.proc.returncode == 0, "\n".join(lines[-30:])

    # as committed: the warning first, then the location's first Disconnected
    printed = [line for line in lines if TIME.match(line)]
    warned = next(
        (i for i, ln in enumerate(printed) if "*** ScopeDegraded location=westasia" in ln), None
    )
    assert warned is not None, "\n".join(lines[-60:])
    off = [
        i for i, ln in enumerate(printed)
        if (" westasia " in ln and "-> Disconnected" in ln) or "ScopeSilent location=westasia" in ln
    ]  # fmt: skip
    assert off and warned < off[0], "\n".join(printed[-40:])
    assert not [ln for ln in printed if "ScopeDegraded location=" in ln and "westasia" not in ln]

    # the head start, in production minutes: at least 5 (2 s at 150 times compressed)
    m = next((m for line in lines if (m := LEAD.search(line))), None)
    assert m is not None, "\n".join(lines[-30:])
    assert float(m.group(1)) >= 2.0 and int(m.group(2)) >= 5, m.group(0)
