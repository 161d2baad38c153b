"""An isolated arcbeat deployment on the shared broker (its own topic prefix = app id, data
folder, web ports and compressed time), with its ``arcbeat worker`` and ``arcbeat simulate``
subprocesses, all killed by :meth:`Deployment.close`.

``ARCBEAT_E2E_KEEP_TOPICS=1`` keeps a deployment's topics after the test (to inspect them);
by default they are deleted, the broker being shared.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from arcbeat.deploy.aio import run_sync
from arcbeat.deploy.settings import Settings
from arcbeat.deploy.stack import Stack
from tests.support.groundtruth import AgentMessage, GroundTruth
from tests.support.kafka import KafkaRecord, delete_topics, read_topic
from tests.support.net import free_port_block, http_get
from tests.support.observed import Observed, Tick
from tests.support.paths import REPO
from tests.support.progress import say
from tests.support.waiting import wait_for

# the header of the workers' tick records in the heartbeats topic
TICK_HEADER = "arcbeat-tick"

# compressed time shared by the end-to-end tests: 1 s heartbeats, Disconnected after 4 s of
# silence, deadlines checked twice a second; a "late" machine (leading mass-silence
# indicator) after 1.5 s of silence
E2E_TIMING: dict[str, str] = {
    "heartbeat_interval": "1",
    "disconnect_after": "4",
    "check_interval": "0.5",
    "outage_min_machines": "5",
    "outage_hold": "8",
    "window": "60",
    "session_timeout": "10",
}


class WorkerProcess:
    """One ``arcbeat worker --id N --print-transitions`` subprocess."""

    def __init__(self, dep: Deployment, worker_id: int, serial: int) -> None:
        self.id = worker_id
        self.port = dep.web_port + worker_id
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = dep.root / f"worker{worker_id}-{serial}.log"
        self.out_path = dep.root / f"worker{worker_id}-{serial}.out"
        self.started = time.time()
        with self.log_path.open("wb") as log, self.out_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "arcbeat.deploy.cli",
                    "worker",
                    "--id",
                    str(worker_id),
                    "--print-transitions",
                    "--loglevel",
                    "info",
                ],
                env=dep.env,
                cwd=dep.root,
                stdout=out,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # signals reach this worker only
            )
        self.paused = False

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return f"--- worker {self.id} log {self.log_path} (last {lines} lines) ---\n" + "\n".join(
            line[:300] for line in text[-lines:]
        )

    def get(self, path: str, params: Mapping[str, str] | None = None) -> tuple[int, Any]:
        return http_get(self.url + path, params)

    def healthz(self) -> dict[str, Any] | None:
        try:
            status, body = self.get("/healthz")
        except OSError:
            return None
        return body if status == 200 and isinstance(body, dict) else None

    def partitions(self) -> set[int]:
        h = self.healthz()
        return set(h["partitions"]) if h else set()

    def readyz(self) -> tuple[int, dict[str, Any]] | None:
        try:
            status, body = self.get("/readyz")
        except OSError:
            return None
        return (status, body) if isinstance(body, dict) else None

    def wait_ready(self, *, timeout: float = 90.0, partitions: set[int] | None = None) -> None:
        """Until /readyz says ready (owns partitions, recovered, caught up), owning
        ``partitions`` exactly when given."""

        def probe() -> bool | None:
            if not self.alive():
                raise AssertionError(
                    f"worker {self.id} exited with {self.proc.returncode}\n{self.log_tail()}"
                )
            r = self.readyz()
            if r is None or r[0] != 200:
                return None
            h = r[1]
            if partitions is not None and set(h["partitions"]) != partitions:
                return None
            return True

        wait_for(
            f"worker {self.id} to own partitions", probe, timeout=timeout, on_timeout=self.log_tail
        )

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
        self.paused = False

    def kill(self) -> None:
        if self.alive():
            if self.paused:
                self.resume()
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a graceful leave of the consumer group); SIGKILL when it hangs."""
        if self.paused:
            self.resume()
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def printed(self) -> list[dict[str, Any]]:
        """The records it printed (--print-transitions), including ones later aborted."""
        out: list[dict[str, Any]] = []
        for line in self.out_path.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                rec = orjson.loads(line)
                if isinstance(rec, dict):
                    out.append(rec)
        return out


