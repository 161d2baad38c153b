"""A heartbeat's head and tail: the split of a message in the usual layout into the bytes
that describe the machine (the head) and the two fields every heartbeat changes, and the
fingerprint of the head. A machine's slot keeps the fingerprint of the last heartbeat the full
decoder accepted, so that the next one with the very same head takes the fast path
(:meth:`.Engine.fast_heartbeat`). A message is split once on its way through.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final

from xxhash import xxh3_64_intdigest

Parts = tuple[bytes, float, int | None]  # head, sentAt, sequence

# The usual layout of a heartbeat ends with sentAt, then optionally the sequence, as
# heartbeat_payload writes it. A message in that layout splits into the bytes before sentAt
# (everything that describes the machine) and the two fields every heartbeat changes.
_SENT_AT: Final = b',"sentAt":"'
_TAIL_RE: Final = re.compile(
    rb',"sentAt":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d{3}|\.\d{6})?Z"'
    rb'(?:,"sequence":(0|[1-9]\d{0,17}))?\}'
)
_TAIL_SECONDS: dict[bytes, int] = {}  # "2024-05-01T12:00:00" -> unix seconds (recent ones)


def split_heartbeat(raw: bytes | None) -> Parts | None:
    """``(head, sentAt, sequence)`` of a message in the usual layout, else None.

    Only the tail is checked here: a head is trusted only after the full decoder accepted a
    message with the very same head (see ``Engine.handle_message``).
    """
    if raw is None:
        return None
    i = raw.rfind(_SENT_AT)
    if i < 0:
        return None
    m = _TAIL_RE.fullmatch(raw, i)
    if m is None:
        return None
    whole, frac, seq = m.groups()
    secs = _TAIL_SECONDS.get(whole)
    if secs is None:
        # a fleet's heartbeats of one second share it: parsing a date costs a microsecond
        try:
            secs = int(datetime.fromisoformat(whole.decode() + "+00:00").timestamp())
        except ValueError:  # e.g. month 13: the full decoder explains it
            return None
        if len(_TAIL_SECONDS) > 4096:
            _TAIL_SECONDS.clear()
        _TAIL_SECONDS[whole] = secs
    if frac is None:
        sent = float(secs)
    else:
        # the same rounding as datetime.timestamp(): one division of whole microseconds
        us = int(frac[1:]) * 1000 if len(frac) == 4 else int(frac[1:])
        sent = (secs * 1_000_000 + us) / 1_000_000
    return raw[:i], sent, int(seq) if seq is not None else None


_CONNECT: Final = b'"kind":"connect"'
_AS_HEARTBEAT: Final = b'"kind":"heartbeat"'


def digest(head: bytes, seed: int) -> int:
    """60 bits of seeded XXH3: a tenth of a microsecond. The seed is the partition's (random,
    kept in its checkpoints), so no agent can make two heads collide on purpose; 60 bits keep
    the int at 32 bytes; never 0 (0: no fast path)."""
    return (xxh3_64_intdigest(head, seed) >> 4) or 1


def head_digest(parts: Parts | None, kind: str, seed: int) -> int:
    """The digest a plain heartbeat of this machine will match, or 0 (no fast path) when the
    message has not the usual layout (``parts`` None).

    A ``connect`` gives the digest of its head with the kind spelled ``heartbeat``: the next
    heartbeat, identical but for its kind, then takes the fast path. Only when ``"kind"``
    occurs once in the head, so the replaced bytes are the kind itself (not a tag)."""
    if parts is None:
        return 0
    head = parts[0]
    if kind == "heartbeat":
        return digest(head, seed)
    if kind == "connect" and head.count(b'"kind"') == 1 and _CONNECT in head:
        return digest(head.replace(_CONNECT, _AS_HEARTBEAT), seed)
    return 0
