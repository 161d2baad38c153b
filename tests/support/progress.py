"""Progress lines and measured figures of the long tests (shown with ``pytest -s``, or on
failure)."""

from __future__ import annotations

import time
from collections.abc import Callable


def sayer(tag: str) -> Callable[[str], None]:
    """A ``say(message)`` that prints ``[<tag> HH:MM:SS] message``."""

    def say(message: str) -> None:
        print(f"[{tag} {time.strftime('%H:%M:%S')}] {message}", flush=True)

    return say


say = sayer("e2e")
