"""The worker API's handlers against a plain fleet view: no Kafka, no pipeline, no peers
(one worker owning every partition, or a second one that is down)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from arcbeat.streams.api.fleet_view import FleetView
from arcbeat.streams.api.web import WorkerAPI
from arcbeat.streams.decide.machines import Machine, MachineInfo
from arcbeat.streams.decide.maintenance import Book, Window
from arcbeat.streams.decide.output_records import CountKey
from arcbeat.streams.decide.status import MachineState, Status, Timing
from arcbeat.streams.settings import Settings

SUB = "00000000-0000-0000-0000-000000000001"


def rid(name: str, rg: str = "rg1") -> str:
    return (
        f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.HybridCompute/machines/"
        + name
    )


def machine(name: str, status: Status, location: str = "westeurope", rg: str = "rg1") -> Machine:
    now = time.time()
    info = MachineInfo(rid(name, rg), SUB, rg, name, location, "Linux", None, None, "1.0", {}, 0.0)
    return Machine(MachineState(status, now - 5, now - 60, now - 5, 1), info)


class FakeFleet:
    """A worker owning partitions 0 and 1, with the given machines; ``others`` are the other
    workers' URLs (none answer)."""

    def __init__(self, machines: dict[str, Machine], others: Iterable[str] = ()) -> None:
        self.machines = machines
        self.others = set(others)
        self.book = Book()
        self.put: list[Window] = []
        self.ready = (True, "ready")

    worker_id = "7"
    timing = Timing(60.0, 600.0, 120.0, 300.0, 5)
    heartbeat_interval = 30.0
    late: set[str] = set()

    def url(self) -> str:
        return "http://127.0.0.1:1"

    def machine(self, key: str) -> Machine | None:
        return self.machines.get(key)

    def is_late(self, key: str) -> bool:
        return key in self.late

    def owned_keys(self) -> list[str]:
        return list(self.machines)

    def owned_partitions(self) -> Collection[int]:
        return {0, 1}

    def partition_of(self, key: str) -> int:
        return len(key) % 2

    def counts(self) -> Counter[CountKey]:
        return Counter(
            (m.state.status.value, m.info.location, m.info.os_type, m.info.subscription_id)
            for m in self.machines.values()
        )

    def owner_of(self, key: str) -> str | None:
        return self.url()

    def workers(self) -> set[str]:
        return {self.url(), *self.others}

    def held_by_scope(self) -> Mapping[str, int]:
        return {"location:eastus": 1}

    def silent_scopes(self) -> Iterable[str]:
        return ["location:eastus"]

    def lag(self) -> int:
        return 3

    def last_event_at(self) -> float:
        return 0.0

    def alive(self) -> tuple[bool, str]:
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        return self.ready

    @property
    def windows(self) -> Book:
        return self.book

    async def put_window(self, window: Window) -> None:
        self.put.append(window)
        self.book.apply(window.id, window)


@asynccontextmanager
async def client(fleet: FleetView) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    WorkerAPI(fleet, Settings()).register(app)
    async with TestClient(TestServer(app)) as c:
        yield c


def fleet_of_three(others: Iterable[str] = ()) -> FakeFleet:
    ms = [
        machine("a", Status.CONNECTED),
        machine("b", Status.DISCONNECTED, location="eastus"),
        machine("c", Status.CONNECTED, rg="rg2"),
    ]
    return FakeFleet({m.info.resource_id.lower(): m for m in ms}, others)


async def test_list_filters_and_pages_the_owned_machines() -> None:
    async with client(fleet_of_three()) as c:
        r = await c.get("/machines", params={"status": "connected"})
        body = await r.json()
        assert r.status == 200
        assert body["total"] == 2 and body["partial"] is False
        assert [m["machineName"] for m in body["items"]] == ["a", "c"]
        r = await c.get("/machines", params={"resourceGroup": "RG2", "local": "1"})
        assert [m["machineName"] for m in (await r.json())["items"]] == ["c"]
        r = await c.get("/machines", params={"limit": "1", "offset": "1"})
        assert [m["machineName"] for m in (await r.json())["items"]] == ["b"]
        r = await c.get("/machines", params={"colour": "red"})
        assert r.status == 400 and "colour" in (await r.json())["error"]
        r = await c.get("/machines", params={"limit": "0"})
        assert r.status == 400


async def test_one_machine_and_its_fields() -> None:
    async with client(fleet_of_three()) as c:
        r = await c.get("/machines" + rid("b"))
        body = await r.json()
        assert r.status == 200
        assert body["status"] == "Disconnected" and body["location"] == "eastus"
        assert body["partition"] in (0, 1) and body["flapping"] is False
        r = await c.get("/machines" + rid("zz"))
        assert r.status == 404 and "never sent an accepted heartbeat" in (await r.json())["error"]


async def test_fleet_counts_and_silent_scopes() -> None:
    async with client(fleet_of_three()) as c:
        body = await (await c.get("/fleet")).json()
        assert body["workers"] == 1 and body["total"] == 3
        assert body["byStatus"] == {"Connected": 2, "Disconnected": 1}
        assert body["byLocation"] == {
            "eastus": {"Disconnected": 1},
            "westeurope": {"Connected": 2},
        }
        assert body["silentScopes"] == ["location:eastus"]
        local = await (await c.get("/fleet", params={"local": "1"})).json()
        assert local["partitions"] == [0, 1]


async def test_a_worker_that_does_not_answer_makes_lists_partial() -> None:
    async with client(fleet_of_three(others=["http://127.0.0.1:9"])) as c:
        body = await (await c.get("/fleet")).json()
        assert body["partial"] is True and body["total"] == 3
        assert body["missing"][0]["worker"] == "http://127.0.0.1:9"
        r = await c.get("/capacity")
        assert r.status == 502 and (await r.json())["worker"] == "http://127.0.0.1:9"


async def test_capacity_of_one_worker() -> None:
    async with client(fleet_of_three()) as c:
        r = await c.get("/capacity")
        assert r.status == 200
        body = await r.json()
        assert body["workers"] == 1
        r = await c.get("/capacity", params={"x": "1"})
        assert r.status == 400


async def test_probes_report_the_view() -> None:
    fleet = fleet_of_three()
    async with client(fleet) as c:
        r = await c.get("/healthz")
        assert r.status == 200 and (await r.json())["worker"] == "7"
        fleet.ready = (False, "recovering")
        r = await c.get("/readyz")
        body = await r.json()
        assert r.status == 503 and body["reason"] == "recovering" and body["lag"] == 3


async def test_maintenance_windows_are_written_through_the_view() -> None:
    fleet = fleet_of_three()
    async with client(fleet) as c:
        r = await c.post(
            "/maintenance",
            json={
                "selector": {"resourceGroup": "rg2", "subscriptionId": SUB},
                "start": "2030-01-01T00:00:00Z",
                "end": "2030-01-01T02:00:00Z",
                "reason": "patching",
            },
        )
        assert r.status in (200, 201), await r.text()
        assert len(fleet.put) == 1
        body = await (await c.get("/maintenance")).json()
        assert [w["reason"] for w in body["windows"]] == ["patching"]
