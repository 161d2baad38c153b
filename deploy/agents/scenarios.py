"""A simulated fleet and its outage scenarios, as pure, seed-deterministic data.

The fleet is compact so that a million machines fit in memory: identity (subscription,
resource group, name) is derived from the machine's index; only a few bytes per machine are
stored (location, OS, agent version, group index). Send times are derived too: machine ``i``
sends at ``phase(i) + k * interval`` for round ``k``, with phases stratified over one interval
in index order, so the sender walks the fleet in index order without a heap.

A :class:`Schedule` is the list of per-machine scenario actions (stop, resume, disconnect)
built from a :class:`Scenario`, the fleet and the timing; the sender applies it as time passes.
"""

from __future__ import annotations

import dataclasses
import math
import random
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from arcbeat.streams.decide.resource_ids import resource_id
from arcbeat.streams.settings import DEFAULT_REGIONS, Settings

# (osType, osName, osVersion); the last entries are outside the supported list on purpose
OPERATING_SYSTEMS: Final[tuple[tuple[str, str, str], ...]] = (
    ("linux", "Ubuntu", "22.04"),
    ("linux", "Ubuntu", "18.04"),
    ("linux", "CentOS", "7"),
    ("linux", "Red Hat Enterprise Linux", "7.9"),
    ("linux", "SLES", "15"),
    ("linux", "Amazon Linux", "7"),
    ("windows", "Windows Server 2019 Datacenter", "10.0.17763"),
    ("windows", "Windows Server 2012 R2 Standard", "6.3.9600"),
    ("linux", "Ubuntu", "14.04"),
    ("windows", "Windows Server 2008 R2 Standard", "6.1.7601"),
)
# weights: most machines on supported systems
_OS_WEIGHTS: Final = (20, 14, 10, 10, 6, 4, 20, 10, 3, 3)
AGENT_VERSIONS: Final[tuple[str, ...]] = ("1.43.02723.1815", "1.44.02766.1845", "1.45.02800.1880")
_AGENT_WEIGHTS: Final = (1, 3, 6)
_GROUP_WORDS: Final = ("web", "db", "batch", "edge", "infra", "app", "ops", "data")
_ENVS: Final = ("prod", "prod", "staging", "dev")

MalformedKind = Literal[
    "invalid_json",
    "invalid_utf8",
    "schema",
    "unsupported_region",
    "key_mismatch",
    "missing_key",
    "too_large",
    "random_bytes",
]
MALFORMED_KINDS: Final[tuple[MalformedKind, ...]] = get_args(MalformedKind)
SCENARIO_NAMES: Final = (
    "steady",
    "outages",
    "flap",
    "disconnect",
    "location-silent",
    "uplink-degrades",
    "subscription-degrades",
    "duplicates",
    "malformed",
    "skew",
)


