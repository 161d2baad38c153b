"""Run arcbeat workers as subprocesses against the real broker, and judge what they emit.

Used by ``tests/test_worker_e2e.py``:

- :class:`Deployment`: one isolated deployment (its own topic prefix = Faust app id, data
  folder, web ports and compressed time) with its worker and simulator processes, all killed
  by :meth:`Deployment.close`.
- :func:`read_topic`: every record of a topic (``read_committed`` for the worker's outputs).
- :class:`GroundTruth`: the simulator's log of what it did, with broker arrival times.
- :class:`Oracle`: the transitions docs/how-it-decides.md requires, computed independently of the
  engine from the ground truth and the worker's *tick* records in the heartbeats log. A tick tells
  up to which broker time a partition had been read (see ``streams/worker.py``), so the oracle knows
  exactly which deadlines the worker could see; the ground-truth gap check (:func:`undeclared_gaps`)
  makes sure the ticks themselves did not stop.
- :func:`compare`: observed vs expected, per machine, field by field.

``ARCBEAT_E2E_KEEP_TOPICS=1`` keeps a deployment's topics after the test (to inspect them);
by default they are deleted, the broker being shared.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from arcbeat.deploy.aio import run_sync
from arcbeat.deploy.services import port_open
from arcbeat.deploy.stack import Stack
from arcbeat.streams.groundtruth import expected_silences, read_groundtruth
from arcbeat.streams.records import parse_rfc3339
from arcbeat.streams.scenarios import Fleet, FleetSpec
from arcbeat.streams.settings import Settings

T = TypeVar("T")

TICK_HEADER = "arcbeat-tick"
REPO = Path(__file__).resolve().parent.parent

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


def say(message: str) -> None:
    """Progress and measured figures (shown with ``pytest -s``, or on failure)."""
    print(f"[e2e {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port_block(n: int) -> int:
    """A base port such that ``base .. base+n-1`` are free on 127.0.0.1."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + n > 65535:
            continue
        ok = True
        for port in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError(f"no block of {n} free TCP ports on 127.0.0.1")


