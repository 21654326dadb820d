"""Tar members, the primitive under the shard layouts (:mod:`avasr_cli.data.shards`, the built-in corpus's
packed form): a member appended with a fixed mtime (the same content gives the same tar bytes), a tar's
member table read from its headers alone, and a member read back by offset with one seek."""

from __future__ import annotations

import io
import itertools
import tarfile
from pathlib import Path
from typing import Iterable, Iterator

from avasr_cli.errors import InputError


def members(tar: Path, what: str = "audio shard") -> dict[str, tuple[int, int]]:
    """Member name → (data offset, size), from the tar's headers (the data is skipped, not read)."""
    try:
        with tarfile.open(tar, "r:") as t:
            return {m.name: (m.offset_data, m.size) for m in t}
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"{what} {tar} cannot be read as a tar file ({type(exc).__name__}: {exc})",
                         "restore it, or rerun `avasr prepare --force`: it packs just the damaged shards again") from None


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Append ``data`` as member ``name`` (mtime 0: the same content gives the same tar bytes)."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 0
    tar.addfile(info, io.BytesIO(data))


def read_at(tar: Path | str, offset: int, size: int, name: str) -> bytes:
    """The ``size`` bytes of member ``name`` at ``offset`` of ``tar`` (one seek, one read)."""
    with open(tar, "rb") as fh:
        fh.seek(int(offset))
        data = fh.read(int(size))
    if len(data) != int(size):
        raise InputError(f"{tar} ends inside {name}", "rerun `avasr prepare --force` to rebuild the shards")
    return data


def chunked(rows: Iterable, size: int) -> Iterator[list]:
    """``rows`` in lists of ``size`` (the last shorter), drawn lazily: one list in memory at a time."""
    it = iter(rows)
    while chunk := list(itertools.islice(it, size)):
        yield chunk