def _mix(x: int) -> int:
    """splitmix64 finaliser: a cheap, well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """What the simulated fleet looks like; equal specs give equal fleets."""

    machines: int = 1000
    seed: int = 0
    subscriptions: int = 0  # 0: one per 2,000 machines, at least 2 (at most 200)
    resource_groups: int = 20  # per subscription
    locations: tuple[str, ...] = DEFAULT_REGIONS
    name_prefix: str = "vm"
    tags: bool = True

    def __post_init__(self) -> None:
        if self.machines < 1:
            raise ValueError(f"fleet: machines must be >= 1, got {self.machines}")
        if self.subscriptions < 0 or self.resource_groups < 1:
            raise ValueError("fleet: subscriptions must be >= 0 and resource_groups >= 1")
        if not self.locations or any(
            not (loc.isascii() and loc.isalnum() and loc.islower()) for loc in self.locations
        ):
            raise ValueError(
                f"fleet: locations must be lower-case region names, got {self.locations!r}"
            )
        if len(self.locations) > 255:
            raise ValueError("fleet: at most 255 locations")
        if not self.name_prefix or len(self.name_prefix) > 40:
            raise ValueError("fleet: name_prefix must be 1-40 characters")

    @property
    def subscription_count(self) -> int:
        if self.subscriptions:
            return self.subscriptions
        return max(2, min(200, self.machines // 2000 + 1))


@dataclass(frozen=True, slots=True)
class Machine:
    """One simulated machine, materialised on demand from its index."""

    index: int
    resource_id: str
    key: str
    subscription_id: str
    resource_group: str
    machine_name: str
    location: str
    os_type: str
    os_name: str
    os_version: str
    agent_version: str
    tags: dict[str, str]


class Fleet:
    """N machines in a few bytes each; see the module docstring."""

    def __init__(self, spec: FleetSpec) -> None:
        self.spec = spec
        n = spec.machines
        rng = random.Random(spec.seed * 7919 + 1)
        self.subscription_ids: list[str] = [
            str(uuid.UUID(int=rng.getrandbits(128), version=4))
            for _ in range(spec.subscription_count)
        ]
        rgs = spec.resource_groups
        self.group_names: list[str] = [_group_name(j) for j in range(rgs)]
        self.group_count = len(self.subscription_ids) * rgs
        # one byte per machine and attribute: random bytes mapped through a 256-entry table
        # (weights at 1/256 resolution), so even a million machines take milliseconds
        self.location_of = _categorical(rng, n, [1] * len(spec.locations))
        self.os_of = _categorical(rng, n, _OS_WEIGHTS)
        self.version_of = _categorical(rng, n, _AGENT_WEIGHTS)
        # the resource group is a hash of the index: not stored at all
        self._group_salt = _mix(spec.seed + 0x6209)
        self._phase_salt = _mix(spec.seed + 0x5EED)

    def __len__(self) -> int:
        return self.spec.machines

    def phase(self, i: int) -> float:
        """Offset of machine ``i``'s sends within an interval, as a fraction in [0, 1)."""
        jitter = (_mix(self._phase_salt ^ i) >> 11) / 9007199254740992.0  # [0, 1)
        return (i + jitter) / self.spec.machines

    def group(self, i: int) -> int:
        """Index of machine ``i``'s (subscription, resource group) pair."""
        return _mix(self._group_salt ^ i) % self.group_count

    def names(self, i: int) -> tuple[str, str, str]:
        """(resourceId, subscriptionId, resourceGroup) of machine ``i``; cheap."""
        g = self.group(i)
        sub = self.subscription_ids[g // self.spec.resource_groups]
        rg = self.group_names[g % self.spec.resource_groups]
        return resource_id(sub, rg, self.machine_name(i)), sub, rg

    def machine_name(self, i: int) -> str:
        # every third machine spelled in upper case: keys must be case-insensitive
        prefix = self.spec.name_prefix.upper() if i % 3 == 1 else self.spec.name_prefix
        return f"{prefix}-{i:07d}"

    def resource_id(self, i: int) -> str:
        return self.names(i)[0]

    def key(self, i: int) -> str:
        return self.names(i)[0].lower()

    def location(self, i: int) -> str:
        return self.spec.locations[self.location_of[i]]

    def tags(self, i: int) -> dict[str, str]:
        if not self.spec.tags:
            return {}
        g = self.group(i)
        return {"env": _ENVS[g % len(_ENVS)], "costCenter": f"cc-{g % 50:02d}"}

    def machine(self, i: int) -> Machine:
        rid, sub, rg = self.names(i)
        os_type, os_name, os_version = OPERATING_SYSTEMS[self.os_of[i]]
        return Machine(
            index=i,
            resource_id=rid,
            key=rid.lower(),
            subscription_id=sub,
            resource_group=rg,
            machine_name=self.machine_name(i),
            location=self.location(i),
            os_type=os_type,
            os_name=os_name,
            os_version=os_version,
            agent_version=AGENT_VERSIONS[self.version_of[i]],
            tags=self.tags(i),
        )

    def in_location(self, location: str) -> Iterator[int]:
        try:
            code = self.spec.locations.index(location)
        except ValueError:
            raise ValueError(
                f"location {location!r} is not one of the fleet's locations "
                f"{', '.join(self.spec.locations)}"
            ) from None
        find, start = self.location_of.find, 0
        while (i := find(code, start)) >= 0:
            yield i
            start = i + 1


def _categorical(rng: random.Random, n: int, weights: Sequence[int]) -> bytearray:
    """``n`` category codes drawn with ``weights`` (each at least 1/256 of the total)."""
    total = sum(weights)
    table = bytearray()
    for code, weight in enumerate(weights):
        table.extend([code] * max(1, round(256 * weight / total)))
    table = (table + bytes([len(weights) - 1]) * 256)[:256]
    return bytearray(rng.randbytes(n).translate(bytes(table)))


def _group_name(j: int) -> str:
    word = _GROUP_WORDS[j % len(_GROUP_WORDS)]
    # odd groups in mixed case, as people type them in the portal
    return f"RG-{word.capitalize()}-{j:03d}" if j % 2 else f"rg-{word}-{j:03d}"


# ---------------------------------------------------------------------------------------------
# scenarios


@dataclass(frozen=True, slots=True)
class Scenario:
    """Composable scenario knobs; zero means off. Durations are seconds; 0 = a sensible default
    derived from the timing (see :meth:`resolve`)."""

    connect_first: bool = True  # each machine's first message is a `connect`
    # outages: machines stop at random times in the window and resume after `outage_duration`;
    # `outage_permanent` of them never resume
    outage_fraction: float = 0.0
    outage_duration: float = 0.0
    outage_permanent: float = 0.0
    outage_window: tuple[float, float] | None = None  # (start, end) offsets of stop times
    # flapping machines: silent `flap_down` (long enough to be disconnected), alive `flap_up`
    flap_machines: int = 0
    flap_down: float = 0.0
    flap_up: float = 0.0
    flap_cycles: int = 0  # 0: as many as fit in the run
    # agents that send `disconnect` (at random times in the outage window) and go away
    disconnect_fraction: float = 0.0
    # every machine of one location silent at `silent_at` for `silent_for`
    silent_location: str | None = None
    silent_at: float = 0.0
    silent_for: float = 0.0
    silent_dead_fraction: float = 0.0  # of that location's machines, never come back
    # an uplink degrades: from `degrade_at` the location's delivery delays grow by
    # `degrade_step` every interval (up to five steps); after `degrade_miss_after` intervals
    # its heartbeats start to go missing, after `degrade_gone_after` all of them
    degrade_location: str | None = None
    # the same for one subscription's machines wherever they are (an ID of the fleet's; "":
    # its first subscription)
    degrade_subscription: str | None = None
    degrade_at: float = 0.0
    degrade_step: float = 0.0
    degrade_miss_after: int = 4
    degrade_gone_after: int = 6
    # per heartbeat probabilities
    duplicate_rate: float = 0.0
    malformed_rate: float = 0.0
    malformed_kinds: tuple[MalformedKind, ...] = MALFORMED_KINDS
    # clock skew: a fraction of the agents have their clock off by +/- skew_seconds
    skew_fraction: float = 0.0
    skew_seconds: float = 300.0

    def __post_init__(self) -> None:
        for name in (
            "outage_fraction",
            "outage_permanent",
            "disconnect_fraction",
            "silent_dead_fraction",
            "duplicate_rate",
            "malformed_rate",
            "skew_fraction",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"scenario: {name} must be in [0, 1], got {value}")
        if not 0 <= self.degrade_miss_after <= self.degrade_gone_after:
            raise ValueError(
                "scenario: degrade_miss_after must be 0..degrade_gone_after, got "
                f"{self.degrade_miss_after} and {self.degrade_gone_after}"
            )
        for name in (
            "outage_duration", "flap_down", "flap_up", "silent_at", "silent_for",
            "degrade_at", "degrade_step",
        ):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"scenario: {name} must be >= 0, got {getattr(self, name)}")
        if self.flap_machines < 0 or self.flap_cycles < 0:
            raise ValueError("scenario: flap_machines and flap_cycles must be >= 0")
        bad = set(self.malformed_kinds) - set(MALFORMED_KINDS)
        if bad or not self.malformed_kinds:
            raise ValueError(
                f"scenario: malformed kinds must be among {', '.join(MALFORMED_KINDS)}, "
                f"got {', '.join(self.malformed_kinds)}"
            )
        if self.outage_window is not None and not (
            0 <= self.outage_window[0] <= self.outage_window[1]
        ):
            raise ValueError(
                f"scenario: outage_window must be 0 <= start <= end, got {self.outage_window}"
            )

    @classmethod
    def named(cls, names: Iterable[str], **overrides: Any) -> Scenario:
        """Scenario from names (``steady``, ``outages``, ...) with default knobs, then overrides."""
        knobs: dict[str, Any] = {}
        for name in names:
            if name not in SCENARIO_NAMES:
                raise ValueError(
                    f"unknown scenario {name!r}; choose from {', '.join(SCENARIO_NAMES)}"
                )
            knobs.update(_NAMED_DEFAULTS[name])
        knobs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**knobs)

    def resolve(self, *, interval: float, disconnect_after: float) -> Scenario:
        """Fill the 0 = default durations from the timing."""
        gone = disconnect_after + 2 * interval  # long enough to be declared Disconnected
        return dataclasses.replace(
            self,
            outage_duration=self.outage_duration or gone,
            flap_down=self.flap_down or gone,
            flap_up=self.flap_up or 3 * interval,
            silent_for=self.silent_for or gone,
            silent_at=self.silent_at or 2 * interval,
            # after the baselines have been learnt (three intervals and some)
            degrade_at=self.degrade_at or 6 * interval,
            degrade_step=self.degrade_step or interval / 5,
        )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_NAMED_DEFAULTS: Final[dict[str, dict[str, Any]]] = {
    "steady": {},
    "outages": {"outage_fraction": 0.05, "outage_permanent": 0.2},
    "flap": {"flap_machines": 3},
    "disconnect": {"disconnect_fraction": 0.01},
    "location-silent": {"silent_location": DEFAULT_REGIONS[1]},
    "uplink-degrades": {"degrade_location": DEFAULT_REGIONS[2]},
    "subscription-degrades": {"degrade_subscription": ""},
    "duplicates": {"duplicate_rate": 0.02},
    "malformed": {"malformed_rate": 0.01},
    "skew": {"skew_fraction": 0.02},
}


