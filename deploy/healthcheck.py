"""The container image's health check: ``python -m arcbeat.deploy.healthcheck [COMMAND [--id N]]``.

One image runs every arcbeat command, so the check first finds which one this container runs
(the lowest-numbered process whose command line is ``arcbeat COMMAND``, or ``python -m
arcbeat.deploy.cli COMMAND``), unless COMMAND is given:

- ``worker``: ``GET /readyz`` of its API (ARCBEAT_WEB_PORT + ``--id``; https with
  api_tls_cert; the caller's token when api_protect_probes) must answer 200;
- ``history``: ``GET /healthz`` of the history exporter (ARCBEAT_HISTORY_PORT) must answer 200;
- anything else (``topics``, ``simulate``, ...): healthy while it runs; nothing to probe.

Exit 0 when healthy, 1 with one line saying why when not (Docker and podman keep that line in
the container's health log). Standard library only: slim images have no curl.
"""

from __future__ import annotations

import argparse
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from arcbeat.deploy.api_client import ApiError, base_url, token
from arcbeat.deploy.settings import Settings
from arcbeat.streams.settings import SettingsError

PROBE_TIMEOUT = 4.0  # below the image's HEALTHCHECK --timeout (5 s)


@dataclass(frozen=True, slots=True)
class Running:
    """The arcbeat command a container runs: its name and, for a worker, its ``--id``."""

    command: str
    worker_id: int = 0


def parse_command_line(argv: Sequence[str]) -> Running | None:
    """The arcbeat command of one process's argv, or None when it is not ``arcbeat COMMAND``."""
    for i, arg in enumerate(argv):
        entry = Path(arg).name == "arcbeat" or (
            arg == "arcbeat.deploy.cli" and i > 0 and argv[i - 1] == "-m"
        )
        if entry and i + 1 < len(argv):
            rest = list(argv[i + 2 :])
            return Running(argv[i + 1], _worker_id(rest))
    return None


def _worker_id(args: Sequence[str]) -> int:
    for i, arg in enumerate(args):
        value = None
        if arg == "--id" and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--id="):
            value = arg.removeprefix("--id=")
        if value is not None:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def find_running(proc: Path = Path("/proc")) -> Running | None:
    """The arcbeat command of the lowest-numbered process running one (PID 1 without an init)."""
    pids = sorted(int(p.name) for p in proc.iterdir() if p.name.isdigit())
    for pid in pids:
        try:
            raw = (proc / str(pid) / "cmdline").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        found = parse_command_line([a.decode(errors="replace") for a in raw.split(b"\0") if a])
        if found is not None:
            return found
    return None


def probe_url(running: Running, settings: Settings) -> str | None:
    """The URL that answers 200 while ``running`` is healthy; None for commands without one."""
    if running.command == "worker":
        worker = settings.replace(web_port=settings.worker.web_port + running.worker_id)
        return base_url(None, worker) + "/readyz"
    if running.command == "history":
        host = settings.influx.history_host
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        return f"http://{host}:{settings.influx.history_port}/healthz"
    return None


def probe(url: str, bearer: str | None) -> str | None:
    """None when ``url`` answers 200, else why not (one line)."""
    req = urllib.request.Request(url)
    if bearer:
        req.add_header("Authorization", f"Bearer {bearer}")
    # The probe asks this container's own listener by address: the certificate names the
    # service, not 127.0.0.1, and proves nothing here.
    context = None
    if url.startswith("https"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(req, timeout=PROBE_TIMEOUT, context=context) as r:
            status = int(r.status)
            body = r.read(300)
    except urllib.error.HTTPError as exc:
        status, body = int(exc.code), exc.read(300)
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {exc}"
    if status == 200:
        return None
    return f"{url} answered {status}: {body.decode(errors='replace').strip()}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m arcbeat.deploy.healthcheck",
        description="Health check of the arcbeat container: the worker's /readyz, the history "
        "exporter's /healthz, or healthy while any other command runs.",
    )
    parser.add_argument("command", nargs="?", help="the arcbeat command (default: found)")
    parser.add_argument("--id", type=int, default=0, help="the worker's --id (with COMMAND)")
    args = parser.parse_args(argv)
    running = Running(args.command, args.id) if args.command else find_running()
    if running is None:
        print("healthcheck: no arcbeat command runs in this container")
        return 1
    try:
        settings = Settings.load()
        url = probe_url(running, settings)
        if url is None:
            print(f"healthcheck: arcbeat {running.command} runs (nothing to probe)")
            return 0
        bearer = token() if settings.worker.api_protect_probes else None
    except (SettingsError, ApiError) as exc:
        print(f"healthcheck: {exc}")
        return 1
    why = probe(url, bearer)
    if why is not None:
        print(f"healthcheck: arcbeat {running.command}: {why}")
        return 1
    print(f"healthcheck: arcbeat {running.command}: {url} 200")
    return 0


if __name__ == "__main__":
    sys.exit(main())
