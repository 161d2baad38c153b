"""The whole pipeline on one machine (``arcbeat demo``).

Starts the local stack, a worker, the history exporter and a simulated fleet (time compressed:
a 2 s heartbeat), prints every transition as it happens, and says where to look.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer

from arcbeat.deploy.stack import Stack
from arcbeat.streams.settings import Settings

DEMO_ENV = {
    "ARCBEAT_TOPIC_PREFIX": "arcbeat-demo",
    "ARCBEAT_APP_ID": "arcbeat-demo",
    "ARCBEAT_HEARTBEAT_INTERVAL": "2s",
    "ARCBEAT_DISCONNECT_AFTER": "6s",
    "ARCBEAT_CHECK_INTERVAL": "0.5s",
    "ARCBEAT_OUTAGE_MIN_MACHINES": "10",
    "ARCBEAT_OUTAGE_HOLD": "20s",
    "ARCBEAT_WINDOW": "60s",
    "ARCBEAT_FLEET_SNAPSHOT_INTERVAL": "5s",
}


def _where(settings: Settings, state: Path) -> str:
    return f"""
where to look:
  fleet (worker API)   curl -s http://127.0.0.1:{settings.worker.web_port}/fleet   |  arcbeat fleet
  offline machines     arcbeat machines --status Disconnected
  worker metrics       http://127.0.0.1:{settings.worker.web_port}/metrics
  Prometheus           http://127.0.0.1:9090/graph?g0.expr=sum%20by%20(status)(arcbeat_machines)
  alerts               http://127.0.0.1:9090/alerts  and Alertmanager http://127.0.0.1:9093
  history (InfluxDB)   influx -database {settings.influx.db} -execute \\
    'SELECT machine_name, status, reason FROM transitions ORDER BY time DESC LIMIT 20'
  logs                 {state}/logs/ (stack), {state}/demo/*.log (worker, history, simulator)
"""


def _fmt(rec: dict[str, object]) -> str:
    if rec.get("type") == "StatusChanged":
        extra = ""
        if rec.get("detectionDelaySeconds") is not None:
            extra = f" (detected {rec['detectionDelaySeconds']}s after deadline)"
        if rec.get("massOutage"):
            extra += " [mass outage]"
        if rec.get("flapping"):
            extra += " [flapping]"
        return (
            f"{str(rec['changedAt'])[11:23]}  {rec['machineName']:<14} {rec['location']:<11} "
            f"{rec['previousStatus'] or '-':>12} -> {rec['status']:<12} {rec['reason']}{extra}"
        )
    return (
        f"{str(rec.get('at', ''))[11:23]}  *** {rec.get('type')} {rec.get('scope')} "
        f"machines={rec.get('machines')}"
    )


async def _print_transitions(settings: Settings, until: float) -> int:
    consumer = AIOKafkaConsumer(
        settings.status_topic,
        bootstrap_servers=settings.kafka.bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="latest",
        group_id=None,
    )
    await consumer.start()
    n = 0
    try:
        while time.time() < until:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    if r.value:
                        print(_fmt(orjson.loads(r.value)), flush=True)
                        n += 1
    finally:
        await consumer.stop()
    return n


def _wait_ready(url: str, timeout: float) -> None:
    """Until the worker's /readyz says ready (owns partitions, recovered, caught up)."""
    deadline = time.monotonic() + timeout
    reason = "not answering yet"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    print(f"  worker ready ({url})", flush=True)
                    return
        except urllib.error.HTTPError as exc:
            reason = json.loads(exc.read() or b"{}").get("reason", str(exc))
        except OSError as exc:
            reason = str(exc)
        time.sleep(0.3)
    print(f"  worker not ready after {timeout:g}s ({reason}); going on", flush=True)


def run_demo(machines: int, duration: float, warmup: float) -> int:
    """Run the demo with ``machines`` simulated machines for ``duration`` seconds, waiting at
    most ``warmup`` seconds for the worker to be ready."""
    env = {**os.environ, **DEMO_ENV}
    os.environ.update(DEMO_ENV)
    settings = Settings.load()
    stack = Stack(settings)
    print("arcbeat demo: starting the local stack (Kafka, Prometheus, Alertmanager, InfluxDB)")
    stack.up(progress=lambda m: print(f"  {m}", flush=True))
    stack.ensure_topics()
    logs = stack.state_dir / "demo"
    logs.mkdir(parents=True, exist_ok=True)
    exe = [sys.executable, "-m", "arcbeat.deploy.cli"]
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, *argv: str) -> None:
        log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        print(f"  starting {name}: arcbeat {' '.join(argv)}  (log {logs / (name + '.log')})")
        procs.append(
            subprocess.Popen([*exe, *argv], env=env, stdout=log, stderr=log, start_new_session=True)
        )

    start("worker", "worker")
    start("history", "history")
    _wait_ready(f"http://{settings.worker.web_host}:{settings.worker.web_port}/readyz", warmup)
    start(
        "simulate",
        "simulate",
        "-n",
        str(machines),
        "--duration",
        str(duration),
        "--scenario",
        "steady,outages,flap,disconnect,location-silent,malformed,skew",
        "--silent-location",
        "westeurope",
        "--silent-at",
        str(duration * 0.5),
        "--silent-for",
        "12",
        "--groundtruth",
        str(logs / "groundtruth.jsonl"),
    )
    print(_where(settings, stack.state_dir))
    print("transitions (read_committed from arcbeat-demo.status):", flush=True)
    try:
        n = asyncio.run(_print_transitions(settings, time.time() + duration + 20))
        print(f"\n{n} status records. The stack keeps running: `arcbeat stack down` stops it.")
    except KeyboardInterrupt:
        print("\ninterrupted")
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
    print(_where(settings, stack.state_dir))
    return 0
