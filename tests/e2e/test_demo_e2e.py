"""End to end: ``arcbeat demo`` as a newcomer runs it, read as they would read it.

One run of the real command (300 machines, the shortest duration, its own topic prefix and
InfluxDB database, a worker on a port the stack's Prometheus scrapes), on the local stack. While
the demo waits for Ctrl-C, every pointer under "where to look" is followed (each URL answers,
each command succeeds and prints something); then Ctrl-C, and the pointers it prints after
stopping are followed too, while the worker's URL no longer answers. The transitions are
printed in time order, the summary has each of its parts, and nothing the demo wrote to its
status topic, before or after Ctrl-C, reports an outage of the whole fleet. About 2 minutes.
"""

from __future__ import annotations

import itertools
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import orjson
import pytest

from arcbeat.deploy.demo import demo_env, reset
from arcbeat.deploy.settings import Settings
from arcbeat.deploy.stack import Stack
from tests.support.kafka import read_topic
from tests.support.net import free_port_block, http, port_is_free
from tests.support.paths import REPO

pytestmark = pytest.mark.services

MACHINES = 300
DURATION = 60
POINTER = re.compile(r"^  (\S.{0,18}?)\s{2,}(\S.*)$")
TIME = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3})  ")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Demo:
    """``arcbeat demo`` in a process whose output is read line by line."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            # Ctrl-C as at a terminal, also when the suite itself runs with SIGINT ignored
            # (a background job of a shell script): Python then installs no handler of its own
            preexec_fn=_default_sigint,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def close(self) -> None:
        """After a failed check: Ctrl-C stops what the demo started (killed if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def until(self, text: str, timeout: float) -> list[str]:
        """The lines read so far, once one of them contains ``text``."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            try:
                line = self._queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                if time.monotonic() < deadline:
                    continue
                line = None
            if line is None:
                raise AssertionError(
                    f"the demo printed no {text!r} within {timeout:g} s (or exited):\n"
                    + "\n".join(self.lines[-60:])
                )
            print(line)
            self.lines.append(line)
        return self.lines

    def rest(self, timeout: float) -> list[str]:
        """Every further line until the process exits."""
        deadline = time.monotonic() + timeout
        while (line := self._queue.get(timeout=max(0.1, deadline - time.monotonic()))) is not None:
            print(line)
            self.lines.append(line)
        self.proc.wait(timeout=10)
        return self.lines


def block(lines: list[str], heading: str) -> list[tuple[str, str]]:
    """The (what, how) rows under ``heading``, up to the next blank line."""
    start = next(i for i, line in enumerate(lines) if line.startswith(heading)) + 1
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        if m := POINTER.match(line):
            rows.append((m.group(1), m.group(2)))
    assert rows, f"nothing under {heading!r}"
    return rows


def follow(pointers: list[tuple[str, str]], env: dict[str, str]) -> list[str]:
    """Follow each pointer as a reader would; the ones that did not answer, with why."""
    failed = []
    for what, how in pointers:
        if how.startswith("http"):
            status, body = http(how.split()[0])
            if status != 200 or not body:
                failed.append(f"{what}: {how} answered {status}")
        elif how.split()[0] in ("arcbeat", "curl", "influx"):
            done = subprocess.run(
                ["bash", "-o", "pipefail", "-c", how],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if done.returncode != 0 or not done.stdout.strip():
                failed.append(f"{what}: `{how}` exit {done.returncode}: {done.stderr[-500:]}")
        elif what == "logs":
            folder = how.split()[0]
            if not os.path.isdir(folder) or not os.listdir(folder):
                failed.append(f"logs: {folder} is not a folder with logs")
        else:
            failed.append(f"{what}: {how!r} is neither a URL nor a command")
    return failed


@pytest.fixture(scope="module")
def prefix(stack: Stack) -> Iterator[str]:
    """The run's own prefix; its topics, InfluxDB database and folder are deleted afterwards."""
    name = f"test-demo-{uuid.uuid4().hex[:8]}"
    yield name
    settings = Settings.load({**os.environ, **demo_env(name)})
    reset(stack, settings, recreate_database=False)
    shutil.rmtree(stack.state_dir / name, ignore_errors=True)  # its logs and worker folder


def test_demo_as_a_newcomer_meets_it(stack: Stack, prefix: str) -> None:
    # a port of the stack's Prometheus job "arcbeat" (6066-6069), so that alerts can fire
    port = next((p for p in (6069, 6068, 6067, 6066) if port_is_free(p)), None)
    assert port is not None, "no free worker port among 6066-6069 (Prometheus' targets)"
    env = {
        **os.environ,
        "ARCBEAT_WEB_PORT": str(port),
        "ARCBEAT_HISTORY_PORT": str(free_port_block(1)),
    }
    demo = Demo(
        [sys.executable, "-m", "arcbeat.deploy.cli", "demo", "--prefix", prefix,
         "--machines", str(MACHINES), "--duration", str(DURATION)],
        env,
    )  # fmt: skip
    try:
        lines = demo.until("Press Ctrl-C", timeout=DURATION + 180)
        # every pointer answers while the demo waits for Ctrl-C
        now = block(lines, "where to look, now:")
        assert {w for w, _ in now} >= {
            "fleet totals", "offline machines", "worker API", "worker metrics",
            "Prometheus", "alerts", "Alertmanager", "history (InfluxDB)", "logs",
        }  # fmt: skip
        assert follow(now, env) == []
        running = dict(block(lines, "still running until you press Ctrl-C:"))
        assert "Prometheus scrapes it: up" in running["worker"]
        assert set(running) == {"worker", "history exporter", "simulated fleet", "local stack"}
        demo.proc.send_signal(signal.SIGINT)
        lines = demo.rest(timeout=90)
    finally:
        demo.close()
    assert demo.proc.returncode == 0, "\n".join(lines[-30:])
    text = "\n".join(lines)

    # the transitions, in time order
    times = [m.group(1) for line in lines if (m := TIME.match(line))]
    assert len(times) > MACHINES // 50
    assert _in_order(times), "transitions out of time order"
    printed = [line for line in lines if TIME.match(line)]
    assert not [line for line in printed if "ScopeSilent fleet" in line]
    assert any("ScopeSilent location=westeurope" in line for line in printed)
    assert any("heartbeat_timeout (detected" in line for line in printed)

    # the summary
    summary = lines[next(i for i, ln in enumerate(lines) if ln.startswith("summary: ")) :]
    joined = "\n".join(summary)
    assert f"summary: {MACHINES} simulated machines" in joined
    assert re.search(r"transitions +\d+, by kind:", joined)
    assert re.search(rf"{MACHINES}  onboarded +\(new\) -> Connected", joined)
    assert re.search(r"\d+  heartbeat_timeout +Connected -> Disconnected", joined)
    assert re.search(r"\d+  heartbeat_resumed +Disconnected -> Connected", joined)
    assert re.search(r"ScopeSilent location=westeurope: \d+ machines late", joined)
    assert re.search(r"ScopeRecovered location=westeurope", joined)
    assert "ScopeSilent fleet" not in joined
    m = re.search(r"p50 ([\d.]+) s, p99 ([\d.]+) s, max ([\d.]+) s", joined)
    assert m and float(m.group(2)) <= 3.0, "detection delay p99 above 3 s"
    m = re.search(r"met by (\d+) of (\d+)", joined)
    assert m and m.group(1) == m.group(2), "the service level was missed"
    assert re.search(r"DLQ +[1-9][\d,]* rejected: \w+ \d+", joined)
    assert "alerts             (Prometheus" in joined
    assert re.search(r"Alertmanager now: \d+ active", joined)
    m = re.search(
        r"history +([\d,]+) points in InfluxDB database (\w+): [\s\S]*?transitions ([\d,]+)", joined
    )
    assert m and m.group(2) == demo_env(prefix)["ARCBEAT_INFLUX_DB"]
    assert int(m.group(3).replace(",", "")) >= MACHINES
    assert re.search(r"fleet now +Connected \d+ · Disconnected \d+ · silent scopes: none", joined)

    # Ctrl-C: the worker first, then what still answers
    assert "stopped: worker, simulated fleet, history exporter." in text
    after = block(lines, "still there after the demo")
    assert not any(str(port) in how for _, how in after)
    assert follow(after, env) == []
    assert port_is_free(port), f"the worker's port {port} still answers after Ctrl-C"
    assert "arcbeat stack down" in text

    # nothing the demo's worker wrote reports an outage it caused: the fleet never went silent,
    # and no machine was declared Disconnected once the scenarios were over
    records = [
        orjson.loads(r.value or b"{}") for r in read_topic(stack.bootstrap, f"{prefix}.status")
    ]
    assert not [r for r in records if r.get("type") == "ScopeSilent" and r["scope"] == "fleet"]
    silent = [r for r in records if r.get("type") == "ScopeSilent"]
    assert [r["scope"] for r in silent] == ["location=westeurope"]
    last_printed = max(times)
    late = [
        r
        for r in records
        if r.get("type") == "StatusChanged" and r["changedAt"][11:23] > last_printed
    ]
    assert late == [], f"transitions after the demo's end: {late[:5]}"


def _in_order(times: list[str]) -> bool:
    """Non-decreasing, but for one wrap at midnight (UTC)."""
    drops = [b for a, b in itertools.pairwise(times) if b < a]
    return not drops or (len(drops) == 1 and times[0] >= "23:")