ActionKind = Literal["stop", "resume", "disconnect"]


@dataclass(frozen=True, slots=True)
class Action:
    """A scenario action at offset ``at`` seconds from the start of the run."""

    at: float
    kind: ActionKind
    machine: int
    reason: str  # outage, outage-permanent, flap, disconnect, location-silent-dead


@dataclass(frozen=True, slots=True)
class Schedule:
    """The resolved scenario and its per-machine actions, sorted by time."""

    scenario: Scenario
    actions: tuple[Action, ...]
    skewed: dict[int, float]  # machine -> clock offset in seconds
    silent_location: int | None  # location code, or None
    silent_window: tuple[float, float]  # (start, end) offsets; machines of it send nothing
    degrade_location: int | None = None  # location code of the degrading uplink, or None
    # index in Fleet.subscription_ids of the degrading subscription, or None
    degrade_subscription: int | None = None


def build_schedule(
    fleet: Fleet,
    scenario: Scenario,
    *,
    interval: float,
    disconnect_after: float,
    duration: float | None,
    seed: int | None = None,
) -> Schedule:
    """The per-machine actions of ``scenario``; equal inputs give equal schedules."""
    sc = scenario.resolve(interval=interval, disconnect_after=disconnect_after)
    n = len(fleet)
    rng = random.Random((fleet.spec.seed if seed is None else seed) * 1_000_003 + 17)
    horizon = duration if duration is not None else interval + 8 * (disconnect_after + interval)
    actions: list[Action] = []

    # disjoint machine sets for the per-machine scenarios
    n_outage = round(sc.outage_fraction * n)
    n_disconnect = round(sc.disconnect_fraction * n)
    n_flap = min(sc.flap_machines, n)
    wanted = min(n, n_outage + n_disconnect + n_flap)
    chosen = rng.sample(range(n), wanted)
    outaged = chosen[:n_outage]
    disconnecting = chosen[n_outage : n_outage + n_disconnect]
    flapping = chosen[n_outage + n_disconnect : wanted]

    w_start, w_end = sc.outage_window or (interval, max(interval, horizon - sc.outage_duration))
    permanent = round(sc.outage_permanent * len(outaged))
    for j, m in enumerate(outaged):
        at = rng.uniform(w_start, w_end)
        if j < permanent:
            actions.append(Action(at, "stop", m, "outage-permanent"))
        else:
            actions.append(Action(at, "stop", m, "outage"))
            actions.append(Action(at + sc.outage_duration, "resume", m, "outage"))
    for m in disconnecting:
        actions.append(Action(rng.uniform(w_start, w_end), "disconnect", m, "disconnect"))
    cycle = sc.flap_down + sc.flap_up
    for m in flapping:
        at = interval + rng.uniform(0, interval)
        cycles = sc.flap_cycles or max(1, math.floor((horizon - at) / cycle))
        for _ in range(cycles):
            actions.append(Action(at, "stop", m, "flap"))
            actions.append(Action(at + sc.flap_down, "resume", m, "flap"))
            at += cycle

    silent_code: int | None = None
    window = (0.0, 0.0)
    if sc.silent_location is not None:
        silent_code = (
            fleet.spec.locations.index(sc.silent_location)
            if (sc.silent_location in fleet.spec.locations)
            else _bad_location(sc.silent_location, fleet.spec.locations)
        )
        window = (sc.silent_at, sc.silent_at + sc.silent_for)
        if sc.silent_dead_fraction > 0:
            members = list(fleet.in_location(sc.silent_location))
            busy = set(chosen)
            members = [m for m in members if m not in busy]
            dead = rng.sample(members, round(sc.silent_dead_fraction * len(members)))
            for m in sorted(dead):
                actions.append(Action(sc.silent_at, "stop", m, "location-silent-dead"))

    degrade_code: int | None = None
    if sc.degrade_location is not None:
        degrade_code = (
            fleet.spec.locations.index(sc.degrade_location)
            if sc.degrade_location in fleet.spec.locations
            else _bad_location(sc.degrade_location, fleet.spec.locations)
        )

    degrade_sub: int | None = None
    if sc.degrade_subscription is not None:
        degrade_sub = _subscription_index(sc.degrade_subscription, fleet.subscription_ids)
        sc = dataclasses.replace(sc, degrade_subscription=fleet.subscription_ids[degrade_sub])

    skewed: dict[int, float] = {}
    if sc.skew_fraction > 0:
        for m in rng.sample(range(n), round(sc.skew_fraction * n)):
            skewed[m] = sc.skew_seconds if rng.random() < 0.5 else -sc.skew_seconds

    actions.sort(key=lambda a: (a.at, a.machine, a.kind))
    return Schedule(sc, tuple(actions), skewed, silent_code, window, degrade_code, degrade_sub)


def _subscription_index(subscription: str, ids: Sequence[str]) -> int:
    """Where ``subscription`` (empty: the first) is in the fleet's subscription IDs."""
    if not subscription:
        return 0
    wanted = subscription.lower()
    for i, sub in enumerate(ids):
        if sub.lower() == wanted:
            return i
    shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
    raise ValueError(
        f"scenario: degrade_subscription {subscription!r} is not one of the fleet's "
        f"subscriptions ({shown}); leave it empty for the first, or change --seed, "
        "--machines or --subscriptions"
    )


def _bad_location(location: str, locations: Sequence[str]) -> int:
    raise ValueError(
        f"scenario: silent location {location!r} is not one of the fleet's locations "
        f"({', '.join(locations)})"
    )


def fleet_locations(settings: Settings) -> tuple[str, ...]:
    """The locations to spread the fleet over: the configured regions (defaults for ``*``)."""
    regions = tuple(r for r in settings.input.regions if r != "*")
    return regions or DEFAULT_REGIONS