def free_port_block_below_ephemeral(n: int) -> int:
    """A base port such that ``base .. base+n-1`` are free on 127.0.0.1, below Linux's
    ephemeral range: while a broker is down, clients reconnecting to a port inside that
    range may be given it as their own source port (a TCP self-connection) and keep it busy."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 32_000 - n)
        free = True
        for port in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    free = False
                    break
        if free and not any(port_open(p) for p in range(base, base + n)):
            return base
    raise RuntimeError(f"no block of {n} free TCP ports below 32000 on 127.0.0.1")


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    *,
    timeout: float,
    every: float = 0.5,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns something other than None (or fail after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{on_timeout()}" if on_timeout is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{extra}")
        time.sleep(every)


# ---------------------------------------------------------------------------------------------
# HTTP


def http_get(
    url: str, params: Mapping[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, Any]:
    """GET ``url``; returns (status, parsed JSON body or text)."""
    if params:
        url = f"{url}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            status, body = int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        status, body = int(exc.code), exc.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------
# processes


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
            delete_topics(self.settings.kafka_bootstrap, (f"{self.name}.", f"{self.name}-"))

    # -- topics --------------------------------------------------------------------------------
    @property
    def status_topic(self) -> str:
        return str(self.settings.status_topic)

    def status(self) -> Observed:
        return Observed.parse(read_topic(self.settings.kafka_bootstrap, self.status_topic))

    def ticks(self) -> tuple[list[Tick], list[KafkaRecord]]:
        """Tick records and agent records of the heartbeats log."""
        ticks: list[Tick] = []
        agents: list[KafkaRecord] = []
        for r in read_topic(
            self.settings.kafka_bootstrap, self.settings.heartbeats_topic, committed=False
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
        topic = self.settings.heartbeats_topic
        bootstrap = self.settings.kafka_bootstrap

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


# ---------------------------------------------------------------------------------------------
# topics


def delete_topics(bootstrap: str, prefixes: tuple[str, ...]) -> list[str]:
    """Delete the topics whose names start with one of ``prefixes``."""

    async def go() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            names = [t for t in await admin.list_topics() if t.startswith(prefixes)]
            if names:
                await admin.delete_topics(names)
            return names
        finally:
            await admin.close()

    names: list[str] = run_sync(go)
    return names


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    partition: int
    offset: int
    timestamp: float  # seconds
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def read_topic(
    bootstrap: str, topic: str, *, committed: bool = True, timeout: float = 60.0
) -> list[KafkaRecord]:
    """Every record of ``topic`` up to its end now (the last stable offset when committed)."""

    async def go() -> list[KafkaRecord]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed" if committed else "read_uncommitted",
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        await consumer.start()
        try:
            metadata = await consumer._client.fetch_all_metadata()
            parts = metadata.partitions_for_topic(topic)
            if not parts:
                raise AssertionError(f"topic {topic} does not exist on {bootstrap}")
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            out: list[KafkaRecord] = []
            deadline = time.monotonic() + timeout
            while True:
                behind = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
                if not behind:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"reading {topic}: still behind on {behind}")
                batches = await consumer.getmany(*behind, timeout_ms=500)
                for tp, records in batches.items():
                    for r in records:
                        if r.offset >= ends[tp]:
                            continue
                        out.append(
                            KafkaRecord(
                                tp.partition,
                                r.offset,
                                r.timestamp / 1000.0,
                                r.key,
                                r.value,
                                tuple((k, bytes(v)) for k, v in (r.headers or ())),
                            )
                        )
            out.sort(key=lambda r: (r.partition, r.offset))
            return out
        finally:
            await consumer.stop()

    records: list[KafkaRecord] = run_sync(go)
    return records


# ---------------------------------------------------------------------------------------------
# observed transitions


@dataclass(frozen=True, slots=True)
class Transition:
    """A StatusChanged record read from ``<prefix>.status`` (or an expected one)."""

    key: str
    number: int
    previous: str | None
    status: str
    reason: str
    decided_at: float
    last_heartbeat_at: float
    flapping: bool
    mass_outage: bool
    changed_at: float = 0.0
    delay: float | None = None
    tid: str = ""
    location: str = ""
    resource_id: str = ""

    def short(self) -> str:
        mass = " mass" if self.mass_outage else ""
        flap = " flapping" if self.flapping else ""
        return (
            f"#{self.number} {self.previous}->{self.status} ({self.reason}{mass}{flap}) "
            f"decided {self.decided_at:.3f} lastHb {self.last_heartbeat_at:.3f}"
        )


@dataclass(frozen=True, slots=True)
class ScopeEvent:
    type: str
    scope: str
    machines: int
    at: float


@dataclass
class Observed:
    by_key: dict[str, list[Transition]]
    scope_events: list[ScopeEvent]
    duplicate_ids: list[str]
    records: int

    @classmethod
    def parse(cls, records: Iterable[KafkaRecord]) -> Observed:
        by_key: dict[str, list[Transition]] = defaultdict(list)
        scopes: list[ScopeEvent] = []
        ids: Counter[str] = Counter()
        n = 0
        for r in records:  # partition/offset order: a key's records are in emission order
            n += 1
            assert r.value is not None, f"status record without value at {r.partition}/{r.offset}"
            rec = orjson.loads(r.value)
            if rec["type"] in ("ScopeSilent", "ScopeRecovered"):
                scopes.append(
                    ScopeEvent(
                        rec["type"], rec["scope"], int(rec["machines"]), parse_rfc3339(rec["at"])
                    )
                )
                continue
            assert rec["type"] == "StatusChanged", rec
            tid = rec["transitionId"]
            ids[tid] += 1
            key, _, rest = tid.partition("#")
            assert r.key is not None and r.key.decode() == key == rec["resourceId"].lower(), rec
            by_key[key].append(
                Transition(
                    key=key,
                    number=int(rest.split("@")[0]),
                    previous=rec["previousStatus"],
                    status=rec["status"],
                    reason=rec["reason"],
                    decided_at=parse_rfc3339(rec["decidedAt"]),
                    last_heartbeat_at=parse_rfc3339(rec["lastHeartbeatAt"]),
                    flapping=bool(rec["flapping"]),
                    mass_outage=bool(rec["massOutage"]),
                    changed_at=parse_rfc3339(rec["changedAt"]),
                    delay=rec["detectionDelaySeconds"],
                    tid=tid,
                    location=rec["location"],
                    resource_id=rec["resourceId"],
                )
            )
        scopes.sort(key=lambda e: e.at)
        return cls(dict(by_key), scopes, sorted(t for t, c in ids.items() if c > 1), n)

    def all(self) -> list[Transition]:
        return [t for ts in self.by_key.values() for t in ts]

    def scope(
        self, kind: str, scope: str | None = None, *, until: float | None = None
    ) -> list[ScopeEvent]:
        return [
            e
            for e in self.scope_events
            if e.type == kind
            and (scope is None or e.scope == scope)
            and (until is None or e.at <= until)
        ]

    def silent_intervals(self) -> dict[str, list[tuple[float, float]]]:
        """Per scope, the [ScopeSilent.at, ScopeRecovered.at) verdict intervals."""
        out: dict[str, list[tuple[float, float]]] = defaultdict(list)
        open_at: dict[str, float] = {}
        for e in self.scope_events:
            if e.type == "ScopeSilent":
                open_at.setdefault(e.scope, e.at)
            elif e.scope in open_at:
                out[e.scope].append((open_at.pop(e.scope), e.at))
        for scope, start in open_at.items():
            out[scope].append((start, float("inf")))
        return dict(out)


# ---------------------------------------------------------------------------------------------
# ground truth


@dataclass(frozen=True, slots=True)
class AgentMessage:
    """One message an agent (or the test) put on the heartbeats topic."""

    key: str
    event: str  # connect, heartbeat, disconnect, duplicate, malformed
    partition: int
    offset: int
    arrived: float  # broker LogAppendTime
    sequence: int | None
    location: str
    reason: str | None = None  # expected DLQ reason of a malformed message


@dataclass
class GroundTruth:
    path: Path
    header: dict[str, Any]
    start: float
    end: float
    messages: list[AgentMessage]
    actions: list[dict[str, Any]]  # stop/resume per machine and per scope
    locations: dict[str, str]  # key -> location
    resource_ids: dict[str, str]  # key -> original spelling

    @classmethod
    def load(cls, path: Path) -> GroundTruth:
        header: dict[str, Any] | None = None
        end: float | None = None
        messages: list[AgentMessage] = []
        actions: list[dict[str, Any]] = []
        locations: dict[str, str] = {}
        rids: dict[str, str] = {}
        errors = []
        for rec in read_groundtruth(path):
            ev = rec.get("event")
            if ev == "header":
                header = rec
            elif ev == "end":
                end = float(rec["t"])
            elif ev in ("stop", "resume"):
                actions.append(rec)
            elif "error" in rec:
                errors.append(rec)
            else:
                key = rec["key"]
                locations[key] = rec["location"]
                rids[key] = rec["resourceId"]
                messages.append(
                    AgentMessage(
                        key,
                        str(ev),
                        int(rec["partition"]),
                        int(rec["offset"]),
                        float(rec["appendedAt"]),
                        rec.get("sequence"),
                        rec["location"],
                        rec.get("reason"),
                    )
                )
        assert header is not None and end is not None, f"{path}: incomplete ground truth"
        assert not errors, f"{path}: {len(errors)} sends failed, e.g. {errors[0]}"
        return cls(path, header, float(header["t"]), end, messages, actions, locations, rids)

    def fleet(self) -> Fleet:
        spec = dict(self.header["fleet"])
        spec["locations"] = tuple(spec["locations"])
        return Fleet(FleetSpec(**spec))

    def machines(self) -> set[str]:
        return {m.key for m in self.messages if m.event in ("connect", "heartbeat")}

    def stopped(self, reason: str) -> set[str]:
        return {
            a["key"] for a in self.actions if a["event"] == "stop" and a.get("reason") == reason
        }

    def with_manual(self, manual: Iterable[AgentMessage]) -> list[AgentMessage]:
        return [*self.messages, *manual]


@dataclass(frozen=True, slots=True)
class Tick:
    partition: int
    offset: int
    at: float


# ---------------------------------------------------------------------------------------------
# the oracle


@dataclass(slots=True)
class _State:
    status: str
    last: float
    changed: float
    number: int
    flap_window: float
    flap_count: int
    location: str
    held_since: float | None = None
    late_seen: bool = False  # a tick saw it late (missed a heartbeat) before its deadline
    pending_since: float | None = None  # late and due in one tick: waits for a verdict


class Oracle:
    """docs/how-it-decides.md over the log as the worker sees it: agent messages and ticks in
    offset order.

    ``silent``: per scope, the verdict intervals of the mass-silence rule (observed; the
    oracle does not re-derive the verdict, only what a verdict implies for each machine).
    A verdict is shared through a global table, so a tick of another partition within
    ``fuzz`` seconds of a verdict change may be processed before or after the change is
    visible; at such a tick either outcome is right, and ``guide`` (the observed output)
    says which one the worker took. Everything else is decided by the oracle alone.
    """

    def __init__(
        self,
        settings: Settings,
        silent: Mapping[str, list[tuple[float, float]]] | None = None,
        fuzz: float = 2.0,
        guide: Observed | None = None,
    ) -> None:
        self.guide = guide
        self.grace = min(1.5 * settings.heartbeat_interval, settings.disconnect_after / 2)
        self.d = settings.disconnect_after
        self.e = settings.expire_after
        self.hold = settings.outage_hold
        self.window = settings.window
        self.flap = settings.flap_threshold
        self.silent = dict(silent or {})
        self.fuzz = fuzz
        self.out: dict[str, list[Transition]] = defaultdict(list)
        self.state: dict[str, _State] = {}

    def _silent_at(self, location: str, t: float, held: bool) -> tuple[bool, bool]:
        """(does a scope of the machine hold it at t, is t near a verdict boundary).

        A held machine stays held for ``grace`` (one late_after) past its scope's recovery:
        the agents that report again come back over a heartbeat interval.
        """
        silent = near = False
        for scope in ("fleet", f"location={location}"):
            for start, end in self.silent.get(scope, ()):
                until = end + self.grace if held else end
                if start <= t < until:
                    silent = True
                if any(abs(t - b) < self.fuzz for b in (start, end, until)):
                    near = True
        return silent, near

    def _emit(
        self,
        key: str,
        st: _State | None,
        status: str,
        reason: str,
        at: float,
        last: float,
        *,
        mass: bool = False,
        location: str = "",
    ) -> tuple[int, float, int]:
        number = (st.number if st else 0) + 1
        window = at - (at % self.window)
        count = (st.flap_count if st and st.flap_window == window else 0) + 1
        self.out[key].append(
            Transition(
                key,
                number,
                st.status if st else None,
                status,
                reason,
                at,
                last,
                count >= self.flap,
                mass,
                location=st.location if st else location,
            )
        )
        return number, window, count

    def run(
        self, messages: Iterable[AgentMessage], ticks: Iterable[Tick]
    ) -> dict[str, list[Transition]]:
        per_part: dict[int, list[tuple[int, AgentMessage | Tick]]] = defaultdict(list)
        for m in messages:
            if m.event in ("connect", "heartbeat", "disconnect"):
                per_part[m.partition].append((m.offset, m))
        for t in ticks:
            per_part[t.partition].append((t.offset, t))
        for p, events in per_part.items():
            events.sort(key=lambda e: e[0])
            offsets = [o for o, _ in events]
            assert len(offsets) == len(set(offsets)), f"partition {p}: offsets used twice"
            keys: set[str] = set()
            for _, ev in events:
                if isinstance(ev, Tick):
                    for key in sorted(keys):
                        self._tick(key, ev.at)
                else:
                    keys.add(ev.key)
                    self._message(ev)
        return dict(self.out)

    def _message(self, m: AgentMessage) -> None:
        st = self.state.get(m.key)
        a = m.arrived
        if m.event == "disconnect":
            if st is not None:
                self._emit(m.key, st, "Deleted", "agent_disconnected", a, st.last)
                del self.state[m.key]
            return
        if st is None:
            n, w, c = self._emit(m.key, None, "Connected", "onboarded", a, a, location=m.location)
            self.state[m.key] = _State("Connected", a, a, n, w, c, m.location)
            return
        if st.status == "Expired":
            if m.event == "connect":
                n, w, c = self._emit(m.key, st, "Connected", "reonboarded", a, a)
                st.status, st.last, st.changed = "Connected", a, a
                st.number, st.flap_window, st.flap_count, st.held_since = n, w, c, None
            return
        st.last = max(st.last, a)
        st.held_since = None
        st.late_seen, st.pending_since = False, None
        if st.status == "Disconnected":
            n, w, c = self._emit(m.key, st, "Connected", "heartbeat_resumed", a, st.last)
            st.status, st.changed = "Connected", a
            st.number, st.flap_window, st.flap_count = n, w, c

    def _tick(self, key: str, now: float) -> None:
        st = self.state.get(key)
        if st is None:
            return
        if st.status == "Connected":
            if now < st.last + self.d:
                if now >= st.last + self.grace:
                    st.late_seen = True
                return
            silent, near = self._silent_at(st.location, now, st.held_since is not None)
            if near and self.guide is not None:
                declared = any(
                    t.status == "Disconnected" and abs(t.decided_at - now) <= 0.002
                    for t in self.guide.by_key.get(key, ())
                )
                silent = not declared
            if st.held_since is None and silent:
                st.held_since = now
                return
            if st.held_since is None and not st.late_seen and self.guide is not None:
                # Late and due in one tick (a backlog was just read): the worker waits for a
                # mass-silence decision newer than this machine's counts (Engine._await_verdict)
                # or for outage_hold. When that decision lands depends on partition 0's
                # processing, not on the log alone: the observed output says which tick it was.
                if st.pending_since is None:
                    st.pending_since = now
                declared_here = any(
                    t.status == "Disconnected" and abs(t.decided_at - now) <= 0.002
                    for t in self.guide.by_key.get(key, ())
                )
                if not declared_here and now < st.pending_since + self.hold:
                    return
            if st.held_since is not None and silent and now < st.held_since + self.hold:
                return
            mass = st.held_since is not None
            n, w, c = self._emit(
                key,
                st,
                "Disconnected",
                "heartbeat_timeout",
                now,
                st.last,
                mass=mass,
            )
            st.status, st.changed, st.held_since = "Disconnected", now, None
            st.pending_since = None
            st.number, st.flap_window, st.flap_count = n, w, c
        elif st.status == "Disconnected" and now >= st.changed + self.e:
            n, w, c = self._emit(key, st, "Expired", "expired", now, st.last)
            st.status, st.changed = "Expired", now
            st.number, st.flap_window, st.flap_count = n, w, c


def in_scope(ts: Sequence[Transition], cutoff: float, disconnect_after: float) -> list[Transition]:
    """A machine's transitions up to (not including) its first Disconnected whose deadline is
    after ``cutoff``: past that, the end of the simulation (every agent stops) decides."""
    out = []
    for t in ts:
        if t.reason == "heartbeat_timeout" and t.last_heartbeat_at + disconnect_after > cutoff:
            break
        out.append(t)
    return out


def compare(
    observed: Observed,
    expected: Mapping[str, Sequence[Transition]],
    *,
    cutoff: float,
    disconnect_after: float,
    tolerance: float = 0.002,
    limit: int = 25,
) -> list[str]:
    """Problems found comparing observed with expected transitions (empty: identical)."""
    problems: list[str] = [
        f"transitionId emitted more than once: {t}" for t in observed.duplicate_ids
    ]
    for key, ts in observed.by_key.items():
        for a, b in itertools.pairwise(ts):
            if not (b.number == a.number + 1 or (a.status == "Deleted" and b.number == 1)):
                problems.append(f"{key}: transition numbers jump {a.number} -> {b.number}")
    for key in sorted(set(observed.by_key) | set(expected)):
        got = in_scope(observed.by_key.get(key, []), cutoff, disconnect_after)
        want = in_scope(expected.get(key, []), cutoff, disconnect_after)
        why = _diff(got, want, tolerance)
        if why:
            problems.append(
                f"{key} ({(want or got)[0].location if (want or got) else '?'}): {why}\n"
                f"    expected: {[t.short() for t in want]}\n"
                f"    observed: {[t.short() for t in got]}"
            )
    if len(problems) > limit:
        problems = [*problems[:limit], f"... and {len(problems) - limit} more problems"]
    return problems


def _diff(got: Sequence[Transition], want: Sequence[Transition], tol: float) -> str | None:
    for i, (g, w) in enumerate(zip(got, want, strict=False)):
        same = (
            (g.number, g.previous, g.status, g.reason, g.mass_outage)
            == (w.number, w.previous, w.status, w.reason, w.mass_outage)
            and abs(g.decided_at - w.decided_at) <= tol
            and abs(g.last_heartbeat_at - w.last_heartbeat_at) <= tol
            and g.flapping == w.flapping
        )
        if not same:
            return f"transition {i + 1} differs: expected {w.short()}, observed {g.short()}"
    if len(got) != len(want):
        return f"{len(want)} transitions expected, {len(got)} observed"
    return None


def undeclared_gaps(
    truth: GroundTruth,
    observed: Observed,
    settings: Settings,
    *,
    cutoff: float,
    blind: Sequence[tuple[float, float]] = (),
    slack: float = 1.0,
    held: Callable[[str, float], bool] | None = None,
) -> list[str]:
    """Ground-truth silences (gaps between delivered heartbeats longer than disconnect_after)
    with a deadline before ``cutoff`` that no Disconnected declares, and Disconnected with no
    ground-truth silence behind them.

    A gap is excused only when it is at most ``slack`` past the deadline (ticks come every
    check_interval), or it opened and closed inside a ``blind`` window (a worker that is
    stopped sees no deadline pass), or ``held(key, deadline)`` (a mass-silence hold).
    """
    d = settings.disconnect_after
    silences = expected_silences(truth.path, d, end=truth.end)
    declared = {
        (t.key, round(t.last_heartbeat_at, 3))
        for t in observed.all()
        if t.reason == "heartbeat_timeout"
    }
    problems = []
    gaps = set()
    for key, gs in silences.items():
        for g in gs:
            deadline = g.last_heartbeat + d
            gaps.add((key, round(g.last_heartbeat, 3)))
            if deadline > cutoff or (key, round(g.last_heartbeat, 3)) in declared:
                continue
            resumed = g.resumed if g.resumed is not None else float("inf")
            if resumed - deadline <= slack:
                continue
            if any(b0 <= deadline and resumed <= b1 for b0, b1 in blind):
                continue
            if held is not None and held(key, deadline):
                continue
            problems.append(
                f"{key}: silent from {g.last_heartbeat:.3f} to "
                f"{'the end' if g.resumed is None else f'{resumed:.3f}'} (deadline "
                f"{deadline:.3f}) but never declared Disconnected"
            )
    for t in observed.all():
        if (
            t.reason == "heartbeat_timeout"
            and t.last_heartbeat_at + d <= cutoff
            and (t.key, round(t.last_heartbeat_at, 3)) not in gaps
        ):
            problems.append(f"{t.key}: false Disconnected, no ground-truth silence: {t.short()}")
    return problems


def tick_gaps(ticks: Sequence[Tick], start: float, end: float) -> float:
    """The longest time between consecutive ticks of one partition within [start, end]."""
    by_part: dict[int, list[float]] = defaultdict(list)
    for t in ticks:
        if start <= t.at <= end:
            by_part[t.partition].append(t.at)
    worst = 0.0
    for ats in by_part.values():
        ats.sort()
        worst = max([worst, *(b - a for a, b in itertools.pairwise(ats))])
    return worst


def stats(values: Sequence[float]) -> str:
    if not values:
        return "n=0"
    v = sorted(values)
    p50 = v[len(v) // 2]
    p95 = v[min(len(v) - 1, int(len(v) * 0.95))]
    return f"n={len(v)} min={v[0]:.3f}s p50={p50:.3f}s p95={p95:.3f}s max={v[-1]:.3f}s"


def detection_delays(ts: Iterable[Transition], *, mass: bool = False) -> list[float]:
    return [
        t.delay
        for t in ts
        if t.reason == "heartbeat_timeout" and t.delay is not None and t.mass_outage == mass
    ]


def connected_latencies(ts: Iterable[Transition]) -> list[float]:
    """changedAt (when the worker emitted it) minus the heartbeat's broker arrival."""
    return [
        t.changed_at - t.decided_at
        for t in ts
        if t.status == "Connected" and t.reason in ("heartbeat_resumed", "reonboarded")
    ]


