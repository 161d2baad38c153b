"""How `pytest -n 2` groups and orders the suite (tests/support/schedule.py), on stand-ins for
collected tests. Pure: starts nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from tests.support import schedule


@dataclass
class FakeItem:
    name: str
    markers: tuple[str, ...] = ()
    fixturenames: tuple[str, ...] = ()
    added: list[Any] = field(default_factory=list)

    def get_closest_marker(self, name: str) -> object | None:
        if name in self.markers:
            return name
        return None

    def add_marker(self, marker: Any) -> None:
        self.added.append(marker)


def item(name: str, *markers: str, fixtures: tuple[str, ...] = ()) -> pytest.Item:
    return cast(pytest.Item, FakeItem(name, markers, fixtures))


def test_groups_and_order() -> None:
    items = [
        item("unit"),
        item("cluster", "services", fixtures=("cluster", "stack")),
        item("e2e", "services", fixtures=("stack",)),
        item("wheels", "services"),
        item("bench", "services", "heavy", fixtures=("stack",)),
        item("image", "services", "heavy"),  # a build without the stack: still first
        item("unit2"),
        item("secure", "services", fixtures=("secure",)),
    ]
    schedule.assign_groups(items)
    order = [cast(FakeItem, i).name for i in items]
    assert order == ["bench", "image", "e2e", "unit", "unit2", "wheels", "cluster", "secure"]
    groups = {cast(FakeItem, i).name: [m.args[0] for m in cast(FakeItem, i).added] for i in items}
    assert groups == {
        "bench": ["stack"],
        "image": ["stack"],
        "e2e": ["stack"],
        "unit": [],
        "unit2": [],
        "wheels": [],
        "cluster": ["own-cluster"],
        "secure": ["own-secure"],
    }


def test_lock_modes() -> None:
    assert schedule.mode_of(item("bench", "services", "heavy")) == "exclusive"
    assert schedule.mode_of(item("e2e", "services")) == "shared"
    assert schedule.mode_of(item("unit")) is None


def test_the_lock_is_shared_or_exclusive(tmp_path: Any) -> None:
    a, b = schedule.RunLock(tmp_path / "l"), schedule.RunLock(tmp_path / "l")
    a.take("shared")
    b.take("shared")  # two shared holders at once: no wait
    assert (a.held, b.held) == ("shared", "shared")
    a.release()
    b.release()
    a.take("exclusive")
    assert a.held == "exclusive"
    a.release()
    assert a.held is None
