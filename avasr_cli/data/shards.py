"""Sharded audio: each split's clips packed into tar files that NeMo reads natively (its tarred audio
datasets, streamed by its Lhotse data loader with duration bucketing), with manifests pointing into them.

Why NeMo tarred audio and not Lhotse Shar: NeMo's own large-scale ASR recipes ship data in this layout
(``audio_<i>.tar`` + ``manifest_<i>.json``, rows carrying ``shard_id``), its classic and Lhotse loaders
both read it, and a manifest row stays a NeMo manifest row (``audio_filepath`` is the member's name), so
every tool that takes a NeMo manifest keeps working. avasr adds three fields per row so that one clip can
be read without scanning its tar (alignment batches by duration, evaluate keeps manifest order):
``tar_filepath``, ``tar_offset`` (first byte of the member's data) and ``tar_size``.

A split's shards live in one directory, committed whole by a rename::

    <dir>/audio_0.tar … audio_<N-1>.tar     uncompressed tar of 16-bit WAV members named <utt_id>.wav
    <dir>/manifest_0.json …                 the NeMo manifest of each shard
    <dir>/index.json                        per shard: clips, bytes, sha256 of the tar and of its manifest

The index is how damage is found before training: a shard whose size differs from its index is named
(:func:`check_shards`), and a full checksum pass is :func:`verify_shards`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import time
from pathlib import Path
from typing import Iterable

from avasr_cli.errors import InputError
from avasr_cli.run import sha256_file, write_json_atomic

INDEX = "index.json"
LAYOUT_VERSION = 1
TAR_FIELDS = ("tar_filepath", "tar_offset", "tar_size")


def is_sharded(row: dict) -> bool:
    return "tar_filepath" in row


def content_key(rows: list[dict], clips_per_shard: int) -> str:
    """What a split's shards hold: its rows (in order) and the shard size."""
    h = hashlib.sha256(json.dumps([clips_per_shard, LAYOUT_VERSION], sort_keys=True).encode())
    for r in rows:
        h.update(json.dumps(r, sort_keys=True, ensure_ascii=False, default=str).encode())
    return h.hexdigest()[:16]


