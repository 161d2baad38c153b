"""Build every dashboard in memory and write the committed JSON files.

``arcbeat dashboards build`` calls :func:`write_all`; Grafana's file provider reads the
files from the folder compose mounts (see deploy/grafana/provisioning/dashboards).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from arcbeat.dashboards import capacity, machine, noc

DASHBOARD_DIR = Path(__file__).resolve().parent

BUILDERS: dict[str, Callable[[], dict[str, Any]]] = {
    noc.UID: noc.build,
    machine.UID: machine.build,
    capacity.UID: capacity.build,
}


def build_all() -> dict[str, dict[str, Any]]:
    """uid -> dashboard JSON model."""
    out: dict[str, dict[str, Any]] = {}
    for uid, build in BUILDERS.items():
        dashboard = build()
        if dashboard.get("uid") != uid:
            raise RuntimeError(f"builder for {uid} produced uid {dashboard.get('uid')!r}")
        out[uid] = dashboard
    return out


def render(dashboard: dict[str, Any]) -> str:
    """The committed text: sorted keys and a trailing newline, so diffs stay small."""
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def dashboard_path(out_dir: Path, uid: str) -> Path:
    return out_dir / f"{uid}.json"


def write_all(out_dir: str | Path = DASHBOARD_DIR) -> list[Path]:
    """Write ``<uid>.json`` for every dashboard; returns the files written."""
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for uid, dashboard in build_all().items():
        path = dashboard_path(target, uid)
        path.write_text(render(dashboard), encoding="utf-8")
        written.append(path)
    return written


def stale_files(out_dir: str | Path = DASHBOARD_DIR) -> list[str]:
    """Dashboards whose file in ``out_dir`` is missing or differs from a fresh build."""
    target = Path(out_dir)
    stale: list[str] = []
    for uid, dashboard in build_all().items():
        path = dashboard_path(target, uid)
        if not path.is_file() or path.read_text(encoding="utf-8") != render(dashboard):
            stale.append(str(path))
    return stale


def load(path: str | Path) -> dict[str, Any]:
    """A dashboard JSON file, with a clear error when it is not one."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{p}: not a readable dashboard JSON file: {exc}") from exc
    if not isinstance(data, dict) or "uid" not in data or "panels" not in data:
        raise ValueError(f"{p}: not a Grafana dashboard (no uid/panels at the top level)")
    return data
