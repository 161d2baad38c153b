"""A small client of the worker HTTP API for the ``arcbeat`` command: the worker's URL, the
caller's bearer token and TLS come from the settings and the environment."""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from arcbeat.deploy.settings import Settings

TOKEN_ENV = "ARCBEAT_API_TOKEN"
TOKEN_FILE_ENV = "ARCBEAT_API_TOKEN_FILE"


class ApiError(Exception):
    """The worker refused the request or could not be reached; the message says why."""


def base_url(url: str | None, settings: Settings | None = None) -> str:
    if url:
        return url.rstrip("/")
    s = settings or Settings.load()
    scheme = "https" if s.worker.api_tls_cert else "http"
    host = "127.0.0.1" if s.worker.web_host in ("0.0.0.0", "::", "") else s.worker.web_host
    return f"{scheme}://{host}:{s.worker.web_port}"


def token(token_file: str | None = None) -> str | None:
    """The caller's token: ``--token-file``, else $ARCBEAT_API_TOKEN_FILE, else
    $ARCBEAT_API_TOKEN (a file keeps it out of the shell history and the process list)."""
    path = token_file or os.environ.get(TOKEN_FILE_ENV)
    if path:
        try:
            return Path(path).read_text().strip() or None
        except OSError as exc:
            raise ApiError(f"cannot read the API token file {path}: {exc}") from None
    return os.environ.get(TOKEN_ENV) or None


def read_json(
    req: urllib.request.Request | str, *, timeout: float, context: ssl.SSLContext | None = None
) -> Any:
    """The decoded JSON answer of an HTTP request (None when empty); urllib's errors (HTTPError,
    URLError, OSError) and a ValueError for a body that is no JSON are the caller's."""
    with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
        return json.loads(r.read() or b"null")


def call(
    method: str,
    url: str,
    *,
    body: Any = None,
    bearer: str | None = None,
    ca_file: str | None = None,
) -> Any:
    """``method url`` with a JSON body; the decoded JSON answer, or ApiError."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if bearer:
        req.add_header("Authorization", f"Bearer {bearer}")
    context = (
        ssl.create_default_context(cafile=ca_file or None) if url.startswith("https") else None
    )
    try:
        return read_json(req, timeout=30, context=context)
    except urllib.error.HTTPError as exc:
        raw = exc.read().decode(errors="replace")
        try:
            detail = json.loads(raw).get("error", raw)
        except (ValueError, AttributeError):
            detail = raw
        hint = ""
        if exc.code == 401:
            hint = f" (give a token: --token-file, ${TOKEN_FILE_ENV} or ${TOKEN_ENV})"
        raise ApiError(f"{method} {url} answered {exc.code}: {detail}{hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ApiError(
            f"cannot reach a worker at {url}: {exc}. Is `arcbeat worker` running? "
            "Set --url or ARCBEAT_WEB_PORT."
        ) from None