def settle(
    what: str, check: Callable[[], list[str]], *, timeout: float, every: float = 1.5
) -> None:
    """Re-run ``check`` until it finds no problem; fail with its last problems after timeout."""
    deadline = time.monotonic() + timeout
    problems: list[str] = []
    while True:
        problems = check()
        if not problems:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {len(problems)} problem(s):\n" + "\n".join(problems))
        time.sleep(every)


@dataclass
class Judged:
    """What a finished run produced, once it matched the oracle."""

    observed: Observed
    expected: dict[str, list[Transition]]
    ticks: list[Tick]
    agents: list[KafkaRecord]
    cutoff: float
    disconnect_after: float

    def in_scope(self, key: str) -> list[Transition]:
        """The machine's observed transitions before the end of the run took over."""
        return in_scope(self.observed.by_key.get(key, []), self.cutoff, self.disconnect_after)

    def scoped(self) -> list[Transition]:
        return [t for key in self.observed.by_key for t in self.in_scope(key)]


def judge(
    dep: Deployment,
    truth: GroundTruth,
    *,
    blind: Sequence[tuple[float, float]] = (),
    timeout: float = 40.0,
    use_verdicts: bool = False,
    verdict_fuzz: float = 2.0,
) -> Judged:
    """Wait until ``<prefix>.status`` (read_committed) holds exactly the oracle's transitions
    for everything the ground truth decided before the end of the run, and no ground-truth
    silence went undeclared; fail with the differences otherwise.

    ``use_verdicts``: apply the observed mass-silence verdicts (holds) in the oracle; without
    it, any ScopeSilent before the cutoff is itself a problem. ``verdict_fuzz``: how far (log
    time) from a verdict change a tick may see either verdict; while a worker catches up on a
    backlog, partitions are read in any interleaving, so it grows to the backlog's length.
    """
    s = dep.settings
    cutoff = truth.end - 2.0  # past this, every agent stopping at the end decides
    horizon = truth.end + (s.expire_after if s.expire_after < 60 else 0.0) + 1.0
    messages = truth.with_manual(dep.manual)
    result: list[Judged] = []

    def check() -> list[str]:
        ticks, agents = dep.ticks()
        observed = dep.status()
        problems: list[str] = []
        last_tick: dict[int, float] = {}
        for t in ticks:
            last_tick[t.partition] = max(last_tick.get(t.partition, 0.0), t.at)
        behind = [p for p in range(s.partitions) if last_tick.get(p, 0.0) < horizon]
        if behind:
            problems.append(f"partitions {behind} not ticked past {horizon:.3f} yet")
        if len(agents) != len(messages):
            problems.append(
                f"heartbeats topic holds {len(agents)} agent records, ground truth "
                f"and test sent {len(messages)}"
            )
        silent = observed.silent_intervals() if use_verdicts else {}
        if not use_verdicts:
            early = [e for e in observed.scope_events if e.at <= cutoff]
            problems += [f"unexpected {e.type} {e.scope} at {e.at:.3f}" for e in early]
        expected = Oracle(s, silent, fuzz=verdict_fuzz, guide=observed).run(messages, ticks)
        problems += compare(observed, expected, cutoff=cutoff, disconnect_after=s.disconnect_after)

        def held(key: str, deadline: float) -> bool:
            loc = truth.locations.get(key, "")
            return any(
                a - max(2.0, verdict_fuzz) <= deadline <= b + s.outage_hold
                for scope in ("fleet", f"location={loc}")
                for a, b in silent.get(scope, ())
            )

        problems += undeclared_gaps(truth, observed, s, cutoff=cutoff, blind=blind, held=held)
        result[:] = [Judged(observed, expected, ticks, agents, cutoff, s.disconnect_after)]
        return problems

    settle(f"{dep.name}: transitions vs ground truth", check, timeout=timeout)
    j = result[0]
    say(
        f"{dep.name}: {j.observed.records} status records, "
        f"{sum(len(v) for v in j.expected.values())} expected transitions (incl. end of run), "
        f"{len(j.ticks)} ticks; cutoff = end - 2 s; all in-scope transitions match"
    )
    return j


