"""The worker API of maintenance windows: ``GET/POST /maintenance``, ``DELETE
/maintenance/{id}``.

Any worker takes the request: every worker reads every window (``MaintenanceBoard``), and a
write goes to the shared topic, so it answers after applying it itself. Creating or ending a
window silences or restores paging: both need the ``maintenance`` role, and each change
is logged on ``arcbeat.audit`` with who made it. A selector must match at least one machine
some worker knows (``allowEmpty`` for machines not onboarded yet): a typo in a resource
group would otherwise silence nothing and say nothing.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web as aioweb

from arcbeat.streams.api.auth import MAINTENANCE, READ, audit, principal_of, require
from arcbeat.streams.api.errors import error as _error
from arcbeat.streams.api.fleet_view import FleetView
from arcbeat.streams.decide.maintenance import MaintenanceError, Selector
from arcbeat.streams.decide.maintenance_codec import decode, new_window_id, parse_request, to_json

# asks every other worker (path, query) on behalf of a request's caller: (their answers, the
# workers that failed, each with a .missing() dict): WorkerAPI.fan_out_partial
FanOut = Callable[[aioweb.Request, str, dict[str, str]], Awaitable[tuple[list[Any], list[Any]]]]

MATCH_CHUNK = 2000  # machines matched between two yields to the event loop


class MaintenanceAPI:
    def __init__(self, fleet: FleetView, fan_out: FanOut) -> None:
        self.view = fleet
        self.fan_out = fan_out

    def register(self, app: aioweb.Application) -> None:
        app.router.add_get("/maintenance", self.list_windows)
        app.router.add_post("/maintenance", self.create)
        app.router.add_get("/maintenance/matches", self.matches)
        app.router.add_delete("/maintenance/{id}", self.end)

    async def _local_match_count(self, selector: Selector) -> int:
        fleet = self.view
        if selector.resource_ids:
            return sum(fleet.machine(rid) is not None for rid in selector.resource_ids)
        n = 0
        for i, key in enumerate(fleet.owned_keys()):
            m = fleet.machine(key)
            if m is not None:
                f = m.info
                n += selector.matches(
                    f.resource_id, f.subscription_id, f.resource_group, f.location, f.tags
                )
            if i and i % MATCH_CHUNK == 0:
                await asyncio.sleep(0)  # heartbeats keep flowing
        return n

    @require(READ)
    async def list_windows(self, request: aioweb.Request) -> aioweb.Response:
        book = self.view.windows
        now = time.time()
        windows = book.active(now) if request.query.get("active") == "1" else book.all()
        return aioweb.json_response(
            {"windows": [{**to_json(w), "active": w.active_at(now)} for w in windows]}
        )

    @require(READ)
    async def matches(self, request: aioweb.Request) -> aioweb.Response:
        """How many machines of this worker a selector matches (``local=1``: the others'
        counts are asked for by the worker that took a create)."""
        try:
            probe = decode(request.query.get("window", "").encode())
        except MaintenanceError as exc:
            return _error(400, str(exc))
        return aioweb.json_response({"machines": await self._local_match_count(probe.selector)})

    @require(MAINTENANCE)
    async def create(self, request: aioweb.Request) -> aioweb.Response:
        try:
            body = await request.json(loads=orjson.loads)
        except ValueError as exc:
            return _error(400, f"maintenance: the request body is not JSON ({exc})")
        if not isinstance(body, dict):
            return _error(400, "maintenance: the request body must be a JSON object")
        allow_empty = bool(body.pop("allowEmpty", False))
        who = principal_of(request)
        now = time.time()
        try:
            window = parse_request(
                body, window_id=new_window_id(now, os.urandom(3)), created_by=who.name, now=now
            )
        except MaintenanceError as exc:
            return _error(400, str(exc))
        machines = await self._local_match_count(window.selector)
        others, missing = await self.fan_out(
            request, "/maintenance/matches", {"window": orjson.dumps(to_json(window)).decode()}
        )
        machines += sum(int(o.get("machines", 0)) for o in others)
        gaps = [m.missing() for m in missing]
        if machines == 0 and gaps and not allow_empty:
            names = ", ".join(g["worker"] for g in gaps)
            return aioweb.json_response(
                {
                    "error": f"maintenance: no machine matched on the workers that answered, "
                    f"and {names} did not answer ({gaps[0]['error']}): whether the selector "
                    "matches anything is unknown; try again, or create it with allowEmpty "
                    "(arcbeat maintenance create --allow-empty)",
                    "worker": gaps[0]["worker"],
                    "missing": gaps,
                },
                status=503,
            )
        if machines == 0 and not allow_empty:
            return _error(
                422,
                "maintenance: the selector matches no machine arcbeat knows; check the "
                "resource IDs or the scope, or allow it for machines not onboarded yet "
                "(allowEmpty: true; arcbeat maintenance create --allow-empty)",
            )
        await self.view.put_window(window)
        audit(who, "maintenance.create", to_json(window))
        # with workers missing, machines counts those of the workers that answered
        body = {**to_json(window), "machines": machines, "partial": bool(gaps), "missing": gaps}
        return aioweb.json_response(body, status=201)

    @require(MAINTENANCE)
    async def end(self, request: aioweb.Request) -> aioweb.Response:
        window_id = request.match_info["id"]
        window = self.view.windows.get(window_id)
        if window is None:
            return _error(
                404,
                f"maintenance: no window {window_id!r}; list them with arcbeat maintenance "
                "list (GET /maintenance)",
            )
        who = principal_of(request)
        try:
            ended = window.ended(who.name, time.time())
        except MaintenanceError as exc:
            return _error(409, str(exc))
        await self.view.put_window(ended)
        audit(who, "maintenance.end", {"id": window_id})
        return aioweb.json_response(to_json(ended))
