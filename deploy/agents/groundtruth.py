"""The simulator's ground truth: a JSON-lines log of every action it performed.

Line 1 is the header (``"event": "header"``: settings, fleet, scenario, start time); the last
line, when the run ended normally, is ``"event": "end"`` with the totals. Every other line is
one action, written when Kafka acknowledged it (so lines are in acknowledgement order, which
is almost but not exactly send order)::

    {"t": <unix send time>, "event": "heartbeat"|"connect"|"disconnect"|"duplicate"|"malformed",
     "key": ..., "resourceId": ..., "location": ..., "sequence"?: n, "kind"?: <kind of a duplicate>,
     "partition": p, "offset": o, "appendedAt": <broker LogAppendTime, unix seconds>,
     "reason"?: <expected DLQ reason of a malformed message>, "skew"?: <seconds>,
     "error"?: <why the send failed; then there is no partition/offset/appendedAt>}
    {"t": ..., "event": "stop"|"resume", "key": ..., "reason": "outage"|"flap"|...}
    {"t": ..., "event": "stop"|"resume", "scope": "location=<name>", "machines": n}

``appendedAt`` is what arcbeat uses as the arrival time of a heartbeat.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

LIVENESS_EVENTS = frozenset({"heartbeat", "connect"})  # what keeps a machine Connected


class GroundTruthWriter:
    """Appends ground-truth lines to a file (buffered; :meth:`close` flushes)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = self.path.open("wb")
        self.lines = 0

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        self.lines += 1

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def read_groundtruth(source: str | Path | Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The records of a ground-truth file (or pass records through)."""
    if isinstance(source, str | Path):
        with Path(source).open("rb") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield orjson.loads(line)
                    except orjson.JSONDecodeError as exc:
                        raise ValueError(f"{source}:{number}: not a JSON line: {exc}") from None
    else:
        yield from source


def header(source: str | Path | Iterable[dict[str, Any]]) -> dict[str, Any]:
    for record in read_groundtruth(source):
        if record.get("event") == "header":
            return record
    raise ValueError(f"{source}: no header line")


def arrival(record: dict[str, Any]) -> float:
    """When arcbeat saw the message: the broker's LogAppendTime, else the send time."""
    appended = record.get("appendedAt")
    return float(appended if appended is not None else record["t"])


@dataclass(frozen=True, slots=True)
class Silence:
    """A gap between two delivered heartbeats of one machine, longer than disconnect_after."""

    key: str
    last_heartbeat: float  # arrival of the heartbeat before the gap
    resumed: float | None  # arrival of the next heartbeat; None: still silent at the end

    def deadline(self, disconnect_after: float) -> float:
        """When arcbeat must declare the machine Disconnected (without a mass-silence hold)."""
        return self.last_heartbeat + disconnect_after

    def length(self, end: float) -> float:
        return (self.resumed if self.resumed is not None else end) - self.last_heartbeat


def delivered_arrivals(
    source: str | Path | Iterable[dict[str, Any]],
) -> tuple[dict[str, list[float]], dict[str, float], float | None]:
    """Per machine key: sorted arrivals of delivered heartbeats/connects; disconnect arrivals;
    and the end of the run (``end`` line time, or the last record time)."""
    arrivals: dict[str, list[float]] = {}
    disconnected: dict[str, float] = {}
    end: float | None = None
    last_t: float | None = None
    for rec in read_groundtruth(source):
        event = rec.get("event")
        if "t" in rec:
            last_t = rec["t"] if last_t is None else max(last_t, rec["t"])
        if event == "end":
            end = float(rec["t"])
            continue
        if "error" in rec or "key" not in rec:
            continue
        if event in LIVENESS_EVENTS:
            arrivals.setdefault(rec["key"], []).append(arrival(rec))
        elif event == "disconnect":
            disconnected[rec["key"]] = arrival(rec)
    for times in arrivals.values():
        times.sort()
    return arrivals, disconnected, end if end is not None else last_t


def expected_silences(
    source: str | Path | Iterable[dict[str, Any]],
    disconnect_after: float,
    *,
    end: float | None = None,
) -> dict[str, list[Silence]]:
    """Per machine key, every gap between consecutive delivered heartbeats (by broker arrival)
    longer than ``disconnect_after``, plus a trailing open gap (``resumed=None``) when the
    machine was silent for longer than that at ``end`` (default: the run's end).

    Each one is a Disconnected transition arcbeat must emit at ``last_heartbeat +
    disconnect_after`` (unless a mass-silence hold applies), and each closed one a
    Connected (``heartbeat_resumed``) at ``resumed``. Machines that sent ``disconnect`` are
    deleted: nothing after their disconnect counts. Duplicates and malformed messages never
    count as heartbeats.
    """
    arrivals, disconnected, run_end = delivered_arrivals(source)
    stop = end if end is not None else run_end
    result: dict[str, list[Silence]] = {}
    for key, times in arrivals.items():
        gone = disconnected.get(key)
        if gone is not None:
            times = [t for t in times if t <= gone]
        gaps: list[Silence] = []
        for before, after in itertools.pairwise(times):
            if after - before > disconnect_after:
                gaps.append(Silence(key, before, after))
        if gone is None and times and stop is not None and stop - times[-1] > disconnect_after:
            gaps.append(Silence(key, times[-1], None))
        if gaps:
            result[key] = gaps
    return result
