"""How an agent or a simulated fleet runs: stopped by SIGINT/SIGTERM, reporting progress."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator

# a progress line (the commands print them on stderr)
Progress = Callable[[str], None]


@contextlib.contextmanager
def stop_on_signals(stop_event: asyncio.Event | None) -> Iterator[asyncio.Event]:
    """SIGINT/SIGTERM set the stop event (only when the caller gave none, in the main thread)."""
    if stop_event is not None:
        yield stop_event
        return
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, event.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread: the caller stops us some other way
    try:
        yield event
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
