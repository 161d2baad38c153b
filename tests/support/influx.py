"""The local stack's InfluxDB 1.x: InfluxQL queries of one database."""

from __future__ import annotations

from typing import Any

from tests.support.net import http, http_json


class Influx:
    def __init__(self, base: str, db: str) -> None:
        self.base = base.rstrip("/")
        self.db = db

    def raw(self, q: str) -> dict[str, Any]:
        doc = http_json(
            f"{self.base}/query", params={"db": self.db, "q": q, "epoch": "ms"}, timeout=20
        )
        result: dict[str, Any] = doc["results"][0]
        if "error" in result:
            raise ValueError(f"InfluxQL {q!r}: {result['error']}")
        return result

    def series(self, q: str) -> list[dict[str, Any]]:
        series: list[dict[str, Any]] = self.raw(q).get("series", []) or []
        return series

    def rows(self, q: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for s in self.series(q):
            for values in s.get("values", []):
                row = dict(zip(s["columns"], values, strict=True))
                row.update(s.get("tags") or {})
                out.append(row)
        return out

    def drop(self) -> None:
        http(
            f"{self.base}/query",
            params={"q": f'DROP DATABASE "{self.db}"'},
            method="POST",
            timeout=20,
        )
