"""Shared pytest fixtures."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import settings as hypothesis_settings

from tests.support.examples import examples

if TYPE_CHECKING:
    from arcbeat.deploy.stack import Stack

# property tests without a count of their own run hypothesis' default 100 in the thorough run
hypothesis_settings.register_profile("arcbeat", max_examples=examples(100))
hypothesis_settings.load_profile("arcbeat")


@pytest.fixture(scope="session")
def stack() -> Stack:
    """The local stack (Kafka, Prometheus, Alertmanager, InfluxDB), started if needed.

    A running healthy stack is reused, and it is left running at the end: developers keep it
    between runs, CI's .ci/run stops it. A service that cannot start fails the tests that use
    this fixture (never a skip).
    """
    from arcbeat.deploy.settings import Settings
    from arcbeat.deploy.stack import Stack, StackError

    running = Stack(Settings.load())
    try:
        running.up(lambda message: print(f"[stack] {message}"))
    except StackError as exc:
        pytest.fail(f"the local stack could not start:\n{exc}", pytrace=False)
    return running


# Fixtures that start a service (a broker, Prometheus, Alertmanager, InfluxDB) or need the local
# stack. A test that uses one, directly or through another fixture, carries the `services`
# marker, so that `pytest -m "not services"` runs without any service.
SERVICE_FIXTURES = frozenset({"stack", "secure", "compose_broker", "fast_am"})


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
