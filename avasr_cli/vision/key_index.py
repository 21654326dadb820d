"""The feature store's index, image sha256 → (shard, row), in numpy arrays instead of a dict.

A dict of a million 64-character keys, each mapped to a tuple, holds ≈ 250 bytes per image (the str, the
tuple, its ints, the table slot), and every process that reads the store builds its own (align's main
process and each DataLoader worker): ≈ 0.75 GB at a million images with two workers. Here a key is its
32-byte digest in one sorted ``S32`` array beside two int32 arrays, 40 bytes per image, and a look-up is
a binary search (:func:`numpy.searchsorted`) over a batch of keys.

Keys are added a shard at a time and merged on the next read, so an embed run that commits a thousand
shards sorts once, not a thousand times. When a key is in more than one shard, the first added wins, as
``dict.setdefault`` did.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np

_EMPTY_KEYS = np.empty(0, dtype="S32")
_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_SHARD = 2**31 - 1  # shard numbers are held as int32


def encode(keys: Iterable[str], strict: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """sha256 hex strings → (their digests as ``S32``, which of them were sha256s). ``strict``: anything
    else raises ValueError naming it; otherwise it is marked invalid (a look-up then finds nothing)."""
    keys = list(keys)
    out = np.zeros(len(keys), dtype="S32")
    valid = np.ones(len(keys), dtype=bool)
    for i, key in enumerate(keys):
        # exactly 64 lower-case hex digits, as hashlib writes them: bytes.fromhex alone would also take
        # spaces (a shorter digest, padded into another image's key) and upper case (a second spelling)
        if isinstance(key, str) and _SHA256.fullmatch(key):
            out[i] = bytes.fromhex(key)
        elif strict:
            raise ValueError(f"feature store key {key!r} is not a sha256 (64 lower-case hex digits)")
        else:
            valid[i] = False
    return out, valid


def decode(digests: np.ndarray) -> list[str]:
    # an S32 item loses trailing zero bytes when read back: pad them again
    return [bytes(d).ljust(32, b"\0").hex() for d in digests]


class KeyIndex:
    """sha256 → (shard number, row): sorted digests and two int32 columns, merged lazily."""

    def __init__(self) -> None:
        self._keys = _EMPTY_KEYS
        self._shard = np.empty(0, dtype=np.int32)
        self._row = np.empty(0, dtype=np.int32)
        self._pending: list[tuple[np.ndarray, int]] = []  # (digests in row order, shard), oldest first

    def add(self, keys: Sequence[str], shard: int) -> None:
        """A shard's keys in row order (merged on the next read; keys already indexed keep their place)."""
        if not 0 <= int(shard) <= MAX_SHARD:
            raise ValueError(f"shard number {shard} is outside 0..{MAX_SHARD}")
        if len(keys):
            self._pending.append((encode(keys)[0], int(shard)))

    def drop_shard(self, shard: int) -> None:
        self._settle()
        keep = self._shard != shard
        self._keys, self._shard, self._row = self._keys[keep], self._shard[keep], self._row[keep]

    def _settle(self) -> None:
        if not self._pending:
            return
        keys = [self._keys] + [k for k, _ in self._pending]
        shard = [self._shard] + [np.full(len(k), s, dtype=np.int32) for k, s in self._pending]
        row = [self._row] + [np.arange(len(k), dtype=np.int32) for k, _ in self._pending]
        self._pending = []
        keys, shard, row = np.concatenate(keys), np.concatenate(shard), np.concatenate(row)
        order = np.argsort(keys, kind="stable")  # stable: of equal keys, the one added first comes first
        keys, shard, row = keys[order], shard[order], row[order]
        first = np.ones(len(keys), dtype=bool)
        first[1:] = keys[1:] != keys[:-1]
        self._keys, self._shard, self._row = keys[first], shard[first], row[first]

    def locate(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(found [B] bool, shard [B], row [B]) for ``keys``; shard and row are -1 where not found (also
        for a key that is no sha256)."""
        self._settle()
        q, valid = encode(keys, strict=False)
        pos = np.searchsorted(self._keys, q)
        inside = (pos < len(self._keys)) & valid
        found = np.zeros(len(q), dtype=bool)
        found[inside] = self._keys[pos[inside]] == q[inside]
        shard = np.full(len(q), -1, dtype=np.int64)
        row = np.full(len(q), -1, dtype=np.int64)
        shard[found], row[found] = self._shard[pos[found]], self._row[pos[found]]
        return found, shard, row

    def __contains__(self, key: str) -> bool:
        return bool(self.locate([key])[0][0])

    def __len__(self) -> int:
        self._settle()
        return len(self._keys)

    def keys(self) -> list[str]:
        """Every key, in shard then row order."""
        self._settle()
        order = np.lexsort((self._row, self._shard))
        return decode(self._keys[order])

    def nbytes(self) -> int:
        self._settle()
        return int(self._keys.nbytes + self._shard.nbytes + self._row.nbytes)
