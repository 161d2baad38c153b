"""Maintenance windows against the real stack: two workers with API tokens, a live fleet of
two locations, and a patch night in one of them.

One scenario, in order:
- writes without a token, with a wrong one and with a read-only one are refused (401/403)
  and store nothing; a selector matching no machine is refused unless allowEmpty;
- a window over resource group ``patch`` (the whole of location westus2): its six machines
  reboot inside it. Each is declared Disconnected with the window on the transition, no
  ScopeSilent is raised for westus2, and five come back Connected;
- one machine overruns the window: its offline series carries the window's id while the
  window lasts and loses it when the window ends (that is when it pages);
- a worker is SIGKILLed and started again while the window is active: it reads the window
  back, and a machine that goes silent afterwards is still declared with it;
- both workers answer GET /maintenance with the same window; ending it early and ending an
  unknown id behave.
The steady location never sees a transition besides onboarding.
"""

from __future__ import annotations

import asyncio
import math
import re
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from arcbeat.deploy.api_client import ApiError, call
from arcbeat.deploy.stack import Stack
from arcbeat.streams.decide.records import heartbeat_key, heartbeat_payload
from arcbeat.streams.decide.resource_ids import resource_id
from tests.support.deployment import Deployment
from tests.support.kafka import read_topic
from tests.support.progress import say
from tests.support.waiting import wait_for


def until(what: str, condition: Callable[[], bool], timeout: float) -> None:
    wait_for(what, lambda: True if condition() else None, timeout=timeout)


pytestmark = pytest.mark.services

SUB = "00000000-0000-0000-0000-0000000000aa"
PATCH = [resource_id(SUB, "patch", f"db{i}") for i in range(6)]
STEADY = [resource_id(SUB, "steady", f"web{i}") for i in range(6)]
WINDOW = 20  # seconds of an availability window in this test
LOCATION = {**dict.fromkeys(PATCH, "westus2"), **dict.fromkeys(STEADY, "westeurope")}


class Fleet:
    """Agents that send a heartbeat every 0.5 s while they are up (their own thread)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.up: set[str] = set()
        self.stopping = False
        self.seq = 0
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            while not self.stopping:
                self.seq += 1
                for rid in sorted(self.up):
                    body = heartbeat_payload(
                        rid,
                        location=LOCATION[rid],
                        os_type="linux",
                        agent_version="1.50",
                        sent_at=time.time(),
                        sequence=self.seq,
                    )
                    await producer.send(self.topic, body, key=heartbeat_key(rid))
                await producer.flush()
                await asyncio.sleep(0.5)
        except BaseException as exc:  # surfaced by the test
            self.errors.append(exc)
            raise
        finally:
            await producer.stop()

    def __enter__(self) -> Fleet:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping = True
        self.thread.join(10)


def _status(dep: Deployment) -> list[dict[str, Any]]:
    return [
        orjson.loads(r.value)
        for r in read_topic(dep.settings.kafka.bootstrap, dep.settings.topics.status)
        if r.value
    ]


def _transitions(records: list[dict[str, Any]], rid: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("type") == "StatusChanged" and r["resourceId"] == rid]


def _window_counts(dep: Deployment, rid: str) -> list[dict[str, Any]]:
    records = read_topic(dep.settings.kafka.bootstrap, dep.settings.topics.fleet)
    out = [orjson.loads(r.value) for r in records if r.value]
    return [c for c in out if c.get("type") == "WindowCounts" and c["resourceId"] == rid]


def _downs(records: list[dict[str, Any]], rid: str) -> list[dict[str, Any]]:
    return [t for t in _transitions(records, rid) if t["status"] == "Disconnected"]


def _offline_labels(urls: list[str], rid: str) -> list[str]:
    """The maintenance label of ``rid``'s offline series on every worker that exports it."""
    found = []
    for url in urls:
        text = call_text(url + "/metrics")
        for line in text.splitlines():
            if (
                line.startswith("arcbeat_machine_offline{")
                and f'resource_id="{rid.lower()}"' in line
            ):
                m = re.search(r'maintenance="([^"]*)"', line)
                found.append(m.group(1) if m else "")
    return found


