"""Shared pytest fixtures."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings as hypothesis_settings

from tests.support import schedule
from tests.support.examples import examples

if TYPE_CHECKING:
    from collections.abc import Generator

    from arcbeat.deploy.stack import Stack


def pytest_configure(config: pytest.Config) -> None:
    # The fast suite runs a quarter of each property test's examples (tests/support/examples.py),
    # the whole suite all of them. Test modules are imported after this hook.
    if "not services" in (config.option.markexpr or ""):
        os.environ.setdefault("ARCBEAT_EXAMPLES", "quick")
    # property tests without a count of their own: hypothesis' default 100 in the thorough run
    hypothesis_settings.register_profile("arcbeat", max_examples=examples(100))
    hypothesis_settings.load_profile("arcbeat")


@pytest.fixture(scope="session")
def stack(pytestconfig: pytest.Config) -> Stack:
    """The local stack (Kafka, Prometheus, Alertmanager, InfluxDB), started if needed.

    A running healthy stack is reused, and it is left running at the end: developers keep it
    between runs, CI's .ci/run stops it. A service that cannot start fails the tests that use
    this fixture (never a skip). Under xdist, the first worker brings it up; the other one
    uses it as it is.
    """
    from arcbeat.deploy.settings import Settings
    from arcbeat.deploy.stack import Stack, StackError

    running = Stack(Settings.load())
    with schedule.first_stack_up(pytestconfig) as first:
        if first:
            try:
                running.up(lambda message: print(f"[stack] {message}"))
            except StackError as exc:
                pytest.fail(f"the local stack could not start:\n{exc}", pytrace=False)
            schedule.stack_is_up(pytestconfig)
    return running


# Fixtures that start a service (a broker, Prometheus, Alertmanager, InfluxDB) or need the local
# stack. A test that uses one, directly or through another fixture, carries the `services`
# marker, so that `pytest -m "not services"` runs without any service.
SERVICE_FIXTURES = frozenset({"stack", "secure", "compose_broker", "fast_am"})


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [
        f"{item.nodeid} (uses {', '.join(sorted(used))})"
        for item in items
        if (used := SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())))
        and item.get_closest_marker("services") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "tests that start or need a service must carry @pytest.mark.services:\n  "
            + "\n  ".join(unmarked)
        )
    schedule.assign_groups(items)


def pytest_collection_finish(session: pytest.Session) -> None:
    schedule.check_grouped(session.config, session.items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    """Under `pytest -n 2`, what may run beside this test (tests/support/schedule.py)."""
    with schedule.cores_for(item, nextitem):
        return (yield)
