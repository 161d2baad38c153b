"""How many examples a property test runs.

Each property test names its thorough count; the full run of CI (`.ci/run` sets
``ARCBEAT_EXAMPLES=thorough``) runs it, an ordinary run (the fast suite before a commit) a
quarter of it, at least 25. Hypothesis keeps the failing examples it finds in its database and
tries them first on the next run, so the quick count still replays what once failed.
"""

from __future__ import annotations

import os

THOROUGH = os.environ.get("ARCBEAT_EXAMPLES", "quick") == "thorough"


def examples(thorough: int) -> int:
    return thorough if THOROUGH else max(25, thorough // 4)
