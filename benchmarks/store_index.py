"""Memory of the feature store's index per image: the numpy KeyIndex against the dict it replaced.

    python benchmarks/store_index.py [--images 1000000] [--shard 1000]

Keys are sha256 hex strings added a shard at a time, as a store opening its shards does. Memory is what
tracemalloc sees allocated while each index is built (the dict's key strings are counted apart: the dict
keeps the strings read from keys.json alive, the KeyIndex does not). Prints bytes per image and the ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avasr_cli.vision.key_index import KeyIndex  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=1_000_000)
    ap.add_argument("--shard", type=int, default=1000)
    args = ap.parse_args()
    n, size = args.images, args.shard
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
    strings = sum(sys.getsizeof(k) for k in keys)

    tracemalloc.start()
    index = KeyIndex()
    for start in range(0, n, size):
        index.add(keys[start : start + size], start // size)
    assert len(index) == n
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    tracemalloc.start()
    ref: dict = {}
    for i, k in enumerate(keys):
        ref.setdefault(k, (i // size, i % size))
    dict_held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    print(f"{n:,} images in shards of {size:,}")
    print(f"KeyIndex: {held / n:.1f} bytes/image held, {peak / n:.1f} at the merge's peak")
    print(f"dict:     {dict_held / n:.1f} bytes/image + {strings / n:.1f} for the key strings it keeps")
    print(f"ratio dict (with its strings) / KeyIndex: {(dict_held + strings) / held:.1f}x")


if __name__ == "__main__":
    main()
