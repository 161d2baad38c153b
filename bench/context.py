"""What every bench phase shares: base settings, the run's prefix, a work folder, progress."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arcbeat.bench.worker_process import WorkerProcess, free_port
from arcbeat.deploy.settings import SETTINGS, Settings

Progress = Callable[[str], None]

# settings a bench worker must share with the bench (everything else: the worker's defaults)
WORKER_SETTINGS = (
    "kafka_bootstrap",
    "topic_prefix",
    "partitions",
    "app_id",
    "web_port",
    "data_dir",
    "heartbeat_interval",
    "disconnect_after",
    "check_interval",
    "outage_hold",
    "window",
    "regions",
    "commit_interval",
    "checkpoint_interval",
    "availability_windows",
    "max_machine_series",
)


def env_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)


def worker_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The process environment that makes ``arcbeat worker`` load exactly ``settings``."""
    env = dict(os.environ if base is None else base)
    # a bench worker must not pick up an arcbeat.toml or ARCBEAT_* of the shell for these
    for name in WORKER_SETTINGS:
        if name not in SETTINGS:
            raise ValueError(f"bench: unknown setting {name!r}")
        env["ARCBEAT_" + name.upper()] = env_value(settings.value(name))
    return env


@dataclass
class Bench:
    settings: Settings
    prefix: str
    workdir: Path
    started: float = field(default_factory=time.monotonic)
    quiet: bool = False
    worker_loglevel: str = "warning"
    workers: list[WorkerProcess] = field(default_factory=list)

    def say(self, message: str) -> None:
        if not self.quiet:
            elapsed = time.monotonic() - self.started
            print(f"[bench {elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)

    def phase_settings(self, phase: str, **changes: Any) -> Settings:
        """Settings of one phase: its own topics and consumer group under the run prefix."""
        return self.settings.replace(
            topic_prefix=f"{self.prefix}-{phase}", app_id=f"{self.prefix}-{phase}", **changes
        )

    def worker(
        self, settings: Settings, name: str, *, loglevel: str | None = None
    ) -> WorkerProcess:
        """A worker process for ``settings`` (own web port and data folder), not started.

        Workers of the same settings share the app id, so a worker created again for them
        is the same group member (static membership) taking the same partitions back."""
        port = free_port()
        data = self.workdir / f"worker-{name}"
        s = settings.replace(web_port=port, data_dir=str(data))
        w = WorkerProcess(
            worker_env(s),
            port=port,
            log_path=self.workdir / f"worker-{name}.log",
            loglevel=loglevel or self.worker_loglevel,
        )
        self.workers.append(w)
        return w

    def stop_all(self) -> None:
        for w in self.workers:
            if w.alive():
                w.stop()