# ---- what the agents really sent (for the fault tests) ----


def send_times(truth: GroundTruth) -> dict[str, list[tuple[float, float]]]:
    """Per machine, (send time, broker arrival) of each delivered connect/heartbeat, in send
    order: when the agent sent it, not when the broker got it."""
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for rec in read_groundtruth(truth.path):
        if rec.get("event") in ("connect", "heartbeat") and "appendedAt" in rec:
            out[rec["key"]].append((float(rec["t"]), float(rec["appendedAt"])))
    for sends in out.values():
        sends.sort()
    return dict(out)


def false_disconnected(j: Judged, truth: GroundTruth) -> list[str]:
    """Disconnected (heartbeat_timeout, before the end of the run) of a machine whose agent
    sent its next heartbeat less than disconnect_after after the last one the worker had:
    the agent kept sending; only the broker (or the worker) was late."""
    d = j.disconnect_after
    sends = send_times(truth)
    out = []
    for t in j.scoped():
        if t.reason != "heartbeat_timeout":
            continue
        mine = sends.get(t.key, [])
        # the last one sent of those that arrived then (a backlog arrives in one batch)
        i = max(
            (i for i, (_, a) in enumerate(mine) if abs(a - t.last_heartbeat_at) <= 0.002),
            default=None,
        )
        if i is None:
            out.append(
                f"{t.key}: Disconnected after a heartbeat not in the ground truth: {t.short()}"
            )
            continue
        sent = mine[i][0]
        following = mine[i + 1][0] if i + 1 < len(mine) else truth.end
        if following - sent < d:
            out.append(
                f"{t.key}: false Disconnected {t.short()}: the agent sent again "
                f"{following - sent:.2f}s after the heartbeat sent at {sent:.3f}"
            )
    return out