def call_text(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as r:
        return str(r.read().decode())


def _cli(dep: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "arcbeat.deploy.cli", "maintenance", *args],
        env=dep.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _refused(method: str, url: str, token: str | None, body: Any = None) -> str:
    try:
        call(method, url, body=body, bearer=token)
    except ApiError as exc:
        return str(exc)
    raise AssertionError(f"{method} {url} with token {token and token[:4]}... was accepted")


def test_a_patch_night_in_a_maintenance_window(stack: Stack, tmp_path: Path) -> None:
    admin, reader = secrets.token_hex(20), secrets.token_hex(20)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"maintenance alice {admin}\nread bob {reader}\n")
    dep = Deployment(
        tmp_path,
        f"e2e-mw-{uuid.uuid4().hex[:6]}",
        api_tokens_file=str(tokens),
        partitions="4",
        window=str(WINDOW),  # short availability windows: the planned one closes soon
    )
    try:
        workers = [dep.start_worker(0), dep.start_worker(1)]
        for w in workers:
            w.wait_ready(timeout=90)
        urls = [w.url for w in workers]
        with Fleet(dep.settings.kafka.bootstrap, dep.settings.topics.heartbeats) as fleet:
            fleet.up = set(PATCH) | set(STEADY)

            def known() -> bool:
                body = call("GET", urls[0] + "/fleet", bearer=reader)
                return bool(sum(body["byStatus"].values()) >= 12)

            until("12 machines onboarded", known, 60)

            # -- who may write ---------------------------------------------------------------
            window = {"selector": {"resourceGroup": "patch"}, "duration": 24, "reason": "patching"}
            assert "401" in _refused("POST", urls[0] + "/maintenance", None, window)
            assert "401" in _refused("POST", urls[0] + "/maintenance", "x" * 40, window)
            assert "403" in _refused("POST", urls[1] + "/maintenance", reader, window)
            assert call("GET", urls[0] + "/maintenance", bearer=reader)["windows"] == []
            nothing = {**window, "selector": {"resourceGroup": "no-such-group"}}
            assert "422" in _refused("POST", urls[0] + "/maintenance", admin, nothing)
            assert "400" in _refused(
                "POST", urls[0] + "/maintenance", admin, {**window, "duration": -5}
            )
            assert call("GET", urls[1] + "/maintenance", bearer=reader)["windows"] == []

            # -- the window, applied by both workers ----------------------------------------
            created = call("POST", urls[1] + "/maintenance", body=window, bearer=admin)
            wid, ends = created["id"], time.time() + 24
            assert created["machines"] == 6 and created["createdBy"] == "alice"
            for url in urls:
                [w] = call("GET", url + "/maintenance?active=1", bearer=reader)["windows"]
                assert w["id"] == wid
            say(f"window {wid} created, until {time.strftime('%H:%M:%S', time.gmtime(ends))}")
            time.sleep(2)  # ticks now carry it

            # -- the reboot: the whole location goes silent ---------------------------------
            fleet.up -= set(PATCH)
            until(
                "the patched machines declared",
                lambda: all(
                    any(t["status"] == "Disconnected" for t in _transitions(_status(dep), rid))
                    for rid in PATCH
                ),
                30,
            )
            fleet.up |= set(PATCH[:5])  # five come back; db5 overruns
            overrun = PATCH[5]
            until(
                "the overrunning machine's offline series with the window",
                lambda: _offline_labels(urls, overrun) == [wid],
                20,
            )

            # -- a worker killed while the window is active ---------------------------------
            workers[0].kill()
            workers[0] = dep.start_worker(0)
            workers[0].wait_ready(timeout=60)
            [w] = call("GET", urls[0] + "/maintenance?active=1", bearer=reader)["windows"]
            assert w["id"] == wid
            time.sleep(1.5)
            fleet.up.discard(PATCH[4])  # silent again, after the restart
            until(
                "db4 declared again after the restart",
                lambda: (
                    len(
                        [
                            t
                            for t in _transitions(_status(dep), PATCH[4])
                            if t["status"] == "Disconnected"
                        ]
                    )
                    >= 2
                ),
                30,
            )

            # -- the window ends: the overrunning machine is an ordinary offline one --------
            until("the window's end", lambda: time.time() > ends + 3, 60)
            until(
                "the offline series without the window",
                lambda: _offline_labels(urls, overrun) == [""],
                20,
            )

            # -- ending windows ---------------------------------------------------------------
            other = call(
                "POST",
                urls[0] + "/maintenance",
                body={
                    "selector": {"resourceIds": [resource_id(SUB, "later", "new0")]},
                    "duration": 3600,
                    "reason": "not onboarded yet",
                    "allowEmpty": True,
                },
                bearer=admin,
            )
            assert "403" in _refused("DELETE", f"{urls[0]}/maintenance/{other['id']}", reader)
            ended = call("DELETE", f"{urls[1]}/maintenance/{other['id']}", bearer=admin)
            assert ended["endedBy"] == "alice"
            assert "409" in _refused("DELETE", f"{urls[0]}/maintenance/{other['id']}", admin)
            assert "404" in _refused("DELETE", f"{urls[0]}/maintenance/mw-nope", admin)
            assert not fleet.errors

            # -- the command -----------------------------------------------------------------
            (tmp_path / "reader.token").write_text(reader + "\n")
            listed = _cli(
                dep, "--url", urls[1], "--token-file", str(tmp_path / "reader.token"), "list"
            )
            assert listed.returncode == 0 and wid in listed.stdout and other["id"] in listed.stdout
            refused = _cli(
                dep, "--url", urls[0], "--token-file", str(tmp_path / "reader.token"),
                "create", "--resource-group", "patch", "--duration", "1h", "--reason", "x",
            )  # fmt: skip
            assert refused.returncode == 1 and "403" in refused.stderr

            # -- availability: the planned time is left out ----------------------------------
            def planned_window() -> dict[str, Any] | None:
                counts = _window_counts(dep, PATCH[0])
                return next((c for c in counts if c["plannedSeconds"] > 0), None)

            w0 = wait_for("db0's availability window with planned time", planned_window, timeout=90)
            # expected counts only the unplanned part (one heartbeat a second), and what was
            # received in planned time never lifts it above 100 %
            assert w0["expected"] == math.floor(WINDOW * (1 - w0["plannedSeconds"] / WINDOW)), w0
            assert w0["received"] <= w0["expected"], w0
            steady = _window_counts(dep, STEADY[0])
            assert all(c["plannedSeconds"] == 0 for c in steady), steady

        records = _status(dep)
        for rid in PATCH:
            downs = [t for t in _transitions(records, rid) if t["status"] == "Disconnected"]
            assert downs and all(t["maintenance"] == wid for t in downs), (rid, downs)
        for rid in PATCH[:5]:
            assert _transitions(records, rid)[-1]["status"] == "Connected" or rid == PATCH[4]
        for rid in STEADY:
            assert [t["reason"] for t in _transitions(records, rid)] == ["onboarded"]
        scope_events = [r for r in records if r.get("type") in ("ScopeSilent", "ScopeRecovered")]
        assert scope_events == []
        say(
            f"{len(PATCH)} patched machines declared with {wid}; no ScopeSilent; the overrun "
            "machine lost the label at the window's end"
        )
    finally:
        dep.close()
