"""Free loopback ports and small HTTP clients (standard library only)."""

from __future__ import annotations

import json
import random
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from arcbeat.deploy.services import port_open

# ---------------------------------------------------------------------------------------------
# ports


def free_port_block(n: int) -> int:
    """A base port such that ``base .. base+n-1`` are free on 127.0.0.1."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + n > 65535:
            continue
        if ports_free(base, n):
            return base
    raise RuntimeError(f"no block of {n} free TCP ports on 127.0.0.1")


def ports_free(base: int, n: int) -> bool:
    """Whether ``base .. base+n-1`` can all be bound on 127.0.0.1 now."""
    for port in range(base, base + n):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port_block_below_ephemeral(n: int) -> int:
    """A base port such that ``base .. base+n-1`` are free on 127.0.0.1, below Linux's
    ephemeral range: while a broker is down, clients reconnecting to a port inside that
    range may be given it as their own source port (a TCP self-connection) and keep it busy."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 32_000 - n)
        free = True
        for port in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    free = False
                    break
        if free and not any(port_open(p) for p in range(base, base + n)):
            return base
    raise RuntimeError(f"no block of {n} free TCP ports below 32000 on 127.0.0.1")


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        # as the servers bind: SO_REUSEADDR ignores the TIME_WAIT left by earlier connections
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# HTTP


def http_get(
    url: str, params: Mapping[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, Any]:
    """GET ``url``; returns (status, parsed JSON body or text)."""
    if params:
        url = f"{url}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            status, body = int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        status, body = int(exc.code), exc.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode("utf-8", "replace")


def http(
    url: str,
    *,
    params: Mapping[str, str | Sequence[str]] | None = None,
    method: str = "GET",
    body: bytes | None = None,
    timeout: float = 15.0,
) -> tuple[int, bytes]:
    if params:
        url += "?" + urllib.parse.urlencode(params, doseq=True)
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def http_json(url: str, **kwargs: Any) -> Any:
    status, body = http(url, **kwargs)
    if status != 200:
        raise ValueError(f"{url}: HTTP {status}: {body[:300]!r}")
    return json.loads(body)
