"""A compact, mergeable summary of the machines a worker owns, for capacity planning
(docs/metrics-alerts-history.md, Capacity planning).

Capacity needs fleet-wide *distinct* counts (resource groups per subscription), but each worker
only holds its partitions, and paging a million machines through ``/machines`` is too heavy.
So every worker reduces its machines to counts keyed by what capacity groups on; the counts of
different workers add up key by key (a key's machines are all on one partition, but different
machines of one resource group may live on different workers: adding per key, then counting
keys, gives the exact distinct count).

Pure: from :class:`~arcbeat.streams.decide.machines.MachineInfo` records to a :class:`FleetSummary`,
:func:`merge`, and the JSON wire form served by ``GET /capacity``::

    {"version": 1, "machines": 60, "partitions": [0, 1], "partitionsTotal": 12,
     "resourceGroups": {"<subscription>": {"<resource group>": 5}},   # lower-cased
     "locations": {"westeurope": 40},                                  # lower-cased
     "tagCounts": {"0": 10, "3": 50},        # machines per number of tags
     "operatingSystems": [{"osName": "Ubuntu", "osVersion": "18.04", "machines": 7}],
     "agentVersions": {"1.2.3": 60}}

OS names and versions keep their spelling (stripped): the report shows them as reported.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from arcbeat.streams.decide.machines import MachineInfo

__all__ = ["SUMMARY_VERSION", "FleetSummary", "SummaryError", "merge", "merge_all", "summarize"]

SUMMARY_VERSION: Final = 1


class SummaryError(ValueError):
    """A summary that cannot be used: malformed wire data, or two summaries that both count
    the same partition (a rebalance was in progress: ask again)."""


@dataclass(slots=True)
class FleetSummary:
    """Machine counts per key. Mutable while it is being built (:meth:`add`)."""

    machines: int = 0
    # (subscription, resource group), both lower-cased: ids are case-insensitive
    resource_groups: Counter[tuple[str, str]] = field(default_factory=Counter)
    locations: Counter[str] = field(default_factory=Counter)
    tag_counts: Counter[int] = field(default_factory=Counter)
    operating_systems: Counter[tuple[str, str]] = field(default_factory=Counter)
    agent_versions: Counter[str] = field(default_factory=Counter)
    # the partitions whose machines are counted, and how many the topic has (0 = unknown):
    # a summary that misses partitions undercounts, so readers can tell
    partitions: frozenset[int] = frozenset()
    partitions_total: int = 0

    def add(self, info: MachineInfo) -> None:
        """Count one machine."""
        self.machines += 1
        self.resource_groups[(info.subscription_id.lower(), info.resource_group.lower())] += 1
        self.locations[info.location.lower()] += 1
        self.tag_counts[len(info.tags)] += 1
        self.operating_systems[((info.os_name or "").strip(), (info.os_version or "").strip())] += 1
        self.agent_versions[info.agent_version] += 1

    @property
    def complete(self) -> bool:
        """True when every partition of the topic is counted (unknown total: assume so)."""
        return self.partitions_total <= 0 or len(self.partitions) >= self.partitions_total

    @property
    def missing_partitions(self) -> tuple[int, ...]:
        return tuple(p for p in range(self.partitions_total) if p not in self.partitions)

    # ---- wire form ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        by_sub: dict[str, dict[str, int]] = {}
        for (sub, rg), n in sorted(self.resource_groups.items()):
            by_sub.setdefault(sub, {})[rg] = n
        return {
            "version": SUMMARY_VERSION,
            "machines": self.machines,
            "partitions": sorted(self.partitions),
            "partitionsTotal": self.partitions_total,
            "resourceGroups": by_sub,
            "locations": dict(sorted(self.locations.items())),
            "tagCounts": {str(c): n for c, n in sorted(self.tag_counts.items())},
            "operatingSystems": [
                {"osName": name, "osVersion": version, "machines": n}
                for (name, version), n in sorted(self.operating_systems.items())
            ],
            "agentVersions": dict(sorted(self.agent_versions.items())),
        }

    @classmethod
    def from_dict(cls, data: object, *, source: str = "capacity summary") -> FleetSummary:
        """Parse the wire form; :class:`SummaryError` names the bad field and ``source``."""

        def bad(where: str, why: str) -> SummaryError:
            return SummaryError(f"{source}: {where}: {why}")

        def count(value: object, where: str) -> int:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise bad(where, f"must be a count (integer >= 0), got {value!r}")
            return value

        def obj(value: object, where: str) -> Mapping[str, Any]:
            if not isinstance(value, Mapping):
                raise bad(where, f"must be a JSON object, got {type(value).__name__}")
            return value

        def text(value: object, where: str) -> str:
            if not isinstance(value, str):
                raise bad(where, f"must be a string, got {value!r}")
            return value

        top = obj(data, "document")
        version = top.get("version")
        if version != SUMMARY_VERSION:
            raise bad(
                "version",
                f"expected {SUMMARY_VERSION}, got {version!r} (is the worker running the same "
                "arcbeat version?)",
            )
        missing = [
            k
            for k in (
                "machines",
                "resourceGroups",
                "locations",
                "tagCounts",
                "operatingSystems",
                "agentVersions",
            )
            if k not in top
        ]
        if missing:
            raise bad("document", f"lacks {', '.join(missing)}")
        out = cls(machines=count(top["machines"], "machines"))
        for sub, groups in obj(top["resourceGroups"], "resourceGroups").items():
            for rg, n in obj(groups, f"resourceGroups[{sub!r}]").items():
                out.resource_groups[(sub, rg)] += count(n, f"resourceGroups[{sub!r}][{rg!r}]")
        for loc, n in obj(top["locations"], "locations").items():
            out.locations[loc] += count(n, f"locations[{loc!r}]")
        for tags, n in obj(top["tagCounts"], "tagCounts").items():
            try:
                tag_count = int(tags)
            except ValueError:
                raise bad(
                    "tagCounts", f"keys must be tag counts (integers), got {tags!r}"
                ) from None
            out.tag_counts[count(tag_count, "tagCounts key")] += count(n, f"tagCounts[{tags!r}]")
        oses = top["operatingSystems"]
        if not isinstance(oses, list):
            raise bad("operatingSystems", f"must be a list, got {type(oses).__name__}")
        for i, row in enumerate(oses):
            r = obj(row, f"operatingSystems[{i}]")
            key = (
                text(r.get("osName", ""), f"operatingSystems[{i}].osName"),
                text(r.get("osVersion", ""), f"operatingSystems[{i}].osVersion"),
            )
            out.operating_systems[key] += count(
                r.get("machines"), f"operatingSystems[{i}].machines"
            )
        for agent, n in obj(top["agentVersions"], "agentVersions").items():
            out.agent_versions[agent] += count(n, f"agentVersions[{agent!r}]")
        parts = top.get("partitions", [])
        if not isinstance(parts, list):
            raise bad("partitions", f"must be a list of partition numbers, got {parts!r}")
        out.partitions = frozenset(count(p, "partitions[]") for p in parts)
        out.partitions_total = count(top.get("partitionsTotal", 0), "partitionsTotal")
        # Every per-machine histogram adds up to the machine count; a mismatch is a bug or a
        # truncated document, and would make the report inconsistent.
        for name, counter in (
            ("resourceGroups", out.resource_groups),
            ("locations", out.locations),
            ("tagCounts", out.tag_counts),
            ("operatingSystems", out.operating_systems),
            ("agentVersions", out.agent_versions),
        ):
            total = sum(counter.values())
            if total != out.machines:
                raise bad(name, f"counts add up to {total}, but machines is {out.machines}")
        return out


def summarize(
    machines: Iterable[MachineInfo],
    *,
    partitions: Iterable[int] = (),
    partitions_total: int = 0,
) -> FleetSummary:
    """The summary of ``machines`` (the machines of ``partitions``)."""
    out = FleetSummary(partitions=frozenset(partitions), partitions_total=partitions_total)
    for info in machines:
        out.add(info)
    return out


def _add_into(acc: FleetSummary, other: FleetSummary) -> None:
    overlap = acc.partitions & other.partitions
    if overlap:
        raise SummaryError(
            f"partition(s) {', '.join(map(str, sorted(overlap)))} counted by two workers: "
            "a rebalance is in progress; ask again in a few seconds"
        )
    acc.machines += other.machines
    acc.resource_groups.update(other.resource_groups)
    acc.locations.update(other.locations)
    acc.tag_counts.update(other.tag_counts)
    acc.operating_systems.update(other.operating_systems)
    acc.agent_versions.update(other.agent_versions)
    acc.partitions = acc.partitions | other.partitions
    acc.partitions_total = max(acc.partitions_total, other.partitions_total)


def merge(a: FleetSummary, b: FleetSummary) -> FleetSummary:
    """The summary of both fleets: counts added per key (neither input changes).

    Raises :class:`SummaryError` when both count the same partition.
    """
    return merge_all((a, b))


def merge_all(summaries: Iterable[FleetSummary]) -> FleetSummary:
    out = FleetSummary()
    for s in summaries:
        _add_into(out, s)
    return out
