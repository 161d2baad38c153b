"""The README's benchmark table is the one the latest report generates (bench/readme.py)."""

from __future__ import annotations

import json

from arcbeat.bench import readme


def test_the_readme_shows_the_latest_report() -> None:
    report = json.loads(readme.REPORT.read_text())
    text = (readme.REPO / "README.md").read_text()
    start, end = text.index(readme.START), text.index(readme.END) + len(readme.END)
    assert text[start:end] == readme.block(report), (
        "README.md's benchmark table is not the latest report's: run "
        "python -m arcbeat.bench.readme (a complete arcbeat bench run does it)"
    )


def test_the_block_lists_every_goal_with_its_verdict() -> None:
    report = {
        "startedAt": "2026-01-01T00:00:00Z",
        "command": "arcbeat bench",
        "seconds": 700.0,
        "throughput": {
            "sustainedRate": 30_000.0,
            "ratioWorkerToAiokafka": 0.25,
            "worker": {"steadyStateRate": 30_000.0, "onboardingRate": 20_000.0},
            "aiokafka": {"rate": 120_000.0},
        },
    }
    text = readme.block(report)
    assert "| 30,000/s | met |" in text
    assert "**missed** (2.0x below)" in text
    assert text.count("not measured") >= 5  # the phases that did not run
    assert text.startswith(readme.START) and text.endswith(readme.END)
