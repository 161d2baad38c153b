"""Shared pytest fixtures."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from arcbeat.deploy.stack import Stack


@pytest.fixture(scope="session")
def stack() -> Stack:
    """The local stack (Kafka, Prometheus, Alertmanager, InfluxDB), started if needed.

    A running healthy stack is reused, and it is left running at the end: developers keep it
    between runs, CI's .ci/run stops it. A service that cannot start fails the tests that use
    this fixture (never a skip).
    """
    from arcbeat.deploy.stack import Stack, StackError
    from arcbeat.streams.settings import Settings

    running = Stack(Settings.load())
    try:
        running.up(lambda message: print(f"[stack] {message}"))
    except StackError as exc:
        pytest.fail(f"the local stack could not start:\n{exc}", pytrace=False)
    return running
