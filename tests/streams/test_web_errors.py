"""Errors of the worker API are JSON, never a bare 500: a failed peer is a 502 naming it (a 401
from a peer says the tokens files differ), anything unexpected a JSON 500."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from arcbeat.streams.api.web import PeerError, _partial, _peer_failure, json_errors


def test_a_peer_refusing_the_token_names_the_fix() -> None:
    err = _peer_failure("http://w1:6066", 401, {"error": "unknown token"})
    assert err.worker == "http://w1:6066"
    assert "answered HTTP 401: unknown token" in err.detail
    assert "api_tokens_file" in err.detail
    assert err.missing() == {"worker": "http://w1:6066", "error": err.detail}
    assert _partial([err]) == {"partial": True, "missing": [err.missing()]}
    assert _partial([]) == {"partial": False, "missing": []}


def _call(handler: Any) -> tuple[int, str, Any]:
    async def go() -> tuple[int, str, Any]:
        app = web.Application(middlewares=[json_errors])
        app.router.add_get("/x", handler)
        async with TestClient(TestServer(app)) as client:
            r = await client.get("/x")
            text = await r.text()
            return (
                r.status,
                r.content_type,
                json.loads(text) if r.content_type.endswith("json") else text,
            )

    return asyncio.run(go())


def test_errors_are_json() -> None:
    async def peer(request: web.Request) -> web.Response:
        raise PeerError("http://w2:6066", "ClientConnectorError: refused")

    async def client_error(request: web.Request) -> web.Response:
        raise aiohttp.ClientConnectionError("reset")

    async def bug(request: web.Request) -> web.Response:
        raise KeyError("items")

    async def not_found(request: web.Request) -> web.Response:
        raise web.HTTPNotFound()

    status, kind, body = _call(peer)
    assert (status, kind) == (502, "application/json")
    assert body == {"error": "worker http://w2:6066: ClientConnectorError: refused",
                    "worker": "http://w2:6066"}  # fmt: skip
    status, kind, body = _call(client_error)
    assert (status, kind) == (502, "application/json") and "reset" in body["error"]
    status, kind, body = _call(bug)
    assert (status, kind) == (500, "application/json") and "KeyError" in body["error"]
    status, _, _ = _call(not_found)
    assert status == 404  # aiohttp's own answers pass through
