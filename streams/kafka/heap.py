"""The garbage collector's view of a worker's heap: what it no longer needs to walk.

A million machines are millions of objects that never form cycles (reference counting frees
them); a full collection walking them all stops the event loop for 0.3-0.7 s. So the
machines are frozen (``gc.freeze``) as they come: after a recovery and each checkpoint, after
each step of a restore and of a long tick, and when the fleet grew by :data:`GROWTH`
machines. A full collection then walks only what is newer.
"""

from __future__ import annotations

import gc
from typing import Final

# machines added since the last freeze that freeze them (onboarding, a fleet's first start):
# ~5 objects each, so a full collection walks at most ~100,000 unfrozen objects (~20 ms)
GROWTH: Final = 20_000


def freeze() -> None:
    """Move every object alive now out of the collector's sight."""
    gc.freeze()


def freeze_young() -> None:
    """:func:`freeze` after a collection of the youngest generation, between the steps of long
    work that makes many lasting objects (a restore, a release of a held location, a burst of
    new machines). Collected first, the young cyclic garbage (the event loop's own) is not
    frozen with them."""
    gc.collect(0)
    gc.freeze()


class GrowthFreeze:
    """Freezes young objects each time the machine count grew by :data:`GROWTH`."""

    def __init__(self, every: int = GROWTH) -> None:
        self.every = every
        self.frozen_at = 0

    def seen(self, machines: int) -> bool:
        """Called with the current machine count; True when it froze."""
        if machines < self.frozen_at:
            self.frozen_at = machines  # partitions were given away: count from here
        elif machines - self.frozen_at >= self.every:
            freeze_young()
            self.frozen_at = machines
            return True
        return False
