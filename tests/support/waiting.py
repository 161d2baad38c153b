"""Polling until something holds; on timeout, an AssertionError that says what was seen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    *,
    timeout: float,
    every: float = 0.5,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns something other than None (or fail after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{on_timeout()}" if on_timeout is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{extra}")
        time.sleep(every)


def wait_until(
    what: str,
    check: Callable[[], T | None],
    *,
    timeout: float,
    every: float = 0.5,
    state: Callable[[], str] | None = None,
) -> T:
    """Poll ``check`` until it returns something other than None; AssertionError on timeout
    naming ``what`` and, if given, the last ``state()``."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            value = check()
        except (OSError, ValueError, KeyError) as exc:  # a service answering badly: retry
            value, last_error = None, f" (last error: {exc!r})"
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            detail = f"; state: {state()}" if state is not None else ""
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what}{last_error}{detail}"
            )
        time.sleep(every)


def settle(
    what: str, check: Callable[[], list[str]], *, timeout: float, every: float = 1.5
) -> None:
    """Re-run ``check`` until it finds no problem; fail with its last problems after timeout."""
    deadline = time.monotonic() + timeout
    problems: list[str] = []
    while True:
        problems = check()
        if not problems:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {len(problems)} problem(s):\n" + "\n".join(problems))
        time.sleep(every)