class SimulatorProcess:
    """One ``arcbeat simulate ... --groundtruth`` subprocess."""

    def __init__(self, dep: Deployment, args: Sequence[str], name: str) -> None:
        self.truth_path = dep.root / f"{name}.groundtruth.jsonl"
        self.log_path = dep.root / f"{name}.log"
        self.started = time.time()
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "arcbeat.deploy.cli",
                    "simulate",
                    *args,
                    "--groundtruth",
                    str(self.truth_path),
                    "--progress-every",
                    "5",
                ],
                env=dep.env,
                cwd=dep.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> GroundTruth:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"simulator did not finish in {timeout:g}s") from None
        log = self.log_path.read_text(errors="replace")
        assert rc == 0, f"simulator exited with {rc}:\n{log[-3000:]}"
        return GroundTruth.load(self.truth_path)

    def kill(self) -> None:
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def stop(self, timeout: float) -> GroundTruth:
        """End the run now (SIGTERM: the simulator flushes, writes its `end` record and exits
        0), then load its ground truth."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGTERM)
        return self.wait(timeout)


class Deployment:
    """An isolated arcbeat deployment on the shared broker."""

    def __init__(self, root: Path, name: str, **settings: str) -> None:
        self.root = root
        self.name = name
        root.mkdir(parents=True, exist_ok=True)
        self.web_port = free_port_block(4)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARCBEAT_")}
        env.update(
            {
                "ARCBEAT_CONFIG": str(root / "no-arcbeat.toml"),
                "ARCBEAT_TOPIC_PREFIX": name,
                "ARCBEAT_APP_ID": name,
                "ARCBEAT_DATA_DIR": str(root / "data"),
                "ARCBEAT_STATE_DIR": str(REPO / "state"),
                "ARCBEAT_WEB_PORT": str(self.web_port),
                "PYTHONUNBUFFERED": "1",
            }
        )
        for key, value in {**E2E_TIMING, **settings}.items():
            env["ARCBEAT_" + key.upper()] = str(value)
        self.env = env
        self.settings = Settings.load(env=env)
        self.workers: list[WorkerProcess] = []
        self.simulators: list[SimulatorProcess] = []
        self.manual: list[AgentMessage] = []  # messages the test produced itself
        Stack(self.settings).ensure_topics()

    # -- processes ----------------------------------------------------------------------------
    def start_worker(self, worker_id: int = 0) -> WorkerProcess:
        w = WorkerProcess(self, worker_id, len(self.workers))
        self.workers.append(w)
        say(f"{self.name}: started worker {worker_id} (pid {w.pid}, port {w.port})")
        return w

    def simulate(self, *args: str, name: str = "sim") -> SimulatorProcess:
        sim = SimulatorProcess(self, args, name)
        self.simulators.append(sim)
        say(f"{self.name}: simulator started: {' '.join(args)}")
        return sim

    def close(self) -> None:
        """Kill every process this deployment started, then delete its topics."""
        for sim in self.simulators:
            sim.kill()
        for w in self.workers:
            w.kill()
        if os.environ.get("ARCBEAT_E2E_KEEP_TOPICS"):
            say(f"{self.name}: topics kept (ARCBEAT_E2E_KEEP_TOPICS)")
            return
        with contextlib.suppress(Exception):  # best effort: the broker is shared
            delete_topics(self.settings.kafka.bootstrap, (f"{self.name}.", f"{self.name}-"))

    # -- topics --------------------------------------------------------------------------------
    def status(self) -> Observed:
        s = self.settings
        return Observed.parse(read_topic(s.kafka.bootstrap, s.topics.status))

    def ticks(self) -> tuple[list[Tick], list[KafkaRecord]]:
        """Tick records and agent records of the heartbeats log."""
        ticks: list[Tick] = []
        agents: list[KafkaRecord] = []
        for r in read_topic(
            self.settings.kafka.bootstrap, self.settings.topics.heartbeats, committed=False
        ):
            if any(k == TICK_HEADER for k, _ in r.headers):
                ticks.append(Tick(r.partition, r.offset, r.timestamp))
            else:
                agents.append(r)
        return ticks, agents

    def produce(
        self,
        messages: Sequence[tuple[bytes | None, bytes | None]],
        *,
        event: str,
        keys: Sequence[str] | None = None,
        reasons: Sequence[str | None] | None = None,
    ) -> list[AgentMessage]:
        """Produce (key, value) pairs to the heartbeats topic; record them like ground truth."""
        topic = self.settings.topics.heartbeats
        bootstrap = self.settings.kafka.bootstrap

        async def go() -> list[AgentMessage]:
            producer = AIOKafkaProducer(
                bootstrap_servers=bootstrap, acks="all", max_request_size=4 * 1024 * 1024
            )
            await producer.start()
            try:
                out = []
                for i, (key, value) in enumerate(messages):
                    md = await producer.send_and_wait(topic, value, key=key)
                    k = keys[i] if keys is not None else (key or b"").decode()
                    out.append(
                        AgentMessage(
                            key=k,
                            event=event,
                            partition=md.partition,
                            offset=md.offset,
                            arrived=md.timestamp / 1000.0,
                            sequence=None,
                            location="",
                            reason=reasons[i] if reasons is not None else None,
                        )
                    )
                return out
            finally:
                await producer.stop()

        sent: list[AgentMessage] = run_sync(go)
        self.manual.extend(sent)
        return sent
