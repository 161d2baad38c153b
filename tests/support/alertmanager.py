"""The local stack's Alertmanager: a client of its HTTP API (v2)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from arcbeat.streams.settings import parse_duration
from tests.support.net import http_json


class Alertmanager:
    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    def alerts(
        self,
        *filters: str,
        active: bool = True,
        inhibited: bool = True,
        silenced: bool = True,
        unprocessed: bool = True,
    ) -> list[dict[str, Any]]:
        params: dict[str, str | Sequence[str]] = {
            "filter": list(filters),
            "active": str(active).lower(),
            "inhibited": str(inhibited).lower(),
            "silenced": str(silenced).lower(),
            "unprocessed": str(unprocessed).lower(),
        }
        result: list[dict[str, Any]] = http_json(f"{self.base}/api/v2/alerts", params=params)
        return result

    def running_config(self) -> dict[str, Any]:
        doc = http_json(f"{self.base}/api/v2/status")
        config: dict[str, Any] = yaml.safe_load(doc["config"]["original"])
        return config

    def group_wait(self, alertname: str) -> float:
        """``group_wait`` of the first route matching ``alertname`` in the running config."""
        config = self.running_config()
        route = config["route"]
        wait = route.get("group_wait", "30s")
        for child in route.get("routes", []):
            if f'alertname="{alertname}"' in " ".join(child.get("matchers", [])):
                wait = child.get("group_wait", wait)
                break
        return float(parse_duration(str(wait)))
