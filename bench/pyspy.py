"""Where a running worker spends its CPU: py-spy samples, summed by component.

py-spy (``pip install py-spy``) samples the worker from outside, so it profiles the real
command under the real load. It is optional: without it the report says so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# (component, pattern searched in the whole stack), first match wins: order matters, e.g. a
# table write is called from the agent, and its changelog send from the table.
COMPONENTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("logging (records built for DEBUG)", re.compile(r"\(logging/__init__\.py")),
    (
        "metrics sensors (prometheus_client, faust sensors)",
        re.compile(r"prometheus_client/|faust/sensors/"),
    ),
    (
        "transactions (EOS: add partitions/offsets, commit)",
        re.compile(
            r"_txn|commit_transaction|begin_transaction|send_offsets_to_transaction"
            r"|_maybe_do_transactional_request"
        ),
    ),
    ("producer (aiokafka: batches, produce requests)", re.compile(r"aiokafka/producer/")),
    ("faust producer buffer (changelog sends)", re.compile(r"ProducerBuffer")),
    (
        "engine (decode, status machine, state JSON)",
        re.compile(r"streams/(engine|records|machines|status|deadlines|partitioner)\.py"),
    ),
    ("faust tables (changelog, windowed table)", re.compile(r"faust/tables/|faust/stores/")),
    (
        "consumer (fetch, decode records)",
        re.compile(r"aiokafka/consumer/|Fetcher\.|_drain_messages|getmany"),
    ),
    ("worker agent glue (streams/worker.py)", re.compile(r"streams/worker\.py")),
    ("faust streams, agents, services", re.compile(r"faust/|mode/")),
    ("kafka client (connections, protocol)", re.compile(r"aiokafka/")),
)
IDLE = "event loop, sockets, other"


@dataclass(frozen=True, slots=True)
class Profile:
    samples: int
    components: list[tuple[str, float]]  # (component, share of samples)
    top_self: list[tuple[str, float]]  # (function (file), share), innermost frames


def component_of(stack: str) -> str:
    for name, pattern in COMPONENTS:
        if pattern.search(stack):
            return name
    return IDLE


def summarize(raw: str, top: int = 15) -> Profile:
    """Summary of py-spy's ``--format raw`` output (``outer;...;inner count`` per line)."""
    by_component: Counter[str] = Counter()
    by_self: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
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

    def __init__(self, pid: int, seconds: float, out: Path, rate: int = 100) -> None:
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
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def finish(self, timeout: float = 60.0) -> Profile | str:
        """The profile, or why there is none."""
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