def _wav_bytes(path: str) -> bytes:
    """The clip as 16-bit WAV (what NeMo's tar readers and soundfile both decode)."""
    import soundfile as sf

    data, sr = sf.read(path, dtype="int16", always_2d=False)
    buf = io.BytesIO()
    sf.write(buf, data, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def pack_split(rows: list[dict], dest: Path, clips_per_shard: int) -> list[dict]:
    """Pack ``rows``' audio into shards under ``dest`` and return the rows pointing into them. Rows keep
    every field; ``audio_filepath`` becomes the member name. When ``dest`` already holds these rows, only
    its damaged shards (missing, another size than the index says, unreadable tar headers) are packed
    again: that is what ``avasr prepare --force`` does after a shard is damaged."""
    dest = Path(dest)
    key = content_key(rows, clips_per_shard)
    chunks = [rows[i : i + clips_per_shard] for i in range(0, len(rows), clips_per_shard)]
    record = None
    if (dest / INDEX).is_file():
        try:
            record = json.loads((dest / INDEX).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None
    if record is not None and record.get("key") == key and len(record.get("shards", [])) == len(chunks):
        for sid, shard in enumerate(record["shards"]):
            if _shard_problem(dest, shard):
                record["shards"][sid] = _repack(dest, sid, chunks[sid])
        write_json_atomic(dest / INDEX, record)
        return read_rows(dest)
    shutil.rmtree(dest, ignore_errors=True)  # absent, or another content under the same name
    tmp = dest.with_name(f".tmp-{dest.name}-{os.getpid()}-{time.time_ns()}")
    tmp.mkdir(parents=True)
    try:
        shards = [_write_shard(tmp, dest, sid, chunk) for sid, chunk in enumerate(chunks)]
        write_json_atomic(tmp / INDEX, {"format": LAYOUT_VERSION, "key": key, "clips": len(rows),
                           "clips_per_shard": clips_per_shard, "shards": shards})
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, dest)
        except OSError:  # another prepare packed the same rows first: keep its shards
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return read_rows(dest)


def _write_shard(where: Path, dest: Path, sid: int, chunk: list[dict]) -> dict:
    """Write ``audio_<sid>.tar`` and ``manifest_<sid>.json`` into ``where`` (rows name them under ``dest``)."""
    tar_name, manifest_name = f"audio_{sid}.tar", f"manifest_{sid}.json"
    entries = []
    with tarfile.open(where / tar_name, "w", format=tarfile.USTAR_FORMAT) as tar:
        for r in chunk:
            member = f"{r.get('utt_id') or Path(r['audio_filepath']).stem}.wav"
            data = _wav_bytes(str(r["audio_filepath"]))
            info = tarfile.TarInfo(member)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
            entries.append((r, member))
    offsets = _members(where / tar_name)
    with open(where / manifest_name, "w", encoding="utf-8") as fh:
        for r, member in entries:
            offset, size = offsets[member]
            row = dict(r, audio_filepath=member, shard_id=sid, tar_filepath=str(dest / tar_name),
                       tar_offset=offset, tar_size=size)
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {"shard_id": sid, "tar": tar_name, "manifest": manifest_name, "clips": len(entries),
            "bytes": (where / tar_name).stat().st_size, "sha256": sha256_file(where / tar_name),
            "manifest_sha256": sha256_file(where / manifest_name)}


def _repack(dest: Path, sid: int, chunk: list[dict]) -> dict:
    """Pack one shard again next to the others, then swap its files in."""
    tmp = dest / f".tmp-shard-{sid}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        shard = _write_shard(tmp, dest, sid, chunk)
        for name in (shard["tar"], shard["manifest"]):
            if (dest / name).is_dir():
                shutil.rmtree(dest / name)
            os.replace(tmp / name, dest / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return shard


def _shard_problem(directory: Path, shard: dict) -> str | None:
    tar, manifest = directory / shard["tar"], directory / shard["manifest"]
    if not tar.is_file() or not manifest.is_file():
        return "missing"
    if tar.stat().st_size != shard["bytes"]:
        return "size"
    if sha256_file(manifest) != shard.get("manifest_sha256"):
        return "manifest"
    try:
        _members(tar)
    except InputError:
        return "unreadable"
    return None


def read_index(directory: Path) -> dict:
    path = Path(directory) / INDEX
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the shard index {path} ({type(exc).__name__})",
                         "rerun `avasr prepare --force` to rebuild the shards") from None


def read_rows(directory: Path) -> list[dict]:
    rows = []
    for shard in read_index(directory)["shards"]:
        path = Path(directory) / shard["manifest"]
        try:
            with open(path, encoding="utf-8") as fh:
                rows += [json.loads(line) for line in fh if line.strip()]
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read the shard manifest {path} ({type(exc).__name__})",
                             "rerun `avasr prepare --force`: it packs just the damaged shards again") from None
    return rows


def shard_dirs(rows: Iterable[dict]) -> list[Path]:
    return sorted({Path(r["tar_filepath"]).parent for r in rows if is_sharded(r)})


def check_shards(manifest: Path | str, rows: list[dict], *, full: bool = False) -> None:
    """Before training or transcribing: every shard ``rows`` point into exists, has the size (``full``:
    the sha256) its index records, its tar headers parse, and each row's member sits where the row says.
    Without ``full`` it reads the tar headers only (512 bytes a clip), as the file layout reads each file's
    audio header. An error names the shard file and the manifest."""
    for directory in shard_dirs(rows):
        index = read_index(directory)
        sizes = {}
        for shard in index["shards"]:
            tar = directory / shard["tar"]
            try:
                size = tar.stat().st_size if tar.is_file() else None
            except OSError:
                size = None
            if size is None:
                raise InputError(f"audio shard {tar} (named by {manifest}) is missing or not a file",
                                 "restore it, or rerun `avasr prepare --force`: it packs just the damaged shards again")
            if size != shard["bytes"]:
                raise InputError(f"audio shard {tar} is {size} bytes, its index {directory / INDEX} says "
                                 f"{shard['bytes']} (cut short or replaced)",
                                 "restore it, or rerun `avasr prepare --force`: it packs just the damaged shards again")
            if full and sha256_file(tar) != shard["sha256"]:
                raise InputError(f"audio shard {tar} does not match its checksum in {directory / INDEX}",
                                 "restore it, or rerun `avasr prepare --force`: it packs just the damaged shards again")
            sizes[str(tar)] = _members(tar)
    for lineno, r in enumerate(rows, start=1):
        if not is_sharded(r):
            continue
        members = sizes.get(str(r["tar_filepath"]))
        if members is None:
            raise InputError(f"{manifest}:{lineno}: {r['tar_filepath']} is not among the shards of its index",
                             "rerun `avasr prepare --force` (the manifest and its shards disagree)")
        if members.get(r["audio_filepath"]) != (int(r["tar_offset"]), int(r["tar_size"])):
            raise InputError(f"{manifest}:{lineno}: {r['audio_filepath']} is not where the manifest says in "
                             f"{r['tar_filepath']}", "rerun `avasr prepare --force` (the manifest and its shards disagree)")


