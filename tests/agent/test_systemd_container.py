"""The agent as a real systemd service: systemd as PID 1 in a podman container built from the
local Debian base image, the agent installed from ./deploy/agent (as a wheel) and its unit
written by ``arcbeat-agent service install``, sending to the shared Kafka over the host
network. The test sees heartbeats arrive, SIGKILLs the service's main process, sees systemd
restart it and the heartbeats resume, ends it with ``systemctl stop``, then onboards the
machine again as root with ``connect`` and sees the restarted service take that identity over.

Runtime: about 30 s with the images cached (the first run builds the base image, ~1 min, and
installs systemd into the test image, ~30 s more); it needs PyPI (or pip's cache) for the
dependencies' wheels. The phases' timings are printed.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from arcbeat.streams.decide.records import Heartbeat, decode_heartbeat
from tests.support.paths import REPO
from tests.support.podman import base_image, build, podman

IMAGE = "localhost/arcbeat-agent-systemd:test"
UNIT = "arcbeat-agent.service"
RID = ("/subscriptions/00000000-0000-0000-0000-0000000000c1/resourceGroups/rg-containers/"
       "providers/Microsoft.HybridCompute/machines/systemd-01")
RID2 = RID.replace("systemd-01", "systemd-02")


def _wheels(context: Path) -> None:
    """The agent's wheel (from a clean copy of deploy/agent) and its dependencies' wheels for
    the image's Python (bookworm: CPython 3.11, x86_64 glibc)."""
    source = context / "src"
    shutil.copytree(REPO / "deploy" / "agent", source,
                    ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    wheels = context / "wheels"
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    for args in (
        ["wheel", "--no-deps", "-w", str(wheels), str(source)],
        ["download", "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
         "--platform", "manylinux_2_17_x86_64", "-d", str(wheels), "aiokafka>=0.14,<0.15",
         "orjson>=3.9,<4"],
    ):
        proc = subprocess.run([*pip, *args], capture_output=True, text=True, timeout=600,
                              check=False)
        if proc.returncode != 0:
            pytest.fail(f"pip {args[0]} for the image failed (is PyPI reachable?):\n"
                        f"{proc.stderr[-3000:]}", pytrace=False)


def _in(container: str, *args: str, check: bool = True) -> str:
    return podman("exec", container, *args, check=check, timeout=60).stdout.strip()


def _show(container: str, *props: str) -> dict[str, str]:
    out = _in(container, "systemctl", "show", "-p", ",".join(props), UNIT)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


class Heartbeats:
    """The test topic's records, read as they arrive."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                         auto_offset_reset="earliest", enable_auto_commit=False)
        self.seen: list[tuple[float, Heartbeat]] = []

    async def until(self, what: str, done: Any, timeout: float = 60) -> float:
        """Read until ``done(seen)``; returns the seconds it took."""
        started = time.monotonic()
        while not done(self.seen):
            if time.monotonic() - started > timeout:
                pytest.fail(f"no {what} within {timeout:.0f}s; seen "
                            f"{[(h.kind, h.sequence) for _t, h in self.seen]}", pytrace=False)
            for batch in (await self.consumer.getmany(timeout_ms=300)).values():
                for r in batch:
                    hb = decode_heartbeat(r.value, r.key)
                    assert isinstance(hb, Heartbeat), hb
                    self.seen.append((time.monotonic(), hb))
        return time.monotonic() - started


@pytest.mark.services
@pytest.mark.heavy
async def test_the_agent_under_systemd(stack: Any, tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    started = time.monotonic()
    prefix = f"agent-systemd-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(stack.ensure_topics, prefix, 1)
    base = await asyncio.to_thread(base_image)
    context = tmp_path / "context"
    context.mkdir()
    shutil.copy(Path(__file__).parent / "systemd" / "Containerfile", context / "Containerfile")
    await asyncio.to_thread(_wheels, context)
    await asyncio.to_thread(build, IMAGE, str(context), str(context / "Containerfile"),
                            [f"BASE={base}"])
    timings["build"] = time.monotonic() - started
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[kafka]\nbootstrap = "{stack.settings.kafka.bootstrap}"\ntopic_prefix = "{prefix}"\n'
        f'[machine]\nresource_id = "{RID}"\nlocation = "westeurope"\n'
        "[heartbeat]\ninterval = 1\n"
    )
    config.chmod(0o644)  # read by the service's own user; no secret in it
    name = f"arcbeat-agent-systemd-{uuid.uuid4().hex[:8]}"
    beats = Heartbeats(stack.settings.kafka.bootstrap, f"{prefix}.heartbeats")
    await beats.consumer.start()
    try:
        boot = time.monotonic()
        podman("run", "-d", "--name", name, "--systemd=always", "--network=host",
               "-v", f"{config}:/etc/arcbeat/agent.toml:ro", IMAGE)
        await beats.until("connect and 3 heartbeats",
                          lambda s: [h.kind for _t, h in s][:4] == ["connect", *["heartbeat"] * 3])
        timings["boot_to_third_heartbeat"] = time.monotonic() - boot
        first = _show(name, "MainPID", "NRestarts", "User", "ActiveState")
        assert first["ActiveState"] == "active" and first["NRestarts"] == "0", first
        assert first["User"] == "arcbeat-agent"
        assert _in(name, "ps", "-o", "user=", "-p", first["MainPID"], check=False) in (
            "arcbeat-agent", "")  # ps may be absent from the minimal image

        killed = time.monotonic()
        n_before = len(beats.seen)
        _in(name, "systemctl", "kill", "--kill-whom=main", "-s", "KILL", UNIT)
        # a new process (sequence restarts at 0, no second connect: the state file says
        # connected) sends again after RestartSec
        await beats.until(
            "heartbeats after the restart",
            lambda s: any(h.kind == "heartbeat" and h.sequence == 0 for _t, h in s[n_before:])
            and len(s) - n_before >= 3,
        )
        timings["kill_to_heartbeat_again"] = time.monotonic() - killed
        after = _show(name, "MainPID", "NRestarts", "ActiveState")
        assert after["NRestarts"] == "1" and after["MainPID"] != first["MainPID"], after
        assert after["ActiveState"] == "active"
        assert all(h.kind == "heartbeat" for _t, h in beats.seen[n_before:])
        journal = _in(name, "journalctl", "-u", UNIT, "--no-pager")
        assert "status=9/KILL" in journal, journal[-2000:]

        stopping = time.monotonic()
        _in(name, "systemctl", "stop", UNIT)
        timings["systemctl_stop"] = time.monotonic() - stopping
        ended = _show(name, "ActiveState", "Result", "ExecMainStatus", "ExecMainCode")
        assert ended == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0",
                         "ExecMainCode": "1"}, ended
        journal = _in(name, "journalctl", "-u", UNIT, "--no-pager")
        assert "stopped after" in journal

        # an administrator onboards the machine as another one (root, as azcmagent is run);
        # the service, its own user, takes the identity over at its next start
        agent = "/opt/arcbeat-agent/bin/arcbeat-agent"
        _in(name, agent, "connect", "--resource-id", RID2, "--location", "westeurope")
        assert _in(name, "stat", "-c", "%U %a", "/var/lib/arcbeat-agent/state.json") == (
            "arcbeat-agent 640")
        n_before = len(beats.seen)
        _in(name, "systemctl", "start", UNIT)
        await beats.until(
            "heartbeats of the machine connected by root",
            lambda s: [(h.key, h.kind) for _t, h in s[n_before:]][:2]
            == [(RID2.lower(), "connect"), (RID2.lower(), "heartbeat")],
        )
        assert '"status": "connected"' in _in(name, agent, "show", "--json")
        # systemd's own view of the hardening (0 best, 10 worst), for the printed summary
        exposure = re.search(r"exposure level for \S+: ([\d.]+)", _in(
            name, "systemd-analyze", "security", "--no-pager", UNIT, check=False))
        timings["exposure_level"] = float(exposure.group(1)) if exposure else -1
    finally:
        await beats.consumer.stop()
        podman("rm", "-f", "-t", "0", name, check=False)
    timings["total"] = time.monotonic() - started
    print("agent under systemd:", ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
