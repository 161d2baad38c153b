"""The goal fastPathKept's method: pairs of workers, delivery delays on and off, the first of
each pair alternating, the median of the pairs' ratios (workers faked: no services)."""

from __future__ import annotations

from typing import Any

import pytest

from arcbeat.bench.delay_cost import PAIRS, run_delay_cost
from arcbeat.deploy.cli import build_parser
from arcbeat.deploy.settings import Settings


def test_pairs_alternate_and_the_median_ratio_is_the_figure() -> None:
    rates = iter([90.0, 100.0, 100.0, 96.0, 50.0, 100.0])  # in the order the workers run
    ran: list[tuple[bool, str, str]] = []

    def measure(ws: Settings, name: str) -> dict[str, Any]:
        ran.append((ws.timing.delivery_delays, name, ws.kafka.app_id))
        return {"steadyStateRate": next(rates), "cpuMicrosecondsPerRecord": 10.0}

    s = Settings.load(env={}, toml_path="/nonexistent.toml", app_id="tput")
    out = run_delay_cost(measure, s, 1000, 3, lambda _: None)
    assert [on for on, _, _ in ran] == [True, False, False, True, True, False]
    assert len({app for _, _, app in ran}) == 6  # each worker reads the log from the start
    assert [p["first"] for p in out["pairs"]] == ["with", "without", "with"]
    assert [p["kept"] for p in out["pairs"]] == [0.9, 0.96, 0.5]
    assert out["kept"] == 0.9 and out["rateWith"] == 90.0 and out["rateWithout"] == 100.0
    assert "delivery_delays=false" in out["how"]


def test_the_bench_command_takes_the_number_of_pairs(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["bench"]).delay_pairs == PAIRS
    assert parser.parse_args(["bench", "--delay-pairs", "0"]).delay_pairs == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--delay-pairs", "-1"])
    assert "expected a whole number >= 0, got -1" in capsys.readouterr().err
