"""How the whole suite shares two cores: `python3 -m pytest -n 2` with pyproject's
`--dist loadgroup --no-loadscope-reorder` (xdist hands out groups and tests in the order below).

- The ``stack`` group: every test on the local stack's broker, one after the other on one
  worker (they share its broker, Prometheus' configuration and InfluxDB); the ``heavy`` ones
  (image builds, the benchmark run) first. It comes first, so one worker takes it at once.
- The tests that need no service, one by one, on the other worker; then the tests that need a
  service but neither the local stack nor a broker (a private Alertmanager, PyPI).
- Then the tests with a broker of their own (the three-broker cluster, the recovery broker,
  the SASL_SSL brokers): one group per such broker, as its fixture starts it on fixed or
  module-wide ports.

What may run side by side is decided by one lock per run (a file beside the workers' temporary
folders): a ``heavy`` test holds it exclusively, every other test that uses a service holds it
shared, a test that needs no service takes none. So a build or the benchmark never runs beside
a test that measures detection delays, and while one worker builds, the other runs the tests
that need no service. A worker keeps the exclusive lock from one heavy test to the next: the
heavy ones run as one block. Without xdist there is nothing beside a test and no lock is taken.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

# Fixtures that start a broker of the test's own (ports, state folder): such a test shares
# neither the local stack's broker nor its Prometheus configuration (in InfluxDB it writes to a
# database of its own).
OWN_BROKER_FIXTURES = frozenset({"cluster", "broker", "secure", "compose_broker"})

STACK = "stack"
STACK_UP = "arcbeat-stack-up"  # written by the worker that brought the stack up


def needs_service(item: pytest.Item) -> bool:
    return item.get_closest_marker("services") is not None


def is_heavy(item: pytest.Item) -> bool:
    return item.get_closest_marker("heavy") is not None


def group_of(item: pytest.Item) -> str | None:
    """The xdist group of a test; None for one that any worker may run on its own."""
    if is_heavy(item):
        return STACK
    if not needs_service(item):
        return None
    fixtures = set(getattr(item, "fixturenames", ()))
    own = sorted(fixtures & OWN_BROKER_FIXTURES)
    if own:
        return f"own-{own[0]}"
    return STACK if "stack" in fixtures else None


def _rank(item: pytest.Item) -> int:
    group = group_of(item)
    if group == STACK:
        return 0 if is_heavy(item) else 1
    if group is None:
        # what needs no service first: a test that needs one waits for the heavy block
        return 3 if needs_service(item) else 2
    return 4


def assign_groups(items: list[pytest.Item]) -> None:
    """Orders the items (a stable sort: a module's tests stay together) and marks each test
    that needs a service with its xdist group."""
    items.sort(key=_rank)
    for item in items:
        group = group_of(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


def check_grouped(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Fails the run when xdist did not mark a grouped test's node id with its group (it then
    spreads a group over both workers: two tests on one broker at once)."""
    if not (hasattr(config, "workerinput") and config.getvalue("loadgroup")):
        return
    lost = [
        item.nodeid
        for item in items
        if item.get_closest_marker("xdist_group") is not None and "@" not in item.nodeid
    ]
    if lost:
        raise pytest.UsageError(
            f"pytest-xdist did not group {len(lost)} tests (e.g. {lost[0]}): this pytest and "
            "pytest-xdist do not work together for --dist loadgroup. Install the versions "
            "pyproject.toml names: pip install -e '.[dev]'"
        )


def _run_dir(config: pytest.Config) -> Path | None:
    """The folder every xdist worker of this run shares (the parent of their basetemp); None
    when not an xdist worker."""
    if not hasattr(config, "workerinput"):
        return None
    basetemp = config.option.basetemp
    return Path(basetemp).parent if basetemp else None


class RunLock:
    """A shared/exclusive lock (flock) on a file of the run's folder."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = path.open("ab")
        self.held: str | None = None

    def take(self, mode: str) -> None:
        if self.held == mode:
            return
        self.release()
        fcntl.flock(self._file, fcntl.LOCK_EX if mode == "exclusive" else fcntl.LOCK_SH)
        self.held = mode

    def release(self) -> None:
        if self.held is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self.held = None


_LOCK_KEY = pytest.StashKey[RunLock]()


def _lock(config: pytest.Config) -> RunLock | None:
    if _LOCK_KEY not in config.stash:
        run_dir = _run_dir(config)
        if run_dir is None:
            return None
        config.stash[_LOCK_KEY] = RunLock(run_dir / "arcbeat-cores.lock")
    return config.stash[_LOCK_KEY]


def mode_of(item: pytest.Item) -> str | None:
    if is_heavy(item):
        return "exclusive"
    return "shared" if needs_service(item) else None


@contextlib.contextmanager
def cores_for(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Holds the run's lock as ``item`` needs it from its setup to its teardown."""
    lock = _lock(item.config)
    mode = mode_of(item)
    if lock is None:
        yield
        return
    if mode is None:
        lock.release()
    else:
        lock.take(mode)
    try:
        yield
    finally:
        # keep the exclusive lock into the next heavy test: the heavy block stays one block
        if not (mode == "exclusive" and nextitem is not None and is_heavy(nextitem)):
            lock.release()


@contextlib.contextmanager
def first_stack_up(config: pytest.Config) -> Iterator[bool]:
    """Whether this worker is the run's first to bring the local stack up (and reload its
    configuration), under a run-wide lock. Only the first one does: a second `stack up` would
    reload Prometheus' configuration under a test of the other worker that changed it. The
    caller marks success with :func:`stack_is_up`."""
    run_dir = _run_dir(config)
    if run_dir is None:
        yield True
        return
    with (run_dir / "arcbeat-stack.lock").open("ab") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield not (run_dir / STACK_UP).exists()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def stack_is_up(config: pytest.Config) -> None:
    run_dir = _run_dir(config)
    if run_dir is not None:
        (run_dir / STACK_UP).write_text(f"{os.getpid()}\n")
