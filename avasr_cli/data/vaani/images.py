"""The images of Vaani's alignment pairs, read from the ``images`` config in two passes.

The config is large (≈ 50 GB of JPEG in ~114 shards for ≈ 290 k images), and a prepare needs the images of
its alignment rows only. Pass one reads just the name column (``image.path``, else ``path`` or
``referenceImage``) of every row group; a name is matched by its basename to the basename of a row's
``referenceImage``, and the first row holding a needed name wins (later ones are counted as duplicates).
Pass two reads the image bytes of only the row groups that hold a needed name and yields those rows, for
:mod:`avasr_cli.data.vaani.shards` to decode and store once as ``images/<sha256>.<ext>``. Parquet is read by
row group, so a needed image costs the bytes of its row group, not of its shard. An alignment pair whose
image is unnamed, absent or corrupt is dropped (counted).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path
from typing import Iterator

from avasr_cli.data.vaani.hub import VaaniDataset
from avasr_cli.data.vaani.shards import Phase, read_json, run_phase
from avasr_cli.progress import Reporter
from avasr_cli.run import write_json_atomic


def _columns(pf) -> tuple[str, str | None] | None:
    """(name column, bytes column) of an images parquet file, as pyarrow column paths."""
    import pyarrow as pa

    schema = pf.schema_arrow
    if "image" in schema.names and pa.types.is_struct(schema.field("image").type):
        children = {schema.field("image").type.field(i).name for i in range(schema.field("image").type.num_fields)}
        if "path" in children:
            return "image.path", "image.bytes" if "bytes" in children else None
    for name in ("path", "referenceImage"):
        if name in schema.names:
            return name, "image" if "image" in schema.names else None
    return None


def _values(pf, group: int, column: str) -> list:
    leaf = column.rsplit(".", 1)[-1]
    values = pf.read_row_group(group, columns=[column]).column(0).to_pylist()
    return [v.get(leaf) if isinstance(v, dict) else v for v in values]


def index_names(ds: VaaniDataset, configs: list[str], needed: set[str]) -> dict:
    """Pass one: ``{"groups": [[file, row group, [[row, name], ...]], ...], "row_groups": n, "duplicates": n}``."""
    claimed: set[str] = set()
    groups, total, duplicates = [], 0, 0
    with ds.errors():
        for config in configs:
            for split in sorted(ds.files(config)):
                for rel in ds.files(config)[split]:
                    pf = ds.parquet(rel)
                    columns = _columns(pf)
                    total += pf.metadata.num_row_groups
                    if columns is None or columns[1] is None:
                        continue
                    for group in range(pf.metadata.num_row_groups):
                        rows = []
                        for i, value in enumerate(_values(pf, group, columns[0])):
                            name = os.path.basename(str(value or "").strip())
                            if name not in needed:
                                continue
                            if name in claimed:
                                duplicates += 1
                            else:
                                claimed.add(name)
                                rows.append([i, name])
                        if rows:
                            groups.append([rel, group, rows])
    return dict(groups=groups, row_groups=total, duplicates=duplicates)


def needed_images(ds: VaaniDataset, index: dict) -> Iterator[dict]:
    """Pass two: ``{name, bytes}`` of every indexed row, reading only the row groups that hold them."""
    pf, opened = None, None
    for rel, group, rows in index["groups"]:
        with ds.errors():
            if opened != rel:
                pf, opened = ds.parquet(rel), rel
            values = _values(pf, group, _columns(pf)[1])
        for i, name in rows:
            data = values[i]
            yield dict(name=name, bytes=bytes(data) if data is not None else None)


def attach_images(rows: dict[str, list[dict]], ds: VaaniDataset, configs: list[str], root: Path, shard_size: int,
                  workers: int, rep: Reporter) -> tuple[Counter, dict, int]:
    """Give every row naming a stored image its ``image_file``; drop alignment rows whose image is absent or
    corrupt. Returns (drops, stats for the data card, shards decoded)."""
    needed = {r["image"] for split_rows in rows.values() for r in split_rows if r["image"]}
    mapping, info, decoded = _store(needed, ds, configs, root, shard_size, workers, rep) if needed else ({}, {}, 0)
    drops: Counter = Counter()
    for split, split_rows in rows.items():
        kept = []
        for r in split_rows:
            rel = mapping.get(r["image"]) if r["image"] else None
            if rel:
                r["image_file"] = rel
            elif split == "align":
                drops["align_image_missing" if r["image"] not in mapping else "align_image_corrupt"] += 1
                continue
            kept.append(r)
        rows[split] = kept
    stats = dict(needed=len(needed), found=sum(1 for n in needed if mapping.get(n)),
                 stored=len({v for v in mapping.values() if v}), **info)
    return drops, stats, decoded


def _store(needed: set[str], ds: VaaniDataset, configs: list[str], root: Path, shard_size: int, workers: int,
           rep: Reporter) -> tuple[dict[str, str | None], dict, int]:
    """Names an earlier run already stored are reused; the phase for the others is keyed by those names, so a
    rerun asking for the same images resumes it."""
    if not configs:
        rep.warn(f"{ds.ref} has no images config: every alignment pair lacks its image")
        return {}, {}, 0
    mapping: dict[str, str | None] = {}
    for marker in sorted((root / "shards").glob("images-*/[0-9]*.json")):
        for k, v in (read_json(marker) or {}).get("map", {}).items():
            if k in needed and (v is None or (root / v).is_file()):
                mapping.setdefault(k, v)
    rest = needed - set(mapping)
    info = dict(reused=len(mapping), row_groups_read=0, row_groups=None, duplicate_names=None)
    if not rest:
        return mapping, info, 0
    name = "images-" + hashlib.sha256("\n".join(sorted(rest)).encode()).hexdigest()[:12]
    index_file = root / "shards" / name / "index.json"
    index = read_json(index_file)
    if index is None:
        index = index_names(ds, configs, rest)
        write_json_atomic(index_file, index)

    def valid(cached: dict[int, dict]) -> dict[int, dict]:  # a shard whose files were deleted is redone
        return {i: s for i, s in cached.items() if all(v is None or (root / v).is_file() for v in s["map"].values())}

    ph = Phase(name, "image", lambda: needed_images(ds, index), dict(kind="image"), valid=valid,
               total=lambda: sum(len(group_rows) for _, _, group_rows in index["groups"]))
    for shard in run_phase(root, ph, shard_size, workers, rep):
        for k, v in shard["map"].items():
            mapping.setdefault(k, v)
    info.update(row_groups_read=len({(f, g) for f, g, _ in index["groups"]}), row_groups=index["row_groups"],
                duplicate_names=index["duplicates"])
    return mapping, info, ph.decoded
