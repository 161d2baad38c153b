"""Stopping cleanly: SIGTERM (systemd), Ctrl-C, and the console events of a Windows service.

On Linux the event loop's signal handlers set the stop event. Windows' event loops have no
``add_signal_handler``: there ``signal.signal`` catches SIGINT (Ctrl-C, which WinSW sends to
stop the service) and SIGBREAK (Ctrl-Break), and hands the stop to the loop thread-safely.
The signal module and the loop are parameters so that both paths are tested on Linux.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal as signal_module
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any


@contextlib.contextmanager
def stop_on_signals(
    stop: asyncio.Event,
    loop: asyncio.AbstractEventLoop | None = None,
    signals: ModuleType | Any = signal_module,
) -> Iterator[list[str]]:
    """Set ``stop`` on SIGTERM/SIGINT (and SIGBREAK where it exists); yields the names of the
    signals handled. Handlers are restored on exit."""
    loop = loop or asyncio.get_running_loop()
    names = [n for n in ("SIGTERM", "SIGINT", "SIGBREAK") if hasattr(signals, n)]
    restore: list[Callable[[], object]] = []

    def from_thread(_signum: int, _frame: object) -> None:
        loop.call_soon_threadsafe(stop.set)

    for name in names:
        number: int = getattr(signals, name)
        try:
            loop.add_signal_handler(number, stop.set)
            restore.append(functools.partial(loop.remove_signal_handler, number))
        except (NotImplementedError, RuntimeError):
            # Windows: the handler runs between bytecodes of the main thread, not in the loop
            previous = signals.signal(number, from_thread)
            restore.append(functools.partial(signals.signal, number, previous))
    try:
        yield names
    finally:
        for undo in reversed(restore):
            with contextlib.suppress(Exception):
                undo()
