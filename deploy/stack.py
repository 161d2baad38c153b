"""The local single-machine stack (``arcbeat stack up | down | status``).

Apache Kafka (KRaft, one node; ``up --brokers 3``: three), Prometheus, Alertmanager and
InfluxDB 1.x run as detached processes on loopback; data, logs, pid files, rendered configs
and the Kafka jar cache all live under ``settings.stack.state_dir``::

    state/conf/        rendered configuration (from the installed arcbeat.deploy package)
    state/logs/        <service>.log (stdout/stderr), maven.log
    state/pids/        <service>.pid
    state/jars/        Kafka jars from Maven Central (+ .pom.sha256: refreshed on POM change)
    state/kafka/{data,logs}  state/prometheus/data  state/alertmanager/data
    state/influxdb/{meta,data,wal}

A state folder formatted for several brokers has services ``kafka-1`` .. ``kafka-N`` with
``state/kafka-<n>/{data,logs}`` and ``state/kafka-cluster.json`` (broker count, cluster
id); ``status`` and ``down`` read the broker count from there.

``up`` is idempotent (a running healthy service is only reported; stale pid files are
cleared), ``down`` stops every service of this state folder and leaves no process behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arcbeat.deploy import processes
from arcbeat.deploy.aio import run_sync
from arcbeat.deploy.errors import StackError
from arcbeat.deploy.kafka_admin import KafkaAdminError
from arcbeat.deploy.kafka_admin.acls import acl_bindings, create_acls
from arcbeat.deploy.kafka_admin.topics import Replication, Warn, ensure_topics_async
from arcbeat.deploy.services import (
    ClusterReport,
    Kafka,
    Progress,
    Service,
    StatePaths,
    build_services,
    check_brokers,
    cluster_bootstrap,
    cluster_report,
    port_open,
    record_cluster,
    recorded_brokers,
    tail,
)
from arcbeat.deploy.settings import Settings

__all__ = ["ServiceStatus", "Stack", "StackError"]

_PROGRESS_EVERY = 10.0  # seconds between "still waiting" lines
_LOCK_TIMEOUT = 600.0  # seconds to wait for another up/down of the same state folder


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    address: str  # host:port clients use
    pid: int | None
    running: bool  # a process of this state folder runs
    healthy: bool  # its health check passes
    detail: str  # "ok" or why not
    log: Path
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. a broker's partition counts

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "pid": self.pid,
            "running": self.running,
            "healthy": self.healthy,
            "detail": self.detail,
            "log": str(self.log),
            **self.extra,
        }


def _quiet(_message: str) -> None:
    pass


class Stack:
    """The local stack of one state folder (``settings.stack.state_dir``)."""

    def __init__(
        self, settings: Settings, *, only: tuple[str, ...] = (), brokers: int | None = None
    ) -> None:
        """``only``: manage just these services (e.g. ``("kafka",)`` for a test broker, or
        ``("kafka-2",)`` for one broker of a cluster). ``brokers``: how many Kafka brokers
        (default: as the state folder was formatted, 1 for a new one); a state folder keeps
        the broker count it was formatted with."""
        self.settings = settings
        self.paths = StatePaths.of(settings)
        recorded = recorded_brokers(self.paths)
        if brokers is not None:
            check_brokers(brokers)
            if recorded is not None and brokers != recorded:
                raise StackError(
                    f"stack: the Kafka of {self.paths.root} was formatted with {recorded} "
                    f"broker(s), not {brokers}. Use another state folder (ARCBEAT_STATE_DIR), "
                    f"or `arcbeat stack down` and remove its Kafka data ("
                    + ("kafka/" if recorded == 1 else f"kafka-1/ .. kafka-{recorded}/, ")
                    + ("" if recorded == 1 else self.paths.cluster_file.name)
                    + ") to start over"
                )
        self.brokers = brokers or recorded or 1
        services = build_services(settings, self.paths, self.brokers)
        unknown = set(only) - {s.name for s in services}
        if unknown:
            raise StackError(
                f"stack: no service(s) {sorted(unknown)}; this stack has "
                f"{[s.name for s in services]}"
            )
        self.services: list[Service] = [s for s in services if not only or s.name in only]

    @property
    def state_dir(self) -> Path:
        return self.paths.root

    @property
    def bootstrap(self) -> str:
        """Every broker's address, for clients (``ARCBEAT_KAFKA_BOOTSTRAP``)."""
        return cluster_bootstrap(self.settings, self.brokers)

    def brokers_of(self) -> list[Kafka]:
        """The Kafka nodes this stack manages."""
        return [s for s in self.services if isinstance(s, Kafka)]

    def service(self, name: str) -> Service:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise KeyError(f"no service {name!r}; services: {[s.name for s in self.services]}")

    # -- up ---------------------------------------------------------------------------------
    def up(self, progress: Progress | None = None) -> dict[str, ServiceStatus]:
        """Start every service that is not running, wait until all are healthy.

        Raises :class:`StackError` naming the service, what failed and its log.
        """
        say = progress or _quiet
        self._check_ports()
        for svc in self.services:  # a missing binary fails before anything starts
            svc.require_tools()
        self.paths.create()
        with self._locked(say):
            return self._up(say)

    def _up(self, say: Progress) -> dict[str, ServiceStatus]:
        say(f"stack: state folder {self.paths.root}")
        if self.brokers > 1:
            record_cluster(self.paths, self.brokers)
        waiting: list[tuple[Service, int, float]] = []
        for svc in self.services:
            pid = self._pid(svc)
            if pid is not None:
                reason = svc.check()
                if reason is None:
                    say(f"{svc.name}: already running (pid {pid}) on {svc.address}, healthy")
                    svc.refresh(say)
                    continue
                say(f"{svc.name}: running (pid {pid}) but not healthy yet ({reason}); waiting")
                waiting.append((svc, pid, time.monotonic()))
                continue
            self._clear_stale_pid(svc, say)
            busy = [p for p in svc.ports if port_open(p)]
            if busy:
                raise StackError(
                    f"{svc.name}: port(s) {', '.join(map(str, busy))} on 127.0.0.1 already in use "
                    f"by a process this stack ({self.paths.root}) did not start. Stop it (another "
                    "`arcbeat stack` state folder, `docker compose down`, or a system service), "
                    "or move this stack to other ports with the ARCBEAT_* settings."
                )
            svc.prepare(say)
            started = time.monotonic()
            pid = processes.spawn(svc.argv(), svc.log, cwd=self.paths.root, env=svc.env())
            processes.write_pid(svc.pid_file, pid)
            say(f"{svc.name}: started (pid {pid}) on {svc.address}, log {svc.log}")
            waiting.append((svc, pid, started))
        for svc, pid, started in waiting:
            self._wait_healthy(svc, pid, started, say)
        for svc in self.services:
            svc.after_healthy(say)
        statuses = self.status()
        say("stack: up (" + ", ".join(f"{s.name} {s.address}" for s in statuses.values()) + ")")
        if self.brokers > 1 and self.brokers_of():
            say(
                f"stack: Kafka cluster of {self.brokers} brokers; clients: "
                f"ARCBEAT_KAFKA_BOOTSTRAP={self.bootstrap}"
            )
        return statuses

    def _check_ports(self) -> None:
        owners: dict[int, str] = {}
        for svc in self.services:
            for port in svc.ports:
                if port in owners:
                    raise StackError(
                        f"stack: the settings give port {port} to both {owners[port]} and "
                        f"{svc.name}; give each service its own port (ARCBEAT_* settings)"
                    )
                owners[port] = svc.name

    def _wait_healthy(self, svc: Service, pid: int, started: float, say: Progress) -> None:
        deadline = started + svc.start_timeout
        next_note = time.monotonic() + _PROGRESS_EVERY
        reason: str | None = "not checked yet"
        while True:
            if not processes.alive(pid):
                code = processes.exit_code(pid)
                self._clear_pid(svc)
                how = f"exit code {code}" if code is not None else "it is gone"
                raise self._failure(svc, f"exited before becoming healthy ({how})")
            reason = svc.check()
            now = time.monotonic()
            if reason is None:
                say(f"{svc.name}: healthy on {svc.address} after {now - started:.1f} s")
                return
            if now >= deadline:
                break
            if now >= next_note:
                say(f"{svc.name}: still waiting ({now - started:.0f} s): {reason}")
                next_note = now + _PROGRESS_EVERY
            time.sleep(0.5)
        # An unhealthy process would only confuse the next `up`: stop it, keep its log.
        processes.terminate([pid], svc.stop_timeout)
        self._clear_pid(svc)
        raise self._failure(
            svc, f"not healthy within {svc.start_timeout:.0f} s (last check: {reason}); stopped it"
        )

    def _failure(self, svc: Service, what: str) -> StackError:
        lines = [f"{svc.name}: {what}.", f"log: {svc.log} (last 20 lines below)"]
        lines += [f"more: {extra}" for extra in svc.extra_logs() if extra.exists()]
        lines.append(tail(svc.log, 20) or "(the log is empty)")
        return StackError("\n".join(lines))

    # -- down -------------------------------------------------------------------------------
    def down(self, progress: Progress | None = None) -> list[str]:
        """Stop every service of this state folder (SIGTERM, wait, SIGKILL the group).

        Returns the names of the services that were running.
        """
        say = progress or _quiet
        if not self.paths.root.is_dir():
            for svc in self.services:
                say(f"{svc.name}: not running")
            return []
        with self._locked(say):
            return self._down(say)

    def _down(self, say: Progress) -> list[str]:
        stopped: list[str] = []
        brokers: list[Service] = [s for s in self.services if isinstance(s, Kafka)]
        for svc in reversed(self.services):  # consumers of Kafka's data first, Kafka last
            if svc not in brokers:
                stopped += self._stop([svc], say)
        # the brokers of a cluster stop together: one at a time, the last ones would lose
        # their controller quorum and wait for it in their controlled shutdown
        stopped += self._stop(brokers, say)
        left = {svc.name: processes.find(svc.marker) for svc in self.services}
        if any(left.values()):
            raise StackError(f"stack: processes still running after down: {left}")
        return stopped

    def _stop(self, svcs: list[Service], say: Progress) -> list[str]:
        """SIGTERM the processes of ``svcs`` at once, SIGKILL what outlives the longest
        stop timeout; returns the names of those that were running."""
        running: dict[str, list[int]] = {}
        for svc in svcs:
            pids = set(processes.find(svc.marker))
            pid = processes.read_pid(svc.pid_file)
            if pid is not None and processes.is_ours(pid, svc.marker):
                pids.add(pid)
            if not pids:
                self._clear_stale_pid(svc, say)
                say(f"{svc.name}: not running")
                continue
            running[svc.name] = sorted(pids)
            say(f"{svc.name}: stopping (pid {', '.join(map(str, sorted(pids)))})")
        if not running:
            return []
        names = list(running)
        started = time.monotonic()
        timeout = max(s.stop_timeout for s in svcs if s.name in running)
        try:
            killed = processes.terminate([p for ps in running.values() for p in ps], timeout)
        except TimeoutError as exc:
            raise StackError(f"{', '.join(names)}: could not stop: {exc}") from exc
        for svc in svcs:
            if svc.name in running:
                self._clear_pid(svc)
                how = (
                    "killed after SIGTERM timed out"
                    if set(killed) & set(running[svc.name])
                    else "stopped"
                )
                say(f"{svc.name}: {how} in {time.monotonic() - started:.1f} s")
        return names

    # -- status -----------------------------------------------------------------------------
    def status(self) -> dict[str, ServiceStatus]:
        """Each service with pid, address and whether its health check passes; a healthy
        broker's detail also counts the partitions it is the leader of and how many of
        them are under-replicated (fewer replicas in sync than assigned)."""
        result: dict[str, ServiceStatus] = {}
        for svc in self.services:
            pid = self._pid(svc)
            if pid is not None:
                reason = svc.check()
                detail = reason or "ok"
            else:
                reason = "not running"
                busy = [p for p in svc.ports if port_open(p)]
                detail = (
                    f"not running; port(s) {', '.join(map(str, busy))} used by another process"
                    if busy
                    else "not running"
                )
            result[svc.name] = ServiceStatus(
                name=svc.name,
                address=svc.address,
                pid=pid,
                running=pid is not None,
                healthy=pid is not None and reason is None,
                detail=detail,
                log=svc.log,
            )
        healthy = [b for b in self.brokers_of() if result[b.name].healthy]
        if healthy:
            self._add_partition_health(result, healthy)
        return result

    def _add_partition_health(self, result: dict[str, ServiceStatus], up: list[Kafka]) -> None:
        try:
            report = self.cluster(up)
        except Exception as exc:  # status still answers while a broker is slow or failing
            for b in up:
                s = result[b.name]
                result[b.name] = _with(s, detail=f"ok (partition health unknown: {exc!r})")
            return
        for b in up:
            s = result[b.name]
            leader_of, lagging = report.leaders[b.node], report.lagging[b.node]
            result[b.name] = _with(
                s,
                detail=f"ok; leader of {leader_of} partitions, {lagging} under-replicated",
                extra={
                    "node": b.node,
                    "leader_of": leader_of,
                    "under_replicated": lagging,
                    "cluster": report.as_dict(),
                },
            )

    def cluster(self, brokers: list[Kafka] | None = None) -> ClusterReport:
        """Partition health of the stack's Kafka (asked of the first broker that answers)."""
        nodes = brokers or self.brokers_of()
        if not nodes:
            raise StackError("stack: this stack manages no Kafka broker")
        bootstrap = ",".join(b.address for b in nodes)
        options = nodes[0].client_options()
        return run_sync(lambda: cluster_report(bootstrap, timeout=10.0, **options))

    def healthy(self) -> bool:
        return all(s.healthy for s in self.status().values())

    # -- topics -----------------------------------------------------------------------------
    def ensure_topics(
        self,
        prefix: str | None = None,
        partitions: int | None = None,
        *,
        warn: Warn | None = None,
    ) -> dict[str, str]:
        """Create ``<prefix>.heartbeats|status|heartbeats.dlq|fleet|maintenance`` if missing,
        with the replication of the settings; existing ones must have ``partitions`` partitions
        (the maintenance topic: 1) and that replication (see
        :func:`arcbeat.deploy.kafka_admin.topics.ensure_specs_async`).

        Defaults: ``settings.kafka.topic_prefix`` and ``settings.kafka.partitions``. Returns
        ``{topic: "created" | "exists"}``. With ``kafka_security = "sasl_ssl"`` the stack
        works as ``admin`` and also grants another prefix's ACLs (idempotent). ``warn``
        hears of too little replication on a multi-broker cluster (default: logged). What
        Kafka refuses is a :class:`StackError` too.
        """
        pre = self.settings.kafka.topic_prefix if prefix is None else prefix
        n = self.settings.kafka.partitions if partitions is None else partitions
        bootstrap = self.settings.kafka.bootstrap
        options = Kafka(self.settings, self.paths, 1, self.brokers).client_options()
        replication = Replication.of(self.settings)
        try:
            outcome = run_sync(
                lambda: ensure_topics_async(
                    bootstrap, pre, n, options=options, replication=replication, warn=warn
                )
            )
            if options and pre != self.settings.kafka.topic_prefix:
                # the deployment's own prefix was granted by `up` (Kafka.after_healthy)
                bindings = acl_bindings(self.settings, pre)
                run_sync(lambda: create_acls(bootstrap, options, bindings))
        except KafkaAdminError as exc:
            raise StackError(str(exc)) from exc
        return outcome

    @contextlib.contextmanager
    def _locked(self, say: Progress) -> Iterator[None]:
        """One `up`/`down` at a time per state folder (test sessions may start concurrently)."""
        with (self.paths.root / "stack.lock").open("w") as lock:
            deadline = time.monotonic() + _LOCK_TIMEOUT
            waited = False
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not waited:
                        say(f"stack: waiting for another `arcbeat stack` on {self.paths.root}")
                        waited = True
                    if time.monotonic() > deadline:
                        raise StackError(
                            f"stack: another `arcbeat stack` command has held "
                            f"{self.paths.root / 'stack.lock'} for {_LOCK_TIMEOUT:.0f} s"
                        ) from None
                    time.sleep(0.2)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- pid files --------------------------------------------------------------------------
    def _pid(self, svc: Service) -> int | None:
        pid = processes.read_pid(svc.pid_file)
        if pid is not None and processes.is_ours(pid, svc.marker):
            return pid
        # The pid file is gone or stale but the process may still run: find it by its marker.
        found = processes.find(svc.marker)
        if found:
            processes.write_pid(svc.pid_file, found[0])
            return found[0]
        return None

    def _clear_stale_pid(self, svc: Service, say: Progress) -> None:
        pid = processes.read_pid(svc.pid_file)
        if svc.pid_file.exists() and not (pid is not None and processes.is_ours(pid, svc.marker)):
            say(f"{svc.name}: removing stale pid file {svc.pid_file} (pid {pid} is not running)")
            self._clear_pid(svc)

    def _clear_pid(self, svc: Service) -> None:
        svc.pid_file.unlink(missing_ok=True)


def _with(status: ServiceStatus, **changes: Any) -> ServiceStatus:
    return dataclasses.replace(status, **changes)
