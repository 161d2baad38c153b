"""The whole pipeline on one machine (``arcbeat demo``).

1. Starts the local stack (if it is not running) and starts the demo afresh: its topics
   (``<prefix>.*``), its workers' state and its InfluxDB database are deleted and created again,
   so that nothing of an earlier run (above all a fleet that went silent when it stopped) shows
   up in this one.
2. Starts a worker and the history exporter, and once the worker is ready, a simulated fleet
   with time compressed (a 2 s heartbeat stands for 5 minutes) whose scenarios (outages,
   flapping, agent disconnects, a silent location, malformed messages, clock skew) play for
   ``duration`` seconds. Every status record is printed in time order as it is committed.
3. Prints a summary (transitions by kind, detection delay against the service level, DLQ by
   reason, alerts, history points, the fleet now), what is still running and where to look.
4. Keeps the worker, the history exporter and the fleet (steady heartbeats: the scenarios are
   over) running until Ctrl-C, so that every pointer it printed answers. Ctrl-C stops the
   worker first, so that no worker sees the simulated fleet go silent, then the fleet, then the
   history exporter; the local stack keeps running (``arcbeat stack down`` stops it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from arcbeat.deploy.aio import run_sync
from arcbeat.deploy.api_client import base_url
from arcbeat.deploy.demo_report import (
    Tally,
    TimeOrder,
    Unanswered,
    alertmanager_alerts,
    clock,
    fleet_line,
    get_json,
    influx_points,
    prometheus_alerts,
    scraped,
    summary,
)
from arcbeat.deploy.demo_uplink import UplinkPlan, early_warning_lines
from arcbeat.deploy.errors import StackError
from arcbeat.deploy.kafka_admin.client import close_quietly
from arcbeat.deploy.services import port_open, tail
from arcbeat.deploy.settings import Settings
from arcbeat.deploy.stack import Stack

DEMO_PREFIX = "arcbeat-demo"
MIN_DURATION = 60.0  # room for every scenario and its verdicts
SILENT_LOCATION = "westeurope"
SILENT_FOR = 24.0  # long enough for Prometheus (15 s scrapes) to see the scope silent
PROGRESS_EVERY = 20.0  # seconds between progress lines while the scenarios play
STOP_TIMEOUT = 30.0  # seconds a demo process gets to stop before it is killed

Say = Callable[[str], None]


def say(line: str = "") -> None:
    print(line, flush=True)


def demo_env(prefix: str) -> dict[str, str]:
    """The demo's settings: its own topics, worker group and InfluxDB database, and time
    compressed 150 times (production: 5 min heartbeats, Disconnected after 15 min, a mass
    silence held 15 min, 1 h availability windows)."""
    return {
        "ARCBEAT_TOPIC_PREFIX": prefix,
        "ARCBEAT_APP_ID": prefix,
        "ARCBEAT_INFLUX_DB": prefix.replace("-", "_").replace(".", "_"),
        "ARCBEAT_HEARTBEAT_INTERVAL": "2s",
        "ARCBEAT_DISCONNECT_AFTER": "6s",
        "ARCBEAT_CHECK_INTERVAL": "0.5s",
        "ARCBEAT_OUTAGE_MIN_MACHINES": "10",
        "ARCBEAT_OUTAGE_HOLD": "30s",
        "ARCBEAT_WINDOW": "60s",
        "ARCBEAT_FLEET_SNAPSHOT_INTERVAL": "5s",
    }


@dataclass(frozen=True)
class Plan:
    """When the scenarios happen, as offsets from the fleet's start: all of them, and the
    verdicts they lead to, are over ``settle`` seconds before ``duration``."""

    machines: int
    duration: float
    interval: float  # heartbeat interval
    disconnect_after: float

    @property
    def gone(self) -> float:
        """An outage long enough to be declared (the simulator's default)."""
        return self.disconnect_after + 2 * self.interval

    @property
    def settle(self) -> float:
        return self.disconnect_after + 2 * self.interval

    @property
    def silent_at(self) -> float:
        return min(0.45 * self.duration, self.duration - self.settle - SILENT_FOR)

    @property
    def outages_until(self) -> float:
        return self.duration - self.settle - self.gone

    @property
    def flap_cycles(self) -> int:
        cycle = self.gone + 3 * self.interval  # down, then up for three heartbeats
        return max(1, int((self.duration - self.settle - 2 * self.interval) // cycle))

    def simulate_args(self, groundtruth: Path) -> list[str]:
        """``arcbeat simulate`` arguments: no --duration, so the fleet keeps sending steady
        heartbeats after the scenarios until it is stopped."""
        return [
            "simulate",
            "-n",
            str(self.machines),
            "--scenario",
            "steady,outages,flap,disconnect,location-silent,malformed,skew",
            "--outage-window",
            f"{self.interval:g}:{self.outages_until:g}",
            "--flap-cycles",
            str(self.flap_cycles),
            "--silent-location",
            SILENT_LOCATION,
            "--silent-at",
            f"{self.silent_at:g}",
            "--silent-for",
            f"{SILENT_FOR:g}",
            "--groundtruth",
            str(groundtruth),
        ]

    def describe(self) -> list[str]:
        return [
            fleet_line(self.machines, self.interval, self.disconnect_after),
            f"For {_minutes(self.duration)} (then steady heartbeats):",
            "  outages of 5 % of the machines (a fifth never come back), 3 flapping machines,",
            "  1 % of the agents disconnecting (their machines are removed: Deleted),",
            f"  {SILENT_LOCATION} silent for {SILENT_FOR:g} s at {_minutes(self.silent_at)} "
            "(a regional outage: held, not declared one by one),",
            "  1 % malformed messages (rejected to the DLQ), 2 % of the agents with a skewed clock",
        ]


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


# -- processes --------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str  # worker, history, simulate
    title: str  # what it is, for people
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None


class Procs:
    """The demo's processes, each in its own session (Ctrl-C reaches the demo only)."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.items: list[Proc] = []
        self.summarised = False  # the summary is out: Ctrl-C is the demo's normal end

    def start(self, name: str, title: str, *argv: str) -> Proc:
        path = self.logs / f"{name}.log"
        log: IO[bytes] = open(path, "wb")  # noqa: SIM115 - the child keeps its own copy
        try:
            popen = subprocess.Popen(
                [sys.executable, "-m", "arcbeat.deploy.cli", *argv],
                env=self.env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            log.close()
        say(f"  started the {title}: arcbeat {' '.join(argv[:1])}  (pid {popen.pid}, log {path})")
        proc = Proc(name, title, popen, path)
        self.items.append(proc)
        return proc

    def get(self, name: str) -> Proc | None:
        return next((p for p in self.items if p.name == name), None)

    def stop(self, order: tuple[str, ...] = ("worker", "simulate", "history")) -> list[str]:
        """Stop the processes, in ``order``: SIGTERM, then SIGKILL after STOP_TIMEOUT."""
        done = []
        for name in order:
            proc = self.get(name)
            if proc is None:
                continue
            if proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGTERM)
                try:
                    proc.popen.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.popen.pid, signal.SIGKILL)
                    proc.popen.wait()
            done.append(proc.title)
        return done


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the demo like Ctrl-C does."""

    def interrupt(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait while the demo stops its processes."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# -- a fresh start ----------------------------------------------------------------------------


def reset(stack: Stack, settings: Settings, *, recreate_database: bool = True) -> list[str]:
    """Delete the demo's topics (its workers' state included) and empty its InfluxDB
    database (drop it, and create it again unless told not to). Returns the topics deleted."""
    names = [str(getattr(settings.topics, f.name)) for f in dataclasses.fields(settings.topics)]
    options = stack.brokers_of()[0].client_options() if stack.brokers_of() else {}
    deleted = run_sync(lambda: _delete_topics(stack.bootstrap, names, options))
    if settings.influx.api == "v1":
        db = settings.influx.db.replace("\\", "\\\\").replace('"', '\\"')
        queries = [f'DROP DATABASE "{db}"'] + [f'CREATE DATABASE "{db}"'] * recreate_database
        for query in queries:
            data = urllib.parse.urlencode({"q": query}).encode()
            with urllib.request.urlopen(f"{settings.influx.url}/query", data, timeout=30):
                pass
    return deleted


async def _delete_topics(bootstrap: str, names: list[str], options: dict[str, Any]) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="arcbeat-demo", **options)
    try:
        await admin.start()
        present = [n for n in names if n in set(await admin.list_topics())]
        if present:
            await admin.delete_topics(present, timeout_ms=30_000)
        deadline = time.monotonic() + 30
        while present and set(present) & set(await admin.list_topics()):
            if time.monotonic() > deadline:
                raise StackError(f"Kafka did not delete {', '.join(present)} within 30 s")
            await asyncio.sleep(0.5)
        return present
    finally:
        await close_quietly(admin)


# -- watching ---------------------------------------------------------------------------------


async def watch(
    stack: Stack,
    settings: Settings,
    tally: Tally,
    order: TimeOrder,
    started: float,
    duration: float,
    alive: Callable[[], str | None],
) -> None:
    """Read the status and DLQ topics (committed records only) from the start until
    ``started + duration``, printing the status records in time order, and a progress line
    every PROGRESS_EVERY seconds. Stops early when ``alive`` names a process that died."""
    topics = settings.topics
    options = stack.brokers_of()[0].client_options() if stack.brokers_of() else {}
    consumer = AIOKafkaConsumer(
        topics.status,
        topics.dlq,
        bootstrap_servers=stack.bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        group_id=None,
        **options,
    )
    await consumer.start()
    until = started + duration
    next_progress = started + PROGRESS_EVERY
    try:
        while time.time() < until + order.delay:
            batch = await consumer.getmany(timeout_ms=250)
            for tp, records in batch.items():
                for r in records:
                    if not r.value:
                        continue
                    try:
                        rec = orjson.loads(r.value)
                    except orjson.JSONDecodeError:
                        continue
                    if tp.topic == topics.dlq:
                        tally.add_dlq(rec)
                    else:
                        tally.add_status(rec)
                        order.add(rec)
            now = time.time()
            order.flush(now)
            if now >= next_progress and now < until:
                next_progress += PROGRESS_EVERY
                counts = tally.by_status()
                say(
                    f"  ... {_minutes(now - started)} of {_minutes(duration)}: "
                    f"{counts['Connected']:,} Connected, {counts['Disconnected']:,} "
                    f"Disconnected, {sum(tally.dlq.values()):,} messages rejected to the DLQ"
                )
            if alive() is not None:
                break
    finally:
        await consumer.stop()
    order.flush()


# -- what to print ----------------------------------------------------------------------------


def prometheus_ui(base: str) -> str:
    """Where Prometheus' pages are: ``""`` (its web UI at the root), or ``"/classic"`` (the
    only UI of Debian's package)."""
    for ui in ("", "/classic"):
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{base}{ui}/alerts", timeout=5) as r,
        ):
            if r.status == 200:
                return ui
    return ""


def pointers(
    settings: Settings,
    user: Settings,
    state: Path,
    logs: Path,
    *,
    worker: bool,
    ui: str = "",
) -> list[tuple[str, str]]:
    """Where to look: (what, a command or URL). With ``worker``, the worker's too; ``ui``: see
    :func:`prometheus_ui`."""
    url = base_url(None, settings)
    # the commands read the caller's settings: name the demo's worker when those differ
    flag = "" if base_url(None, user) == url else f" --url {url}"
    prom = settings.stack.prometheus_url.rstrip("/")
    influx = urllib.parse.urlsplit(settings.influx.url)
    where = (
        ""
        if (influx.hostname, influx.port) in (("localhost", 8086), ("127.0.0.1", 8086))
        else (f" -host {influx.hostname} -port {influx.port or 8086}")
    )
    found: list[tuple[str, str]] = []
    if worker:
        found += [
            ("fleet totals", f"arcbeat fleet{flag}"),
            ("offline machines", f"arcbeat machines --status Disconnected{flag}"),
            ("worker API", f"curl -s {url}/fleet"),
            ("worker metrics", f"curl -s {url}/metrics | grep '^arcbeat_machines{{'"),
        ]
    found += [
        ("Prometheus", f"{prom}{ui}/graph?g0.expr=sum%20by%20(status)(arcbeat_machines)"),
        ("alerts", f"{prom}{ui}/alerts"),
        ("Alertmanager", f"{settings.stack.alertmanager_url.rstrip('/')}/#/alerts"),
        (
            "history (InfluxDB)",
            f"influx{where} -precision rfc3339 -database {settings.influx.db} -execute "
            "'SELECT machine_name, status, reason FROM transitions ORDER BY time DESC LIMIT 20'",
        ),
        ("logs", f"{logs}/ (worker, history, simulate); the stack's: {state}/logs/"),
    ]
    return found


def _print_pointers(found: list[tuple[str, str]]) -> None:
    for what, how in found:
        say(f"  {what:<20}{how}")


def _report(
    settings: Settings, tally: Tally, plan: Plan | UplinkPlan, since: float, seconds: float
) -> list[str]:
    """Ask the worker, Prometheus, Alertmanager and InfluxDB, and summarise."""

    def ask(question: Callable[[], Any]) -> Any:
        try:
            return question()
        except (Unanswered, KeyError, TypeError) as exc:
            return str(exc)

    url = base_url(None, settings)
    prom = settings.stack.prometheus_url.rstrip("/")
    points: dict[str, int] | str = (
        ask(lambda: influx_points(settings.influx.url.rstrip("/"), settings.influx.db))
        if settings.influx.api == "v1"
        else "the demo counts points in InfluxDB 1.x only"
    )
    return summary(
        tally,
        machines=plan.machines,
        seconds=seconds,
        fleet=ask(lambda: get_json(f"{url}/fleet")),
        alerts=ask(lambda: prometheus_alerts(prom, since, time.time(), tally.status)),
        alertmanager=ask(
            lambda: alertmanager_alerts(settings.stack.alertmanager_url.rstrip("/"), tally.status)
        ),
        points=points,
        db=settings.influx.db,
    )


def _wait_ready(url: str, timeout: float, worker: Proc) -> None:
    """Until the worker's /readyz says ready (owns partitions, recovered, caught up)."""
    started = time.monotonic()
    deadline = started + timeout
    reason = "not answering yet"
    next_note = started + 5
    while time.monotonic() < deadline:
        if not worker.alive():
            raise StackError(
                f"the worker stopped (exit {worker.popen.returncode}); its log "
                f"{worker.log}:\n{tail(worker.log)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    say(f"  worker ready after {time.monotonic() - started:.0f} s ({url})")
                    return
        except urllib.error.HTTPError as exc:
            body = exc.read() or b"{}"
            with contextlib.suppress(ValueError):
                reason = str(orjson.loads(body).get("reason", exc))
        except OSError as exc:
            reason = str(exc)
        if time.monotonic() >= next_note:
            say(f"  waiting for the worker to be ready: {reason}")
            next_note += 5
        time.sleep(0.3)
    say(f"  worker not ready after {timeout:g}s ({reason}); going on")


def _check_ports(settings: Settings) -> None:
    for what, port in (
        ("the worker", settings.worker.web_port),
        ("the history exporter", settings.influx.history_port),
    ):
        if port_open(port):
            raise StackError(
                f"port {port} for {what} is in use: is a demo or a worker already "
                "running? Stop it, or give the demo other ports (ARCBEAT_WEB_PORT, "
                "ARCBEAT_HISTORY_PORT)."
            )


# -- the demo ---------------------------------------------------------------------------------


SCENARIOS = ("story", "uplink-degrades")


def run_demo(
    machines: int,
    duration: float,
    warmup: float,
    prefix: str = DEMO_PREFIX,
    scenario: str = "story",
) -> int:
    """Run the demo with ``machines`` simulated machines whose scenarios play for ``duration``
    seconds, waiting at most ``warmup`` seconds for the worker to be ready; then keep it
    running until Ctrl-C (or SIGTERM). ``scenario``: the story (every scenario at once) or
    uplink-degrades (early warning)."""
    user = Settings.load()
    if prefix == user.kafka.topic_prefix:
        say(
            f"arcbeat demo: the prefix {prefix!r} is your deployment's (ARCBEAT_TOPIC_PREFIX); "
            "the demo deletes its own topics at each run, so give it another --prefix"
        )
        return 2
    if scenario not in SCENARIOS:
        say(f"arcbeat demo: --scenario must be one of {', '.join(SCENARIOS)}, got {scenario!r}")
        return 2
    least = MIN_DURATION
    if scenario == "uplink-degrades":
        t = Settings.load(env={**os.environ, **demo_env(prefix)}).timing
        least = UplinkPlan(
            machines, duration, t.heartbeat_interval, t.disconnect_after
        ).min_duration
    if duration < least:
        say(f"arcbeat demo: --duration must be at least {least:g} s for the {scenario} scenario")
        return 2
    # the worker's local folder beside the demo's logs: state/<prefix>/
    overrides = {
        **demo_env(prefix),
        "ARCBEAT_DATA_DIR": str(Path(user.stack.state_dir) / prefix / "worker"),
    }
    env = {**os.environ, **overrides}
    os.environ.update(overrides)
    settings = Settings.load()
    stack = Stack(settings)
    procs = Procs(env, stack.state_dir / prefix)
    with _sigterm_as_interrupt():
        try:
            return _run(stack, settings, user, procs, machines, duration, warmup, scenario)
        except KeyboardInterrupt:
            say("" if procs.summarised else "\ninterrupted before the summary")
            return _stop(procs, settings, user, stack.state_dir)
        except Exception as exc:
            say(f"arcbeat demo: {exc}")
            _stop(procs, settings, user, stack.state_dir)
            if isinstance(exc, StackError):
                return 1
            raise


def _run(
    stack: Stack,
    settings: Settings,
    user: Settings,
    procs: Procs,
    machines: int,
    duration: float,
    warmup: float,
    scenario: str = "story",
) -> int:
    say("arcbeat demo: starting the local stack (Kafka, Prometheus, Alertmanager, InfluxDB)")
    stack.up(progress=lambda m: say(f"  {m}"))
    _check_ports(settings)
    say(
        f"starting afresh: the demo's topics ({settings.kafka.topic_prefix}.*), worker state and "
        f"InfluxDB database {settings.influx.db}"
    )
    deleted = reset(stack, settings)
    say(f"  deleted {len(deleted)} topics of an earlier run" if deleted else "  (first run)")
    stack.ensure_topics()
    procs.logs.mkdir(parents=True, exist_ok=True)
    worker = procs.start("worker", "worker", "worker")
    procs.start("history", "history exporter", "history")
    url = base_url(None, settings)
    _wait_ready(f"{url}/readyz", warmup, worker)
    t = settings.timing
    plan: Plan | UplinkPlan = (
        UplinkPlan(machines, duration, t.heartbeat_interval, t.disconnect_after)
        if scenario == "uplink-degrades"
        else Plan(machines, duration, t.heartbeat_interval, t.disconnect_after)
    )
    for line in plan.describe():
        say(line)
    since = time.time()
    procs.start(
        "simulate", "simulated fleet", *plan.simulate_args(procs.logs / "groundtruth.jsonl")
    )
    started = time.time()
    say(
        f"worker API on {url} (try `arcbeat fleet` in another terminal); the summary comes at "
        f"{clock(started + duration + 2, ms=False)} UTC"
    )
    say(f"\ntransitions (UTC, in time order, as committed to {settings.topics.status}):")
    tally = Tally(settings.timing.disconnect_after, settings.timing.heartbeat_interval)
    order = TimeOrder(say, machines)

    def dead() -> str | None:
        return next((p.title for p in procs.items if not p.alive()), None)

    asyncio.run(watch(stack, settings, tally, order, started, duration, dead))
    if (gone := dead()) is not None:
        raise StackError(f"the {gone} stopped; see its log in {procs.logs}")
    say("")
    for line in _report(settings, tally, plan, since, time.time() - started):
        say(line)
    if warned := early_warning_lines(tally):
        say("\nearly warning (ScopeDegraded, then the location's first Disconnected):")
        for line in warned:
            say(f"  {line}")
    _running(settings, procs)
    say("\nwhere to look, now:")
    ui = prometheus_ui(settings.stack.prometheus_url.rstrip("/"))
    _print_pointers(pointers(settings, user, stack.state_dir, procs.logs, worker=True, ui=ui))
    say("\nPress Ctrl-C to stop the worker, the history exporter and the simulated fleet.")
    procs.summarised = True
    while (gone := dead()) is None:
        time.sleep(0.5)
    say(f"\nthe {gone} stopped (see its log in {procs.logs}); stopping the demo")
    _stop(procs, settings, user, stack.state_dir)
    return 1


def _running(settings: Settings, procs: Procs) -> None:
    url = base_url(None, settings)
    try:
        health = scraped(
            settings.stack.prometheus_url.rstrip("/"), urllib.parse.urlsplit(url).netloc
        )
        seen = (
            f"Prometheus scrapes it: {health}"
            if health
            else ("Prometheus does not scrape this port: its job arcbeat scrapes 6066-6069")
        )
    except Unanswered as exc:
        seen = f"Prometheus did not answer: {exc}"
    rows = []
    for proc in procs.items:
        detail = {
            "worker": f"API and /metrics on {url} ({seen})",
            "history": f"writes to InfluxDB database {settings.influx.db}",
            "simulate": "its machines keep sending heartbeats (the scenarios are over)",
        }[proc.name]
        rows.append((proc.title, f"pid {proc.popen.pid}: {detail}"))
    rows.append(
        ("local stack", "Kafka, Prometheus, Alertmanager, InfluxDB: stays up after the demo")
    )
    say("\nstill running until you press Ctrl-C:")
    _print_pointers(rows)
    say(f"  {'':<20}(`arcbeat stack status`; `arcbeat stack down` stops the stack)")


def _stop(procs: Procs, settings: Settings, user: Settings, state: Path) -> int:
    """Stop the demo's processes, worker first, and say what is left."""
    if not procs.items:
        return 0
    say(
        "stopping the worker first (so that no worker sees the fleet go silent), then the "
        "simulated fleet and the history exporter ..."
    )
    with _uninterrupted():
        stopped = procs.stop()
    say(f"stopped: {', '.join(stopped)}.")
    say("\nstill there after the demo (the local stack keeps running):")
    ui = prometheus_ui(settings.stack.prometheus_url.rstrip("/"))
    _print_pointers(pointers(settings, user, state, procs.logs, worker=False, ui=ui))
    say(
        "\nUnless another worker runs, Prometheus raises ArcPipelineStalled (no worker up) in "
        "about 2 minutes.\n`arcbeat stack status` shows the stack; `arcbeat stack down` stops it."
    )
    return 0
