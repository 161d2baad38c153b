"""The worker API when a peer worker is SIGKILLed: JSON answers, never a bare 500.

Two workers share a deployment on the local stack; worker 1 is SIGKILLed and, before its
session times out (its partitions stay assigned to it), worker 0 is asked everything:

- ``GET /machines`` and ``GET /fleet``: 200 with what worker 0 has, ``partial: true`` and
  worker 1 under ``missing``;
- ``GET /machines/{id}`` of a machine worker 1 owns, and ``GET /capacity``: 502 naming it;
- ``POST /maintenance`` for a machine of worker 0: 201, ``partial: true``; for a machine only
  worker 1 knows: 503 naming it (whether the selector matches is unknown), nothing stored.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from arcbeat.deploy.stack import Stack
from arcbeat.streams.decide.records import heartbeat_payload
from tests.support.deployment import Deployment
from tests.support.net import http
from tests.support.progress import say
from tests.support.waiting import wait_for

pytestmark = pytest.mark.services

SUB = "00000000-0000-0000-0000-0000000fa11d"
MACHINES = 24


def _rid(i: int) -> str:
    return (
        f"/subscriptions/{SUB}/resourceGroups/rg-peer/providers/"
        f"Microsoft.HybridCompute/machines/m{i:02d}"
    )


def _call(url: str, *, method: str = "GET", body: Any = None) -> tuple[int, Any, str]:
    """(status, JSON body, content type) of a call; the body must be JSON."""
    data = None if body is None else json.dumps(body).encode()
    status, raw = http(url, method=method, body=data, timeout=30)
    try:
        return status, json.loads(raw), "json"
    except ValueError:
        return status, raw.decode(errors="replace"), "text"


def test_a_sigkilled_peer_gives_partial_answers_or_errors_naming_it(
    stack: Stack, tmp_path: Path
) -> None:
    dep = Deployment(tmp_path, f"peer-{uuid.uuid4().hex[:8]}", partitions="4")
    try:
        w0, w1 = dep.start_worker(0), dep.start_worker(1)
        now = time.time()
        dep.produce(
            [
                (
                    _rid(i).lower().encode(),
                    heartbeat_payload(
                        _rid(i), location="westeurope", os_type="linux",
                        agent_version="1.0.0", sent_at=now, kind="connect",
                    ),
                )
                for i in range(MACHINES)
            ],
            event="connect",
        )  # fmt: skip

        def settled() -> bool | None:
            p0, p1 = w0.partitions(), w1.partitions()
            if not (p0 and p1 and len(p0 | p1) == 4):
                return None
            status, body, _ = _call(f"{w0.url}/machines")
            ok = status == 200 and body["total"] == MACHINES and not body["partial"]
            return True if ok else None

        wait_for("both workers to own partitions and know every machine", settled, timeout=120)
        status, local1, _ = _call(f"{w1.url}/machines?local=1")
        assert status == 200 and local1["items"], local1
        theirs = [m["resourceId"] for m in local1["items"]]
        status, local0, _ = _call(f"{w0.url}/machines?local=1")
        mine = [m["resourceId"] for m in local0["items"]]
        assert mine, "worker 0 owns no machine"

        w1.kill()
        t0 = time.time()
        say(f"peer: worker 1 SIGKILLed; it owned {len(theirs)} machines")
        peer = w1.url

        status, body, kind = _call(f"{w0.url}/machines")
        assert (status, kind) == (200, "json"), body
        assert body["partial"] is True and body["total"] == len(mine), body
        assert [m["worker"] for m in body["missing"]] == [peer], body
        assert "ClientConnectorError" in body["missing"][0]["error"], body

        status, body, kind = _call(f"{w0.url}/fleet")
        assert (status, kind) == (200, "json"), body
        assert body["partial"] is True and body["total"] == len(mine), body
        assert body["missing"][0]["worker"] == peer, body

        status, body, kind = _call(f"{w0.url}/machines{theirs[0]}")
        assert (status, kind) == (502, "json"), body
        assert body["worker"] == peer and "did not answer" in body["error"], body

        status, body, kind = _call(f"{w0.url}/capacity")
        assert (status, kind) == (502, "json"), body
        assert body["worker"] == peer, body

        window = {"selector": {"resourceIds": [theirs[0]]}, "duration": "1h", "reason": "t"}
        status, body, kind = _call(f"{w0.url}/maintenance", method="POST", body=window)
        assert (status, kind) == (503, "json"), body
        assert body["worker"] == peer and "allowEmpty" in body["error"], body

        window = {"selector": {"resourceIds": [mine[0]]}, "duration": "1h", "reason": "t"}
        status, body, kind = _call(f"{w0.url}/maintenance", method="POST", body=window)
        assert (status, kind) == (201, "json"), body
        assert body["partial"] is True and body["machines"] == 1, body
        status, listed, _ = _call(f"{w0.url}/maintenance")
        assert [w["selector"]["resourceIds"] for w in listed["windows"]] == [[mine[0].lower()]]
        say(f"peer: every answer JSON, partial or naming {peer}, in {time.time() - t0:.1f}s")
    finally:
        dep.close()
