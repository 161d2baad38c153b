"""How a setting's text becomes a value: durations, booleans, lists, secrets read from files,
the marks a field's annotation carries, and the error that names a bad setting."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import field
from pathlib import Path
from typing import Annotated, TypeVar

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

# ---- how a setting is declared: once, as a field of its section -------------------------------
#
# The field's annotation says how its text is converted (str, int, float, bool, a Literal of
# choices, tuple[str, ...] from a comma-separated list); these mark the rest. Its flat name (the
# ARCBEAT_* variable and the arcbeat.toml key) is the field's name unless named() gives another.

DURATION_MARK = "duration"
SECRET_MARK = "secret"  # never shown; the client reads <name>_file when it connects
LOADED_SECRET_MARK = "secret read at load"  # never shown; <name>_file read once, at load
Seconds = Annotated[float, DURATION_MARK]  # 300, 300s, 15m, 2h, 45d, 500ms
Secret = Annotated[str, SECRET_MARK]
LoadedSecret = Annotated[str, LOADED_SECRET_MARK]
_T = TypeVar("_T")


def named(flat: str, default: _T) -> _T:
    """A field whose flat name is ``flat`` (``kafka_bootstrap`` for ``kafka.bootstrap``)."""
    return field(default=default, metadata={"flat": flat})


def hide_secrets(cls: type[_T]) -> type[_T]:
    """Leave a section's Secret fields out of its repr (applied before @dataclass)."""
    for name, annotation in cls.__annotations__.items():
        if annotation in ("Secret", "LoadedSecret"):
            current = cls.__dict__.get(name, "")
            meta = current.metadata if isinstance(current, dataclasses.Field) else {}
            default = current.default if isinstance(current, dataclasses.Field) else current
            setattr(cls, name, field(default=default, repr=False, metadata=meta))
    return cls


class SettingsError(ValueError):
    """A setting has a value arcbeat cannot use; the message says which, where and how to fix."""


def bad(name: str, why: str) -> SettingsError:
    """The error of the setting ``name`` (its flat name, as users write it)."""
    return SettingsError(f"setting {name} ({env_name(name)}): {why}")


def env_name(name: str) -> str:
    """The environment variable of the setting ``name``: ``ARCBEAT_<NAME>``."""
    return "ARCBEAT_" + name.upper()


def check_port(name: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise bad(name, f"must be a TCP port (1-65535), got {port}")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise bad(name, f"must be one of {', '.join(choices)}, got {value!r}")


def check_positive(name: str, value: float) -> None:
    if value <= 0:
        raise bad(name, "must be > 0")


def read_secret(value: str, path: str, name: str) -> str:
    """``value``, else the first line of the file ``path`` ('' when neither is set).

    ``name`` is the setting, for the error message; the secret itself is never shown.
    """
    if value or not path:
        return value
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(
            f"setting {name}_file (ARCBEAT_{name.upper()}_FILE): cannot read {path}: "
            f"{exc.strerror or exc}; point it at a readable file holding the secret"
        ) from None
    lines = text.splitlines()
    return lines[0].strip() if lines else ""


def worker_ordinal(worker_id: str) -> int:
    """The number of a worker id: ``3`` -> 3, ``arcbeat-worker-3`` (a StatefulSet pod) -> 3."""
    m = re.fullmatch(r"(?:.*-)?(\d+)", worker_id.strip())
    if not m:
        raise ValueError(
            f"must be a worker number (0, 1, ...) or a name ending in -<number> such as a "
            f"StatefulSet pod name (arcbeat-worker-2), got {worker_id!r}"
        )
    return int(m.group(1))


def parse_duration(value: object) -> float:
    """Seconds from ``300``, ``300s``, ``15m``, ``45d``, ``1.5h`` or a number."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ValueError(
                f"expected a duration such as 300, 300s, 15m, 2h or 45d, got {value!r}"
            )
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2) or "s"]
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    return seconds


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true/false, got {value!r}")


def parse_list(value: object) -> tuple[str, ...]:
    items = [str(v) for v in value] if isinstance(value, list | tuple) else str(value).split(",")
    return tuple(i.strip().lower() for i in items if i.strip())
