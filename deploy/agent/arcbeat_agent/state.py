"""The agent's local state: ``state.json`` in the state directory.

``connect`` writes the machine's identity; ``run`` records each heartbeat sent and
acknowledged and the last error; ``show`` reads it; ``disconnect`` marks the machine removed
(so the service does not bring it back). Written atomically (a temporary file renamed over
it), so a reader never sees half a file and a crash keeps the previous version. The file
belongs to the owner of the state directory, also when root writes it (``connect`` run by an
administrator while the service runs as its own user).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson

from arcbeat_agent.errors import ConfigError


@dataclass(slots=True)
class AgentState:
    resource_id: str = ""
    location: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    status: str = "not connected"  # "connected" | "disconnected" | "not connected"
    connected_at: str = ""
    disconnected_at: str = ""
    last_sent_at: str = ""  # the last heartbeat handed to Kafka (RFC 3339)
    last_acknowledged_at: str = ""  # the last heartbeat the broker acknowledged
    last_sequence: int = -1
    last_error: str = ""
    last_error_at: str = ""
    pid: int = 0  # the process of `run` that wrote it last

    @property
    def connected(self) -> bool:
        return self.status == "connected" and bool(self.resource_id)


def load_state(path: Path) -> AgentState:
    """The state at ``path``; a fresh state when the file does not exist.

    A damaged or unreadable file raises :class:`ConfigError` naming it (nothing is overwritten
    behind the user's back).
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return AgentState()
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the agent's state file: {exc.strerror or exc}; run the command "
            "as root or as the service's user (arcbeat-agent)"
        ) from None
    try:
        data: Any = orjson.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        known = {f.name for f in fields(AgentState)}
        return AgentState(**{k: v for k, v in data.items() if k in known})
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{path}: the agent's state file is damaged ({exc}); move it away and run "
            "`arcbeat-agent connect` again"
        ) from None


def save_state(path: Path, state: AgentState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = orjson.dumps(asdict(state), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    fd, tmp = tempfile.mkstemp(prefix=".state.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body + b"\n")
        os.chmod(tmp, 0o640)
        folder = path.parent.stat()
        if hasattr(os, "geteuid") and os.geteuid() == 0 and folder.st_uid != 0:
            os.chown(tmp, folder.st_uid, folder.st_gid)  # stays the service user's file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
