"""Where a running worker spends its time: py-spy samples, summed by component.

py-spy (``pip install py-spy``) samples the worker from outside, so it profiles the real
command under the real load; idle samples are kept, so time spent waiting on Kafka shows
next to the CPU. It is optional: without it the report says so.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# (component, pattern searched in the whole stack), first match wins: order matters, e.g. a
# checkpoint's records are sent by the producer, and a transaction commit is called from the
# batch loop.
COMPONENTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("logging", re.compile(r"\(logging/__init__\.py")),
    (
        "metrics (/metrics scrapes, prometheus_client)",
        re.compile(r"prometheus_client/|exporters/metrics\.py|snapshot_of"),
    ),
    (
        "checkpoints (encode, send, restore)",
        re.compile(r"streams/kafka/checkpoint\.py|_write_checkpoint|_restore \("),
    ),
    (
        "transactions (EOS: begin, add partitions/offsets, commit)",
        re.compile(
            r"_txn|commit_transaction|begin_transaction|send_offsets_to_transaction"
            r"|_maybe_do_transactional_request|transaction_manager"
        ),
    ),
    ("producer (aiokafka: batches, produce requests)", re.compile(r"aiokafka/producer/")),
    (
        "engine (decode, status machine, slots, status records)",
        re.compile(r"streams/decide/"),
    ),
    ("scope board (shared scope state)", re.compile(r"streams/kafka/scopes\.py")),
    (
        "consumer (fetch, decode records)",
        re.compile(r"aiokafka/consumer/|Fetcher\.|_drain_messages|getmany"),
    ),
    ("batch loop glue (streams/kafka/batch.py)", re.compile(r"streams/kafka/batch\.py")),
    ("ticks and lag (streams/kafka/pipeline.py)", re.compile(r"streams/kafka/pipeline\.py")),
    ("HTTP API (aiohttp, streams/api/web.py)", re.compile(r"aiohttp/|streams/api/")),
    ("faust app (timers, web server)", re.compile(r"faust/")),
    ("kafka client (connections, protocol)", re.compile(r"aiokafka/")),
)
# the innermost frame is the event loop's select: nothing to run, the worker waits on I/O
WAITING = "waiting (event loop idle: fetches, acks, commits in flight)"
_SELECT = re.compile(r"\bselect \(selectors\.py")
OTHER = "other (event loop, callbacks)"
_HELPER = re.compile(r"_bootstrap \(threading\.py")  # a helper thread's outermost frame


@dataclass(frozen=True, slots=True)
class Profile:
    samples: int
    components: list[tuple[str, float]]  # (component, share of samples)
    top_self: list[tuple[str, float]]  # (function (file), share), innermost frames


def component_of(stack: str) -> str:
    if _SELECT.search(stack.rsplit(";", 1)[-1]):
        return WAITING
    for name, pattern in COMPONENTS:
        if pattern.search(stack):
            return name
    return OTHER


def summarize(raw: str, top: int = 15) -> Profile:
    """Summary of py-spy's ``--format raw`` output (``outer;...;inner count`` per line).

    Only the main thread's samples count: the worker runs on its event loop, and helper
    threads (name resolution, executors) spend their idle samples waiting on locks."""
    by_component: Counter[str] = Counter()
    by_self: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit() or _HELPER.search(stack.split(";", 1)[0]):
            continue
        n = int(count)
        total += n
        by_component[component_of(stack)] += n
        inner = stack.rsplit(";", 1)[-1]
        by_self[re.sub(r":\d+\)$", ")", inner)] += n
    if total == 0:
        return Profile(0, [], [])
    return Profile(
        total,
        [(k, round(v / total, 4)) for k, v in by_component.most_common()],
        [(k, round(v / total, 4)) for k, v in by_self.most_common(top)],
    )


def available() -> bool:
    return shutil.which("py-spy") is not None


class Recorder:
    """``py-spy record`` of a pid for a while, in the background."""

    def __init__(
        self, pid: int, seconds: float, out: Path, rate: int = 100, *, idle: bool = True
    ) -> None:
        self.out = out
        exe = shutil.which("py-spy")
        if exe is None:
            raise FileNotFoundError("py-spy is not installed (pip install py-spy)")
        self.proc = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, int(seconds))),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--output",
                str(out),
                "--nonblocking",
                *(["--idle"] if idle else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def finish(self, timeout: float = 60.0) -> Profile | str:
        """Stop recording (py-spy writes what it has on SIGINT); the profile, or why there is
        none."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return "py-spy did not finish"
        if not self.out.is_file():
            return f"py-spy produced no output: {err.decode(errors='replace').strip()[-300:]}"
        return summarize(self.out.read_text(errors="replace"))


def profile_json(p: Profile | str | None) -> dict[str, Any]:
    if p is None:
        return {"available": False, "why": "py-spy is not installed (pip install py-spy)"}
    if isinstance(p, str):
        return {"available": False, "why": p}
    return {
        "available": True,
        "samples": p.samples,
        "components": [{"component": c, "share": s} for c, s in p.components],
        "topSelf": [{"frame": f, "share": s} for f, s in p.top_self],
    }
