"""The worker HTTP API: /machines, /machines/{resourceId}, /fleet, /capacity, /healthz,
/readyz.

Each worker answers for the partitions it owns; a query without ``local=1`` is routed to the
owner of the key (one machine) or fanned out to every worker (lists, fleet), so any worker
can be asked anything. Each handler declares its role (:func:`arcbeat.streams.api.auth.require`);
a routed call carries the caller's Authorization header, so the owner checks the same token.

A peer that does not answer, or answers an error, never turns into a bare 500: lists and fleet
counts answer what the other workers had, marked ``partial: true`` with the ``missing``
workers and why; a single machine, whose owner is the one that failed, and capacity, which a
partial sum would undercount, answer 502 with the ``worker`` named.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from aiohttp import web as aioweb

from arcbeat.streams.api.auth import READ, Authenticator, forward_headers, install, require
from arcbeat.streams.api.errors import error as _error
from arcbeat.streams.api.fleet_view import FleetView
from arcbeat.streams.api.maintenance import MaintenanceAPI
from arcbeat.streams.api.tls import client_context
from arcbeat.streams.decide.fleet_summary import FleetSummary, SummaryError, merge_all
from arcbeat.streams.decide.machines import Machine
from arcbeat.streams.decide.output_records import CountKey
from arcbeat.streams.decide.status import Status, is_flapping
from arcbeat.streams.decide.timestamps import rfc3339
from arcbeat.streams.settings import Settings

log = logging.getLogger("arcbeat.web")

MAX_LIMIT = 1000
PEER_TIMEOUT = 10.0  # seconds a routed or fanned-out call may take
# /capacity decodes every owned machine: yield to the event loop between chunks so heartbeats
# keep flowing (about 10 us a machine: a quarter of a million take seconds).
SUMMARY_CHUNK = 2000
FILTERS: dict[str, Callable[[Machine, str], bool]] = {
    "status": lambda m, v: m.state.status.value.lower() == v.lower(),
    "subscription": lambda m, v: m.info.subscription_id.lower() == v.lower(),
    "resourceGroup": lambda m, v: m.info.resource_group.lower() == v.lower(),
    "location": lambda m, v: m.info.location == v.lower(),
}


def _flag(value: str | None) -> bool | None:
    """``?late=1``: 1/true/yes or 0/false/no; None when absent or anything else."""
    if value is None:
        return None
    v = value.strip().lower()
    if v in ("1", "true", "yes"):
        return True
    if v in ("0", "false", "no"):
        return False
    return None


def machine_json(key: str, m: Machine, fleet: FleetView, now: float) -> dict[str, Any]:
    s, i = m.state, m.info
    late = s.status is Status.CONNECTED and fleet.is_late(key)
    interval = fleet.heartbeat_interval
    return {
        "key": key,
        "resourceId": i.resource_id,
        "subscriptionId": i.subscription_id,
        "resourceGroup": i.resource_group,
        "machineName": i.machine_name,
        "location": i.location,
        "osType": i.os_type,
        "osName": i.os_name,
        "osVersion": i.os_version,
        "agentVersion": i.agent_version,
        "tags": i.tags,
        "status": s.status.value,
        "lastHeartbeatAt": rfc3339(s.last_heartbeat_at),
        "lastStatusChange": rfc3339(s.last_status_change),
        "silentForSeconds": round(max(0.0, now - s.last_heartbeat_at), 3),
        "clockSkewSeconds": round(i.skew, 3),
        "flapping": is_flapping(s, now, fleet.timing),
        "heldByScopeSilence": s.held_since is not None,
        # early warning: overdue by more than late_after, still Connected (not a status)
        "late": late,
        "lateSeconds": round(max(0.0, now - s.last_heartbeat_at - interval), 3) if late else 0.0,
        "partition": fleet.partition_of(key),
    }


class PeerError(Exception):
    """Another worker did not answer, or answered with an error: ``worker`` is its URL."""

    def __init__(self, worker: str, detail: str) -> None:
        super().__init__(f"worker {worker}: {detail}")
        self.worker = worker
        self.detail = detail

    def missing(self) -> dict[str, str]:
        return {"worker": self.worker, "error": self.detail}


def _peer_failure(url: str, status: int, body: Any) -> PeerError:
    detail = body.get("error") if isinstance(body, dict) else None
    why = f"answered HTTP {status}: {detail or str(body)[:200]}"
    if status in (401, 403):
        why += (
            " (it refused the caller's token, which this worker accepted: every worker needs "
            "the same api_tokens_file)"
        )
    return PeerError(url, why)


@aioweb.middleware
async def json_errors(
    request: aioweb.Request, handler: Callable[[aioweb.Request], Awaitable[aioweb.StreamResponse]]
) -> aioweb.StreamResponse:
    """Errors as JSON: a failed peer is a 502 naming it, anything unexpected a JSON 500."""
    try:
        return await handler(request)
    except aioweb.HTTPException:
        raise
    except PeerError as exc:
        return aioweb.json_response({"error": str(exc), "worker": exc.worker}, status=502)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _error(502, f"another worker did not answer: {type(exc).__name__}: {exc}")
    except Exception as exc:
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")


def by_status_and_location(
    counts: Mapping[CountKey, int],
) -> tuple[Counter[str], dict[str, Counter[str]]]:
    """Machine counts by status, and by location then status."""
    by_status: Counter[str] = Counter()
    by_location: dict[str, Counter[str]] = {}
    for (status, location, _os, _sub), n in counts.items():
        by_status[status] += n
        by_location.setdefault(location, Counter())[status] += n
    return by_status, by_location


class WorkerAPI:
    """The routes of one worker, reading ``fleet`` (what this worker owns, who owns the
    rest)."""

    def __init__(self, fleet: FleetView, settings: Settings) -> None:
        self.view = fleet
        self.settings = settings
        self._tls = client_context(settings.worker)  # verifies https peers (api_tls_ca)

    def register(self, app: aioweb.Application, authenticator: Authenticator | None = None) -> None:
        """Add the routes, behind ``authenticator`` (default: from the settings; a SettingsError
        when they would leave a routable listener open)."""
        install(app, authenticator or Authenticator.from_settings(self.settings.worker))
        app.middlewares.append(json_errors)
        app.router.add_get("/machines", self.list_machines)
        app.router.add_get(r"/machines/{rid:.+}", self.get_machine)
        app.router.add_get("/fleet", self.fleet)
        app.router.add_get("/capacity", self.capacity)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        MaintenanceAPI(self.view, self.fan_out_partial).register(app)

    # ---- routing helpers -----------------------------------------------------------------

    def _me(self) -> str:
        return self.view.url()

    def _session(self, request: aioweb.Request) -> aiohttp.ClientSession:
        """A client for calls on behalf of ``request``'s caller (same Authorization)."""
        return aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT),
            headers=forward_headers(request),
            connector=aiohttp.TCPConnector(ssl=self._tls),
        )

    async def fan_out(
        self, request: aioweb.Request, path: str, params: dict[str, str]
    ) -> list[Any]:
        """``path`` asked of every other worker (``local=1``), as ``request``'s caller; the
        first :class:`PeerError` when any of them fails."""
        answers, missing = await self.fan_out_partial(request, path, params)
        if missing:
            raise missing[0]
        return answers

    async def fan_out_partial(
        self, request: aioweb.Request, path: str, params: dict[str, str]
    ) -> tuple[list[Any], list[PeerError]]:
        """``path`` asked of every other worker: (the answers, the workers that failed)."""
        others = sorted(self.view.workers() - {self._me()})
        async with self._session(request) as http:

            async def one(url: str) -> Any:
                try:
                    async with http.get(url + path, params={**params, "local": "1"}) as r:
                        body = await r.json(content_type=None)
                        if r.status != 200:
                            raise _peer_failure(url, r.status, body)
                        return body
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    raise PeerError(url, f"{type(exc).__name__}: {exc or 'timed out'}") from exc

            results = await asyncio.gather(*(one(u) for u in others), return_exceptions=True)
        answers: list[Any] = []
        missing: list[PeerError] = []
        for result in results:
            if isinstance(result, PeerError):
                missing.append(result)
            elif isinstance(result, BaseException):
                raise result
            else:
                answers.append(result)
        for m in missing:
            log.warning("%s: %s (partial answer)", path, m)
        return answers, missing

    # ---- handlers -------------------------------------------------------------------------

    def _local_rows(self, query: dict[str, str]) -> list[dict[str, Any]]:
        now = time.time()
        wanted = [(FILTERS[k], v) for k, v in query.items() if k in FILTERS and v]
        late = _flag(query.get("late"))
        out: list[dict[str, Any]] = []
        for key in self.view.owned_keys():
            m = self.view.machine(key)
            if m is None or not all(f(m, v) for f, v in wanted):
                continue
            item = machine_json(key, m, self.view, now)
            if late is None or item["late"] == late:
                out.append(item)
        return out

    @require(READ)
    async def list_machines(self, request: aioweb.Request) -> aioweb.Response:
        q = dict(request.query)
        unknown = set(q) - set(FILTERS) - {"limit", "offset", "local", "late"}
        if unknown:
            return _error(
                400,
                f"unknown query parameter(s) {sorted(unknown)}; "
                f"use {sorted(FILTERS)}, late, limit, offset",
            )
        if "late" in q and _flag(q["late"]) is None:
            return _error(400, f"late must be 1 or 0 (true or false), got {q['late']!r}")
        try:
            limit = int(q.get("limit", "100"))
            offset = int(q.get("offset", "0"))
            if not (1 <= limit <= MAX_LIMIT and offset >= 0):
                raise ValueError
        except ValueError:
            return _error(400, f"limit must be 1..{MAX_LIMIT} and offset >= 0")
        items = self._local_rows(q)
        if q.get("local") != "1":
            filters = {k: v for k, v in q.items() if k in FILTERS or k == "late"}
            pages, missing = await self.fan_out_partial(
                request, "/machines", {**filters, "limit": str(MAX_LIMIT)}
            )
            for page in pages:
                items.extend(page["items"])
            items.sort(key=lambda d: d["key"])
            return aioweb.json_response(
                {
                    "total": len(items),
                    "offset": offset,
                    "limit": limit,
                    "items": items[offset : offset + limit],
                    **_partial(missing),
                }
            )
        items.sort(key=lambda d: d["key"])
        return aioweb.json_response({"total": len(items), "items": items})

    @require(READ)
    async def get_machine(self, request: aioweb.Request) -> aioweb.Response:
        rid = "/" + request.match_info["rid"].lstrip("/")
        key = rid.lower()
        m = self.view.machine(key)
        if m is not None and self.view.partition_of(key) in self.view.owned_partitions():
            return aioweb.json_response(machine_json(key, m, self.view, time.time()))
        if request.query.get("local") == "1":
            return _error(404, f"no machine {rid} on this worker")
        owner = self.view.owner_of(key)
        if owner is None or owner == self._me():
            return _error(
                404,
                f"no machine {rid}: it never sent an accepted heartbeat, "
                "or it disconnected (Deleted)",
            )
        url = f"{owner}/machines{rid}"
        try:
            async with self._session(request) as http, http.get(url, params={"local": "1"}) as r:
                body = await r.json(content_type=None)
                if r.status in (200, 404):
                    return aioweb.json_response(body, status=r.status)
                raise _peer_failure(owner, r.status, body)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise PeerError(
                owner,
                f"owns partition {self.view.partition_of(key)} of {rid} but did not answer "
                f"({type(exc).__name__}: {exc or 'timed out'}); its partitions move to another "
                "worker after the session timeout",
            ) from exc

    def _local_fleet(self) -> dict[str, Any]:
        by_status, by_location = by_status_and_location(self.view.counts())
        return {
            "partitions": sorted(self.view.owned_partitions()),
            "byStatus": dict(by_status),
            "byLocation": {k: dict(v) for k, v in by_location.items()},
            # machines whose Disconnected a ScopeSilent verdict holds, by scope (the index)
            "held": dict(self.view.held_by_scope()),
        }

    @require(READ)
    async def fleet(self, request: aioweb.Request) -> aioweb.Response:
        mine = self._local_fleet()
        if request.query.get("local") == "1":
            return aioweb.json_response(mine)
        others, missing = await self.fan_out_partial(request, "/fleet", {})
        parts = [mine, *others]
        by_status: Counter[str] = Counter()
        by_location: dict[str, Counter[str]] = {}
        held: Counter[str] = Counter()
        for part in parts:
            by_status.update(part["byStatus"])
            held.update(part.get("held") or {})  # a worker of an older version has none
            for loc, c in part["byLocation"].items():
                by_location.setdefault(loc, Counter()).update(c)
        return aioweb.json_response(
            {
                "at": rfc3339(time.time()),
                "workers": len(parts),
                "total": sum(by_status.values()),
                "byStatus": dict(by_status),
                "byLocation": {k: dict(v) for k, v in sorted(by_location.items())},
                "silentScopes": sorted(self.view.silent_scopes()),
                "held": dict(sorted(held.items())),
                **_partial(missing),
            }
        )

    async def _local_summary(self) -> FleetSummary:
        partitions = frozenset(self.view.owned_partitions())
        keys = self.view.owned_keys()  # a copy: the index changes while this yields
        out = FleetSummary(partitions=partitions, partitions_total=self.settings.kafka.partitions)
        for i, key in enumerate(keys):
            if i and i % SUMMARY_CHUNK == 0:
                await asyncio.sleep(0)
            m = self.view.machine(key)
            if m is not None:  # deleted meanwhile
                out.add(m.info)
        return out

    @require(READ)
    async def capacity(self, request: aioweb.Request) -> aioweb.Response:
        """Machine counts for capacity planning (exporters.capacity turns them into a report).

        Fleet-wide unless ``local=1``: every worker's summary, merged. Answers 502 when a
        worker does not answer and 503 during a rebalance: a partial sum would undercount.
        """
        unknown = set(request.query) - {"local"}
        if unknown:
            return _error(400, f"unknown query parameter(s) {sorted(unknown)}; use local=1 or none")
        s = self.settings
        mine = await self._local_summary()
        meta = {
            "at": rfc3339(time.time()),
            "topicPrefix": s.kafka.topic_prefix,
            "appId": s.kafka.app_id,
        }
        if request.query.get("local") == "1":
            return aioweb.json_response({**mine.to_dict(), **meta, "workers": 1})
        others, missing = await self.fan_out_partial(request, "/capacity", {})
        if missing:
            return aioweb.json_response(
                {
                    "error": f"{missing[0]}; capacity needs every worker's machines, so no "
                    "partial answer is given",
                    "worker": missing[0].worker,
                    **_partial(missing),
                },
                status=502,
            )
        try:
            parts = [
                FleetSummary.from_dict(o, source=f"worker answer {i + 1}")
                for i, o in enumerate(others)
            ]
            merged = merge_all([mine, *parts])
        except SummaryError as exc:
            return _error(503, str(exc))
        return aioweb.json_response({**merged.to_dict(), **meta, "workers": 1 + len(parts)})

    def _state(self) -> dict[str, Any]:
        return {
            "worker": self.view.worker_id,
            "partitions": sorted(self.view.owned_partitions()),
            "lag": self.view.lag(),
            "lastEventAt": rfc3339(self.view.last_event_at()),
        }

    # the probes declare no role: open, or read with api_protect_probes (auth.PROBE_PATHS)

    async def healthz(self, request: aioweb.Request) -> aioweb.Response:
        """Liveness: the process and its heartbeat loop run (not whether it owns anything)."""
        alive, reason = self.view.alive()
        body = {"status": "ok" if alive else "failing", "reason": reason, **self._state()}
        return aioweb.json_response(body, status=200 if alive else 503)

    async def readyz(self, request: aioweb.Request) -> aioweb.Response:
        """Readiness: owns partitions, recovered their state, and within one tick of the log
        end (503 with the reason until then)."""
        ready, reason = self.view.readiness()
        body = {"status": "ready" if ready else "not ready", "reason": reason, **self._state()}
        return aioweb.json_response(body, status=200 if ready else 503)


def _partial(missing: list[PeerError]) -> dict[str, Any]:
    """``partial`` (and the ``missing`` workers) of an answer merged from every worker."""
    return {"partial": bool(missing), "missing": [m.missing() for m in missing]}
