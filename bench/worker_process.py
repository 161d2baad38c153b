"""A real ``arcbeat worker`` in a subprocess, watched from outside: /readyz, /healthz, /metrics,
RSS, CPU.

The bench never measures a worker inside its own process: the figures must be those of the
command an operator runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from arcbeat.streams.decide.timestamps import parse_rfc3339


class WorkerError(RuntimeError):
    """The worker subprocess failed; the message ends with the tail of its log."""


def free_port() -> int:
    """A TCP port nobody listens on right now (loopback), for the worker's web server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Health:
    partitions: int
    lag: int
    last_event_at: float  # broker time of the last processed heartbeat or tick; 0 = none


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reason: str  # "ready", "starting", "no partitions", "recovering", "catching up: lag N"
    partitions: int
    lag: int


@dataclass(frozen=True, slots=True)
class Scrape:
    seconds: float
    body: bytes


def proc_status_kib(pid: int, field: str) -> int:
    """``VmRSS``/``VmHWM``... of /proc/<pid>/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise WorkerError(f"/proc/{pid}/status has no {field} line")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (from /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_schedstat(pid: int) -> tuple[float, float]:
    """Seconds a process's threads ran on a CPU, and seconds they were ready to run but
    waited for one (run queue), from /proc/<pid>/task/*/schedstat."""
    on_cpu = waiting = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "schedstat").read_text().split()
        except OSError:
            continue  # the thread ended meanwhile
        on_cpu += int(fields[0])
        waiting += int(fields[1])
    return on_cpu / 1e9, waiting / 1e9


class WorkerProcess:
    """``python -m arcbeat.deploy.cli worker`` with its own env, app id, web port and data dir."""

    def __init__(
        self, env: dict[str, str], *, port: int, log_path: Path, loglevel: str = "warning"
    ) -> None:
        self.env = env
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._log: Any = None
        self.command = [
            sys.executable,
            "-m",
            "arcbeat.deploy.cli",
            "worker",
            "--loglevel",
            loglevel,
        ]

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise WorkerError("worker not started")
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.started_at = time.time()
        self.proc = subprocess.Popen(
            self.command,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of the bench reaches the worker only through us
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            code = self.proc.returncode if self.proc else None
            raise WorkerError(f"the worker exited (code {code}); log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to commit or close anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> float:
        """Stop the worker; returns the seconds it took to exit. SIGKILL after ``timeout``."""
        if self.proc is None:
            return 0.0
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None
        return time.monotonic() - t0

    # ---- observation -----------------------------------------------------------------------

    def _get(self, path: str, timeout: float) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            body: bytes = r.read()
            return body

    def health(self, timeout: float = 5.0) -> Health | None:
        """/healthz, or None while the web server is not up yet."""
        try:
            data = orjson.loads(self._get("/healthz", timeout))
        except (urllib.error.URLError, ConnectionError, TimeoutError, orjson.JSONDecodeError):
            return None
        last = parse_rfc3339(data["lastEventAt"]) if data.get("lastEventAt") else 0.0
        return Health(len(data.get("partitions", [])), int(data.get("lag", 0)), last)

    def readiness(self, timeout: float = 5.0) -> Readiness | None:
        """/readyz (200 ready, 503 with the reason), or None while the web server is not up."""
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=timeout) as r:
                body, ready = r.read(), True
        except urllib.error.HTTPError as exc:
            if exc.code != 503:
                return None
            body, ready = exc.read(), False
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return None
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        return Readiness(
            ready,
            str(data.get("reason", "")),
            len(data.get("partitions", [])),
            int(data.get("lag", 0)),
        )

    def scrape(self, timeout: float = 120.0) -> Scrape:
        t0 = time.perf_counter()
        body = self._get("/metrics", timeout)
        return Scrape(time.perf_counter() - t0, body)

    def rss_kib(self) -> int:
        return proc_status_kib(self.pid, "VmRSS")

    def hwm_kib(self) -> int:
        return proc_status_kib(self.pid, "VmHWM")

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def schedstat(self) -> tuple[float, float]:
        """(seconds on a CPU, seconds waiting for one) since the process started."""
        return proc_schedstat(self.pid)

    def wait_ready(
        self,
        timeout: float,
        poll: float = 0.1,
        *,
        progress: Callable[[str], None] | None = None,
        label: str = "worker",
        every: float = 15.0,
    ) -> float:
        """Wait until /readyz answers 200 (partitions owned, state recovered, lag 0); returns
        when (unix). ``progress`` hears the worker's reason every ``every`` seconds."""
        deadline = time.monotonic() + timeout
        next_say = time.monotonic() + every
        last: Readiness | None = None
        while time.monotonic() < deadline:
            self.check_alive()
            r = self.readiness()
            if r is not None:
                if r.ready:
                    return time.time()
                last = r
            if progress is not None and time.monotonic() >= next_say:
                why = last.reason if last is not None else "web server not up"
                progress(f"{label}: not ready after {time.time() - self.started_at:.0f}s ({why})")
                next_say = time.monotonic() + every
            time.sleep(poll)
        why = last.reason if last is not None else "the web server never answered"
        raise WorkerError(
            f"the worker was not ready within {timeout:.0f}s ({why}); log:\n{self.log_tail()}"
        )


HEARTBEATS_RECEIVED = "arcbeat_heartbeats_received_total"


def heartbeats_received(w: WorkerProcess, timeout: float = 60.0) -> int:
    """Accepted agent messages the worker has processed since it started (replay included)."""
    return int(metric_value(w.scrape(timeout=timeout).body, HEARTBEATS_RECEIVED))


def wait_processed(
    w: WorkerProcess,
    count: int,
    timeout: float,
    *,
    progress: Callable[[str], None] | None = None,
    label: str = "worker",
    every: float = 15.0,
    poll: float = 0.5,
) -> float:
    """Wait until the worker has processed ``count`` heartbeats; returns when (unix)."""
    deadline = time.monotonic() + timeout
    next_say = time.monotonic() + every
    seen = 0
    while time.monotonic() < deadline:
        w.check_alive()
        with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            seen = heartbeats_received(w)
        if seen >= count:
            return time.time()
        if progress is not None and time.monotonic() >= next_say:
            progress(f"{label}: {seen:,}/{count:,} heartbeats processed")
            next_say = time.monotonic() + every
        time.sleep(poll)
    raise WorkerError(
        f"the worker processed {seen:,} of {count:,} heartbeats within {timeout:.0f}s; "
        f"log:\n{w.log_tail()}"
    )


def metric_value(body: bytes, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of the samples of ``name`` (with these labels) in a Prometheus text exposition."""
    total = 0.0
    found = False
    prefix = name.encode()
    for line in body.splitlines():
        if not line.startswith(prefix) or line.startswith(b"#"):
            continue
        head, _, value = line.rpartition(b" ")
        metric, _, label_text = head.partition(b"{")
        if metric != prefix:
            continue
        if labels and not all(f'{k}="{v}"'.encode() in label_text for k, v in labels.items()):
            continue
        total += float(value)
        found = True
    return total if found else 0.0


def series_count(body: bytes, prefix: bytes = b"") -> int:
    """Number of samples (series) in an exposition, optionally only those of a name prefix."""
    return sum(
        1
        for line in body.splitlines()
        if line and not line.startswith(b"#") and line.startswith(prefix)
    )
