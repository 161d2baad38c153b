"""How the worker API answers an error: a JSON object with an ``error`` message (what, where,
how to fix), never a bare status line."""

from __future__ import annotations

from aiohttp import web as aioweb


def error(status: int, detail: str) -> aioweb.Response:
    return aioweb.json_response({"error": detail}, status=status)
