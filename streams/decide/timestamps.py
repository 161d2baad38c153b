"""RFC 3339 times, as every record carries them: fast to write, strict to read."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any, Final

from arcbeat.streams.decide.quoting import show as _show

_RFC3339_RE: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)
_fromiso: Final = datetime.fromisoformat


_SECONDS: dict[int, str] = {}  # whole second -> "2024-05-01T12:00:00" (the recent ones)


# the two latest times formatted: a tick's records share their tick's two times (when it was
# decided and when it was emitted); each machine's own time goes through rfc3339_of
_LAST: list[Any] = [None, "", None, ""]


def rfc3339(ts: float) -> str:
    """Unix seconds -> ``2024-05-01T12:00:00.123Z`` (milliseconds, or microseconds if needed)."""
    last = _LAST
    if ts == last[0]:
        return last[1]  # type: ignore[no-any-return]
    if ts == last[2]:
        return last[3]  # type: ignore[no-any-return]
    text = rfc3339_of(ts)
    last[2], last[3], last[0], last[1] = last[0], last[1], ts, text
    return text


def rfc3339_of(ts: float) -> str:
    """:func:`rfc3339` of a time no other record shares (it would only push a shared one out)."""
    sec = math.floor(ts)
    us = round((ts - sec) * 1_000_000)
    if us >= 1_000_000:  # rounding reached the next second
        sec, us = sec + 1, us - 1_000_000
    head = _SECONDS.get(sec)
    if head is None:
        # formatting a date costs microseconds; records of one second share it
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        head = _SECONDS[sec] = f"{datetime.fromtimestamp(sec, UTC):%Y-%m-%dT%H:%M:%S}"
    if us % 1000 == 0:
        return f"{head}.{us // 1000:03d}Z"
    return f"{head}.{us:06d}Z"


def parse_rfc3339(text: str) -> float:
    """RFC 3339 timestamp with a time zone (``Z`` or ``+hh:mm``) -> unix seconds (UTC).

    Raises :class:`ValueError` for anything else (no zone, ISO week dates, ...).
    """
    n = len(text)
    if (
        (n == 24 or n == 20 or n == 27)
        and text[-1] == "Z"
        and text[10] == "T"
        and text[4] == "-"
        and text[7] == "-"
        and text[13] == ":"
        and text[16] == ":"
        and (n == 20 or text[19] == ".")
    ):
        # fast path: the shape is fixed and fromisoformat only takes ASCII digits in between
        try:
            return _fromiso(text).timestamp()
        except ValueError:
            pass  # e.g. a leap second: the slow path below handles it or explains
    m = _RFC3339_RE.fullmatch(text)
    if m is None:
        raise ValueError(
            f"expected an RFC 3339 timestamp with a time zone such as "
            f"2024-05-01T12:00:00Z or 2024-05-01T14:00:00+02:00, got {_show(text)}"
        )
    leap = m.group(6) == "60"  # RFC 3339 allows a leap second; Python does not
    if text[10] != "T" or text[-1] == "z" or leap:
        text = f"{text[:10]}T{text[11:17]}{'59' if leap else text[17:19]}{text[19:]}"
        if text[-1] == "z":
            text = text[:-1] + "Z"
    try:
        d = _fromiso(text)
    except ValueError as exc:
        raise ValueError(f"not a valid date/time: {_show(text)} ({exc})") from None
    return d.timestamp() + (1.0 if leap else 0.0)
