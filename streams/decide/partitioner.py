"""Kafka's default key partitioner (murmur2), fast for fleet keys.

Shared by the simulator (which must put each key where Kafka's clients would) and the worker
(which maps table keys back to partitions when it rebuilds its index after a rebalance).
"""

from __future__ import annotations

import struct
from typing import Final

_M: Final = 0x5BD1E995
_MASK: Final = 0xFFFFFFFF


def _murmur2_blocks(h: int, data: bytes, start: int, stop: int) -> int:
    for k in struct.unpack_from(f"<{(stop - start) >> 2}I", data, start):
        k = (k * _M) & _MASK
        k = ((k ^ (k >> 24)) * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    return h


class KeyPartitioner:
    """``partition = (murmur2(key) & 0x7fffffff) % partitions``, as Kafka's Java client and
    aiokafka's ``DefaultPartitioner`` compute it.

    aiokafka's pure-Python murmur2 costs ~100 us per fleet key on this machine. Fleet keys share
    long prefixes (``/subscriptions/<guid>/resourcegroups/<rg>/.../machines/``), and murmur2's
    state after the prefix's 4-byte blocks depends only on those bytes and the key's length,
    so that state is cached and only the machine name is hashed.
    """

    def __init__(self, partitions: int, *, cache_size: int = 65536) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        self.partitions = partitions
        self._cache: dict[tuple[int, bytes], int] = {}
        self._cache_size = cache_size

    def murmur2(self, key: bytes) -> int:
        length = len(key)
        cut = (key.rfind(b"/") + 1) & ~3
        ck = (length, key[:cut])
        h = self._cache.get(ck)
        if h is None:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            h = self._cache[ck] = _murmur2_blocks((0x9747B28C ^ length) & _MASK, key, 0, cut)
        blocks_end = length & ~3
        h = _murmur2_blocks(h, key, cut, blocks_end)
        tail = length & 3
        if tail:
            if tail == 3:
                h ^= key[blocks_end + 2] << 16
            if tail >= 2:
                h ^= key[blocks_end + 1] << 8
            h = ((h ^ key[blocks_end]) * _M) & _MASK
        h = ((h ^ (h >> 13)) * _M) & _MASK
        return h ^ (h >> 15)

    def __call__(self, key: bytes) -> int:
        return (self.murmur2(key) & 0x7FFFFFFF) % self.partitions
