"""Helpers of the commands that read the workers' HTTP API (machines, fleet, capacity)."""

from __future__ import annotations

import argparse
from typing import Any

from arcbeat.deploy.api_client import base_url, call, token
from arcbeat.deploy.settings import Settings


def get_json(url: str) -> Any:
    """``GET url`` as JSON, with the caller's API token ($ARCBEAT_API_TOKEN_FILE or
    $ARCBEAT_API_TOKEN) when there is one. An ApiError (arcbeat.deploy.api_client) when the
    worker does not answer or answers an error status, with the URL and the fix."""
    ca = Settings.load().worker.api_tls_ca or None
    return call("GET", url, bearer=token(), ca_file=ca)


def worker_url(args: argparse.Namespace) -> str:
    """``--url``, else the local worker of the settings."""
    return base_url(args.url)


def table(rows: list[list[str]], header: list[str]) -> str:
    """Left-aligned columns under a header and a rule."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)