def _members(tar: Path) -> dict[str, tuple[int, int]]:
    """Member name → (data offset, size), from the tar's headers (the data is skipped, not read)."""
    try:
        with tarfile.open(tar, "r:") as t:
            return {m.name: (m.offset_data, m.size) for m in t}
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"audio shard {tar} cannot be read as a tar file ({type(exc).__name__}: {exc})",
                         "restore it, or rerun `avasr prepare --force`: it packs just the damaged shards again") from None


def read_member(row: dict) -> bytes:
    with open(row["tar_filepath"], "rb") as fh:
        fh.seek(int(row["tar_offset"]))
        data = fh.read(int(row["tar_size"]))
    if len(data) != int(row["tar_size"]):
        raise InputError(f"{row['tar_filepath']} ends inside {row['audio_filepath']}",
                         "rerun `avasr prepare --force` to rebuild the shards")
    return data


def files_on_disk(rows: list[dict]) -> int:
    """Files the audio of ``rows`` occupies: one per clip, or the shards with their manifests and index."""
    if rows and all(is_sharded(r) for r in rows):
        return sum(2 * len(read_index(d)["shards"]) + 1 for d in shard_dirs(rows))
    return len({str(r["audio_filepath"]) for r in rows})


_NEMO_BRACES = "([<)]>"


def nemo_patterns(rows: list[dict], dest: Path, rank: int = 0, world: int = 1) -> tuple[str, str, int]:
    """NeMo's ``(manifest_filepath, tarred_audio_filepaths, clips)`` for ``rows`` (all in one split's shard
    directory), for process ``rank`` of ``world``: that rank's shards are ``r, r + W, …`` (disjoint parts
    whose union is the split, as NeMo's ``shard_strategy: scatter``), linked under ``dest/rank<r>`` with
    their own numbering and a manifest each of just these rows (a subset such as ``finetune --train-hours``
    leaves other clips of a shard out; the loader skips them). ``world`` 1: every shard."""
    dirs = shard_dirs(rows)
    if len(dirs) != 1 or not all(is_sharded(r) for r in rows):
        raise InputError(f"{len(dirs)} shard directories in one split", "rerun `avasr prepare --force`")
    directory, n = dirs[0], len(read_index(dirs[0])["shards"])
    mine = list(range(rank, n, world))
    if not mine:
        raise InputError(f"{directory} has {n} audio shard(s) for {world} processes: a process would get none",
                         "prepare with a smaller --shard-clips (at least one shard per process), or use fewer processes")
    dest = Path(dest) / f"rank{rank}"
    for path in (directory, dest):
        if any(c in str(path) for c in _NEMO_BRACES):
            raise InputError(f"{path} holds one of {_NEMO_BRACES}, which NeMo's shard patterns read as braces",
                             "move the run directory or AVASR_HOME to a path without those characters")
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    by_shard: dict[int, list[dict]] = {sid: [] for sid in mine}
    for r in rows:
        if int(r["shard_id"]) in by_shard:
            by_shard[int(r["shard_id"])].append(r)
    for k, sid in enumerate(mine):
        os.symlink(directory / f"audio_{sid}.tar", dest / f"audio_{k}.tar")
        with open(dest / f"manifest_{k}.json", "w", encoding="utf-8") as fh:
            for r in by_shard[sid]:
                row = {key: v for key, v in r.items() if key not in TAR_FIELDS}
                fh.write(json.dumps(dict(row, shard_id=k), ensure_ascii=False) + "\n")
    span = f"_OP_0..{len(mine) - 1}_CL_"
    return str(dest / f"manifest_{span}.json"), str(dest / f"audio_{span}.tar"), sum(map(len, by_shard.values()))
