"""Every module of the stream processor holds one job: at most 500 lines (docs/layout.md)."""

from __future__ import annotations

from pathlib import Path

STREAMS = Path(__file__).resolve().parents[1] / "streams"
MAX_LINES = 500


def test_every_module_of_streams_has_at_most_500_lines() -> None:
    long = {
        str(path.relative_to(STREAMS.parent)): n
        for path in sorted(STREAMS.rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, (
        f"modules over {MAX_LINES} lines: {long}; split each by concern into modules named for "
        "what they hold, and list them in docs/layout.md"
    )
