"""Shared scope state: per-partition scope counts, mass-silence verdicts, partition owners.

A scope's machines are spread over partitions owned by different workers, so each worker
publishes its partitions' counts here, the owner of partition 0 decides the verdicts, and
every worker reads all of it. The state is a compacted topic (``<app_id>-scopes``, one
partition) that every worker reads from the start with ``read_committed``. Counts and
verdicts are written inside the transaction of the partition that computed them, so a
verdict and its ``ScopeSilent`` record commit together, exactly once.

Keys: ``c|<scope>|<p>`` counts of partition p (``[connected, late]``), ``v|<scope>`` a
verdict (``[silent, since, machines]``), ``d|`` when the latest decision was taken,
``o|<p>`` the URL of the worker that owns partition p (for routing API queries).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import orjson

from arcbeat.streams.decide.deadlines import ScopeCounts, sum_counts
from arcbeat.streams.decide.mass_silence import Verdict
from arcbeat.streams.kafka.compacted import CompactedReader
from arcbeat.streams.settings import Settings

COUNTS, VERDICT, DECIDED, OWNER = "c|", "v|", "d|", "o|"  # the key prefixes (module docstring)


def verdicts_of(view: Mapping[str, bytes]) -> dict[str, Verdict]:
    out: dict[str, Verdict] = {}
    for k, raw in view.items():
        if k.startswith(VERDICT):
            silent, since, machines = orjson.loads(raw)
            out[k[2:]] = Verdict(bool(silent), float(since), int(machines))
    return out


class ScopeBoard:
    """Every worker's view of the shared scope state.

    ``committed`` is what the topic holds (read_committed). Only the owner of partition p
    writes p's keys (and only the owner of partition 0 the verdicts), so this worker's own
    writes override what it reads back, which may lag: ``pending`` holds writes whose
    transaction is open, ``sealed`` those of a transaction committing, ``own`` those
    committed. All are grouped by partition, so that the decider sees its own verdict at once,
    and a revoked partition's writes are forgotten with it (its next owner reads them back
    from the topic).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topics.scopes
        self.committed: dict[str, bytes] = {}
        self.pending: dict[int, dict[str, bytes]] = {}
        self.sealed: dict[int, dict[str, bytes]] = {}
        self.own: dict[int, dict[str, bytes]] = {}
        self._reader = CompactedReader(settings, self.topic, name="scopes", on_record=self._apply)

    # ---- view ---------------------------------------------------------------------------

    def view(self) -> dict[str, bytes]:
        out = dict(self.committed)
        for layer in (self.own, self.sealed, self.pending):
            for writes in layer.values():
                out.update(writes)
        return out

    def get(self, key: str) -> bytes | None:
        for layer in (self.pending, self.sealed, self.own):
            for writes in layer.values():
                if key in writes:
                    return writes[key]
        return self.committed.get(key)

    def verdicts(self) -> dict[str, Verdict]:
        return verdicts_of(self.view())

    def decided_at(self) -> float | None:
        raw = self.get(DECIDED)
        return float(orjson.loads(raw)) if raw else None

    def totals(self) -> dict[str, ScopeCounts]:
        parts: dict[str, list[ScopeCounts]] = {}
        for k, raw in self.view().items():
            if k.startswith(COUNTS):
                scope = k[2:].rsplit("|", 1)[0]
                connected, late = orjson.loads(raw)
                parts.setdefault(scope, []).append(ScopeCounts(connected, late))
        return {s: sum_counts(v) for s, v in parts.items()}

    def owners(self) -> dict[int, str]:
        return {int(k[2:]): v.decode() for k, v in self.committed.items() if k.startswith(OWNER)}

    def published_counts(self, p: int) -> dict[str, ScopeCounts]:
        """Partition p's counts as the board holds them (after a takeover: the old owner's)."""
        out: dict[str, ScopeCounts] = {}
        suffix = f"|{p}"
        for k, raw in self.view().items():
            if k.startswith(COUNTS) and k.endswith(suffix):
                connected, late = orjson.loads(raw)
                out[k[2 : -len(suffix)]] = ScopeCounts(connected, late)
        return out

    # ---- the records: what is written under which key (read back by the view above) ------

    @staticmethod
    def counts_record(scope: str, p: int, counts: ScopeCounts | None) -> tuple[str, bytes]:
        """Partition p's counts of ``scope`` (None: the scope has no machine there any more)."""
        c = counts or ScopeCounts(0, 0)
        return f"{COUNTS}{scope}|{p}", orjson.dumps([c.connected, c.late])

    @staticmethod
    def verdict_record(scope: str, v: Verdict) -> tuple[str, bytes]:
        return f"{VERDICT}{scope}", orjson.dumps([v.silent, v.since, v.machines])

    @staticmethod
    def decided_record(at: float) -> tuple[str, bytes]:
        """When the latest mass-silence decision was taken."""
        return DECIDED, orjson.dumps(at)

    @staticmethod
    def owner_record(p: int, url: str) -> tuple[str, bytes]:
        """The URL of the worker that owns partition p (API queries are routed by it)."""
        return f"{OWNER}{p}", url.encode()

    # ---- writes (the caller sends the same records in partition p's transaction) ---------

    def write(self, p: int, key: str, value: bytes) -> None:
        self.pending.setdefault(p, {})[key] = value

    def seal(self, p: int) -> None:
        """p's transaction is committing: writes from now on belong to its next one."""
        writes = self.pending.pop(p, None)
        if writes:
            self.sealed.setdefault(p, {}).update(writes)

    def committed_sealed(self, p: int) -> None:
        """p's sealed transaction committed (writes since belong to the next one)."""
        writes = self.sealed.pop(p, None)
        if writes:
            self.own.setdefault(p, {}).update(writes)

    def committed_partition(self, p: int) -> None:
        """p's transaction committed with every write so far."""
        self.seal(p)
        self.committed_sealed(p)

    def aborted(self, p: int) -> None:
        """p's transaction aborted: its open writes never happened."""
        self.pending.pop(p, None)
        self.sealed.pop(p, None)

    def forget(self, p: int) -> None:
        """p was revoked: its next owner reads p's keys from the topic."""
        self.aborted(p)
        self.own.pop(p, None)

    # ---- reading the topic --------------------------------------------------------------------

    def _apply(self, key: str, value: bytes | None) -> None:
        if value is None:
            self.committed.pop(key, None)
        else:
            self.committed[key] = value

    @property
    def ready(self) -> asyncio.Event:
        return self._reader.ready

    @property
    def position(self) -> int:
        return self._reader.position

    async def start(self) -> None:
        await self._reader.start()

    async def stop(self) -> None:
        await self._reader.stop()

    async def sync(self, timeout: float = 30.0) -> None:
        """Wait until everything committed to the topic so far has been read."""
        await self._reader.sync(timeout)
