"""The history exporter's capacity fetch sends the token of capacity_token_file, to the
workers only; its /metrics binds to history_host."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from arcbeat.deploy.settings import Settings
from arcbeat.exporters.capacity.task import CapacityTask
from arcbeat.exporters.history.exporter import HistoryExporter
from arcbeat.exporters.sinks import make_sink
from arcbeat.streams.settings import SettingsError
from tests.support.net import free_port_block


def _settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.load(env=env, toml_path=tmp_path / "none.toml")


def test_the_capacity_fetch_sends_the_token_of_its_file(tmp_path: Path) -> None:
    token = tmp_path / "capacity.token"
    token.write_text("s3cret-read-token\n")
    seen: list[str | None] = []

    async def go() -> None:
        async def capacity(request: web.Request) -> web.Response:
            seen.append(request.headers.get("Authorization"))
            return web.json_response({"error": "not this time"}, status=503)

        app = web.Application()
        app.router.add_get("/capacity", capacity)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            s = _settings(
                tmp_path,
                ARCBEAT_CAPACITY_TOKEN_FILE=str(token),
                ARCBEAT_CAPACITY_SOURCE_URL=f"http://127.0.0.1:{port}",
            )
            task = CapacityTask(s, make_sink(s.influx), CollectorRegistry())
            task._history_loaded = True  # no InfluxDB here
            async with aiohttp.ClientSession() as http:
                assert await task.round(http) is None  # 503: no report, counted
            assert task.fetch_failures._value.get() == 1
        finally:
            await runner.cleanup()

    asyncio.run(go())
    assert seen == ["Bearer s3cret-read-token"]


def test_an_empty_token_file_is_a_clear_error(tmp_path: Path) -> None:
    token = tmp_path / "empty.token"
    token.write_text("")
    s = _settings(tmp_path, ARCBEAT_CAPACITY_TOKEN_FILE=str(token))
    with pytest.raises(SettingsError, match="ARCBEAT_CAPACITY_TOKEN_FILE"):
        CapacityTask(s, make_sink(s.influx), CollectorRegistry())


def test_history_metrics_bind_to_history_host(tmp_path: Path) -> None:
    s = _settings(
        tmp_path,
        ARCBEAT_HISTORY_HOST="127.0.0.2",
        ARCBEAT_HISTORY_PORT=str(free_port_block(1)),
        ARCBEAT_WEB_HOST="127.0.0.1",  # the worker's address is not the exporter's
        ARCBEAT_CAPACITY_INTERVAL="0",
    )

    async def go() -> list[str]:
        exporter = HistoryExporter(s, make_sink(s.influx))
        await exporter._start_web()
        assert exporter._web is not None
        hosts = [str(a[0]) for a in exporter._web.addresses]
        await exporter._web.cleanup()
        return hosts

    assert asyncio.run(go()) == ["127.0.0.2"]
