"""How many examples a property test runs.

Each property test names its thorough count, and a run of the whole suite (the README's
command, as CI runs it) runs it. The fast suite (`-m "not services"`, before a commit) runs a
quarter of it, at least 25: tests/conftest.py sets ``ARCBEAT_EXAMPLES=quick`` for that run
unless it is set already (``ARCBEAT_EXAMPLES=thorough`` keeps the full counts). Hypothesis keeps
the failing examples it finds in its database and tries them first on the next run, so the
quick count still replays what once failed.
"""

from __future__ import annotations

import os


def examples(thorough: int) -> int:
    if os.environ.get("ARCBEAT_EXAMPLES", "thorough") == "quick":
        return max(25, thorough // 4)
    return thorough
