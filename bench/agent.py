"""The machine agent's footprint (``arcbeat bench`` phase ``agent``): what ``pip install
./deploy/agent`` puts on disk, the resident memory of an idle ``arcbeat-agent run``, and the
CPU time one heartbeat costs, measured on real ``arcbeat-agent`` processes against the broker.

The agent is its own distribution: it is run as a command (``python -m arcbeat_agent``), never
imported, and installed into a scratch folder from the checkout's ``deploy/agent``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from arcbeat.bench.context import Bench
from arcbeat.bench.kafka_admin import create_deployment_topics

AGENT_SOURCE = Path(__file__).resolve().parents[1] / "deploy" / "agent"
RID = ("/subscriptions/00000000-0000-0000-0000-0000000000be/resourceGroups/bench/providers/"
       "Microsoft.HybridCompute/machines/agent-footprint")


def installed_size(workdir: Path) -> dict[str, Any]:
    """``pip install`` of the agent (bytecode compiled, as pip does) into an empty folder."""
    source = workdir / "agent-source"
    target = workdir / "agent-site"
    shutil.rmtree(source, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(AGENT_SOURCE, source,
                    ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "--target", str(target), str(source)],
        check=True, capture_output=True, text=True, timeout=900,
    )
    sizes: dict[str, int] = {}
    for entry in target.iterdir():
        files = [entry] if entry.is_file() else [p for p in entry.rglob("*") if p.is_file()]
        if entry.name.endswith(".dist-info"):
            name = entry.name.split("-")[0]
        elif entry.name == "__pycache__":  # bytecode of single-module distributions
            name = "single modules' bytecode"
        else:
            name = entry.name.removesuffix(".py")
        name = name.lower().replace("-", "_")
        sizes[name] = sizes.get(name, 0) + sum(p.stat().st_size for p in files)
    shutil.rmtree(target, ignore_errors=True)
    return {
        "totalMiB": round(sum(sizes.values()) / 2**20, 2),
        "byPackageKiB": {k: round(v / 1024) for k, v in sorted(sizes.items(),
                                                                key=lambda kv: -kv[1])},
    }


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            values[key] = int(rest.split()[0])
    return values


def _state(folder: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((folder / "state.json").read_text())
        return data
    except (OSError, ValueError):
        return {}


class AgentProcess:
    def __init__(self, b: Bench, name: str, interval: float, jitter: float) -> None:
        s = b.phase_settings("agent")
        self.folder = b.workdir / f"agent-{name}"
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "agent.toml"
        config.write_text(
            f'[kafka]\nbootstrap = "{s.kafka.bootstrap}"\ntopic_prefix = "{s.kafka.topic_prefix}"\n'
            f'[machine]\nresource_id = "{RID}-{name}"\nlocation = "westeurope"\n'
            f"[heartbeat]\ninterval = {interval}\njitter = {jitter}\n"
            f'[agent]\nstate_dir = "{self.folder}"\n'
        )
        self.log = (self.folder / "agent.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "arcbeat_agent", "--config", str(config), "run"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )

    def sequence(self) -> int:
        return int(_state(self.folder).get("last_sequence", -1))

    def wait_sequence(self, at_least: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.sequence() < at_least:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the agent did not reach heartbeat {at_least}: see "
                                   f"{self.folder / 'agent.log'}")
            time.sleep(0.1)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return int(self.proc.returncode)


def run_agent_footprint(b: Bench, idle_seconds: float = 20.0, busy_seconds: float = 10.0) -> (
    dict[str, Any]
):
    create_deployment_topics(b.phase_settings("agent"))
    b.say("agent: installing ./deploy/agent into a scratch folder")
    size = installed_size(b.workdir)
    b.say(f"agent: installed size {size['totalMiB']} MiB")

    idle = AgentProcess(b, "idle", interval=300, jitter=0)
    try:
        idle.wait_sequence(1, 60)  # connect and the first heartbeat acknowledged
        time.sleep(5)
        cpu0, t0 = _cpu_seconds(idle.proc.pid), time.monotonic()
        time.sleep(idle_seconds)
        idle_cpu = (_cpu_seconds(idle.proc.pid) - cpu0) / (time.monotonic() - t0)
        rss = _rss_kib(idle.proc.pid)
    finally:
        idle_exit = idle.stop()
    b.say(f"agent: idle RSS {rss.get('VmRSS', 0) / 1024:.1f} MiB")

    busy = AgentProcess(b, "busy", interval=0.02, jitter=0)
    try:
        busy.wait_sequence(20, 60)
        cpu0, seq0, t0 = _cpu_seconds(busy.proc.pid), busy.sequence(), time.monotonic()
        time.sleep(busy_seconds)
        cpu1, seq1, t1 = _cpu_seconds(busy.proc.pid), busy.sequence(), time.monotonic()
        busy_rss = _rss_kib(busy.proc.pid)
    finally:
        busy_exit = busy.stop()
    beats = max(1, seq1 - seq0)
    per_beat_ms = (cpu1 - cpu0) / beats * 1000
    b.say(f"agent: {per_beat_ms:.2f} ms CPU per heartbeat ({beats} heartbeats)")
    return {
        "installed": size,
        "idleRssMiB": round(rss.get("VmRSS", 0) / 1024, 1),
        "idleRss": rss,
        "idleCpuPercent": round(idle_cpu * 100, 3),
        "cpuMillisecondsPerHeartbeat": round(per_beat_ms, 3),
        "heartbeatsMeasured": beats,
        "heartbeatsPerSecondMeasured": round(beats / (t1 - t0), 1),
        "busyRssMiB": round(busy_rss.get("VmRSS", 0) / 1024, 1),
        "exitCodes": [idle_exit, busy_exit],
        "python": sys.version.split()[0],
        "method": (
            "installed: pip install --target of deploy/agent (with its dependencies, bytecode "
            "compiled); idle: RSS of `arcbeat-agent run` (interval 300 s) 5 s after its first "
            f"acknowledged heartbeat, CPU over {idle_seconds:g} s; per heartbeat: CPU time of "
            f"`arcbeat-agent run` at a 20 ms interval over {busy_seconds:g} s, divided by the "
            "heartbeats acknowledged (acks=all, idempotent producer, one broker)"
        ),
    }
