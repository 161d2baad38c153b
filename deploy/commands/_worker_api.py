"""Helpers of the commands that read the workers' HTTP API (machines, fleet, capacity)."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from typing import Any

from arcbeat.streams.settings import Settings


class WorkerUnreachable(Exception):
    """A worker answered with an error or could not be reached; the message says which."""


def get_json(url: str) -> Any:
    """``GET url`` as JSON; :class:`WorkerUnreachable` with the URL and the fix."""
    try:
        with urllib.request.urlopen(url, timeout=15) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        raise WorkerUnreachable(f"{url} answered {exc.code}: {body}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise WorkerUnreachable(
            f"cannot reach a worker at {url}: {exc}. Is `arcbeat worker` running? "
            "Set --url or ARCBEAT_WEB_PORT."
        ) from exc


def worker_url(args: argparse.Namespace) -> str:
    """``--url``, else the local worker of the settings."""
    if args.url:
        return str(args.url).rstrip("/")
    s = Settings.load()
    return f"http://{s.web_host}:{s.web_port}"


def table(rows: list[list[str]], header: list[str]) -> str:
    """Left-aligned columns under a header and a rule."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)
