"""The simulator's ground truth (``arcbeat simulate --groundtruth``), read for the tests: what
every agent sent, with broker arrival times, and what the scenario did."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arcbeat.deploy.agents.groundtruth import LIVENESS_EVENTS, arrival, read_groundtruth
from arcbeat.deploy.agents.scenarios import Fleet, FleetSpec


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
            elif ev == "degrade":  # a location's uplink starts to degrade (no message)
                continue
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


@dataclass
class TruthAt:
    """What the simulator's log says each machine's status was at one moment."""

    counts: Counter[str]
    ambiguous: list[str]  # machines within a few seconds of a deadline: not a stable moment


def statuses_at(gt: Path, at: float, *, disconnect_after: float, margin: float = 3.0) -> TruthAt:
    """Connected when the last delivered heartbeat (broker arrival) before ``at`` is less than
    ``disconnect_after - 1 s`` old; Disconnected when it is more than ``disconnect_after +
    margin`` old (declared at most check_interval + 1 s after the deadline; the caller makes
    sure no mass-silence hold was in force); anything between is reported as ambiguous."""
    last: dict[str, float] = {}
    for rec in read_groundtruth(gt):
        if rec.get("event") in LIVENESS_EVENTS and "error" not in rec:
            t = arrival(rec)
            if t <= at:
                key = str(rec["key"])
                last[key] = max(last.get(key, t), t)
    counts: Counter[str] = Counter()
    ambiguous: list[str] = []
    for key, t in last.items():
        silent = at - t
        if silent < disconnect_after - 1.0:
            counts["Connected"] += 1
        elif silent > disconnect_after + margin:
            counts["Disconnected"] += 1
        else:
            ambiguous.append(f"{key} silent {silent:.1f}s")
    return TruthAt(counts, ambiguous)


def stops_in_groundtruth(gt: Path) -> dict[str, set[str]]:
    """Reason -> keys of per-machine ``stop`` events the simulator logged."""
    out: dict[str, set[str]] = {}
    for rec in read_groundtruth(gt):
        if rec.get("event") == "stop" and "key" in rec:
            out.setdefault(str(rec["reason"]), set()).add(str(rec["key"]))
    return out
