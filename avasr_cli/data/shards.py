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
from typing import Callable, Iterable, Iterator

from avasr_cli.data.tars import add_member, chunked, members, read_at
from avasr_cli.errors import InputError
from avasr_cli.run import sha256_file, write_json_atomic

INDEX = "index.json"
LAYOUT_VERSION = 1
TAR_FIELDS = ("tar_filepath", "tar_offset", "tar_size")


def is_sharded(row: dict) -> bool:
    return "tar_filepath" in row


def content_key(rows: Iterable[dict], clips_per_shard: int) -> str:
    """What a split's shards hold: its rows (in order) and the shard size (one streamed pass)."""
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


def pack_split(rows: Iterable[dict], dest: Path, clips_per_shard: int, *, key: str | None = None,
               progress: Callable[[int], object] | None = None) -> "ShardRows":
    """Pack ``rows``' audio into shards under ``dest`` and return the rows pointing into them (a stream
    read from the shard manifests). Rows keep every field; ``audio_filepath`` becomes the member name.
    ``rows`` is read one shard's worth at a time (a list or a :class:`~avasr_cli.data.manifest.Rows`
    stream, read once for ``key`` when it is not given and once to pack). When ``dest`` already holds
    these rows, only its damaged shards (missing, another size than the index says, unreadable tar
    headers) are packed again: that is what ``avasr prepare --force`` does after a shard is damaged."""
    dest = Path(dest)
    key = key or content_key(rows, clips_per_shard)
    progress = progress or (lambda n: None)
    record = None
    if (dest / INDEX).is_file():
        try:
            record = json.loads((dest / INDEX).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None
    if record is not None and record.get("key") == key:
        damaged = {sid for sid, shard in enumerate(record["shards"]) if _shard_problem(dest, shard)}
        if damaged:
            for sid, chunk in enumerate(chunked(rows, clips_per_shard)):
                if sid in damaged:
                    record["shards"][sid] = _repack(dest, sid, chunk)
            write_json_atomic(dest / INDEX, record)
        progress(int(record.get("clips", 0)))
        return ShardRows(dest)
    shutil.rmtree(dest, ignore_errors=True)  # absent, or another content under the same name
    tmp = dest.with_name(f".tmp-{dest.name}-{os.getpid()}-{time.time_ns()}")
    tmp.mkdir(parents=True)
    try:
        shards = []
        for sid, chunk in enumerate(chunked(rows, clips_per_shard)):
            shards.append(_write_shard(tmp, dest, sid, chunk))
            progress(len(chunk))
        write_json_atomic(tmp / INDEX, {"format": LAYOUT_VERSION, "key": key, "clips": sum(s["clips"] for s in shards),
                           "clips_per_shard": clips_per_shard, "shards": shards})
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, dest)
        except OSError:  # another prepare packed the same rows first: keep its shards
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ShardRows(dest)


class ShardRows:
    """The rows of a shard directory, streamed from its shard manifests on each pass."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        read_index(self.directory)  # fail now, naming the index, rather than on the first pass

    def __iter__(self) -> Iterator[dict]:
        return iter_rows(self.directory)


def _write_shard(where: Path, dest: Path, sid: int, chunk: list[dict]) -> dict:
    """Write ``audio_<sid>.tar`` and ``manifest_<sid>.json`` into ``where`` (rows name them under ``dest``)."""
    shard = ShardFile(where, dest, sid)
    for r in chunk:
        shard.add(r, f"{r.get('utt_id') or Path(r['audio_filepath']).stem}.wav", _wav_bytes(str(r["audio_filepath"])))
    return shard.close()


class ShardFile:
    """One shard being written: members are appended to ``audio_<sid>.tar`` as they come (nothing but the
    rows is held), and :meth:`close` writes ``manifest_<sid>.json`` (rows pointing at their members under
    ``dest``) and returns the shard's index record."""

    def __init__(self, where: Path, dest: Path, sid: int, prefix: str = "audio", name_field: str = "audio_filepath"):
        self.where, self.dest, self.sid, self.name_field = Path(where), Path(dest), sid, name_field
        self.tar_name, self.manifest_name = f"{prefix}_{sid}.tar", f"manifest_{sid}.json"
        self._tar = tarfile.open(self.where / self.tar_name, "w", format=tarfile.USTAR_FORMAT)
        self._entries: list[tuple[dict, str]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, row: dict, member: str, data: bytes) -> None:
        add_member(self._tar, member, data)
        self._entries.append((row, member))

    def close(self) -> dict:
        self._tar.close()
        with open(self.where / self.tar_name, "rb+") as fh:  # on disk before anything names it as committed
            os.fsync(fh.fileno())
        offsets = members(self.where / self.tar_name)
        with open(self.where / self.manifest_name, "w", encoding="utf-8") as fh:
            for r, member in self._entries:
                offset, size = offsets[member]
                row = dict(r, **{self.name_field: member}, shard_id=self.sid,
                           tar_filepath=str(self.dest / self.tar_name), tar_offset=offset, tar_size=size)
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return {"shard_id": self.sid, "tar": self.tar_name, "manifest": self.manifest_name, "clips": len(self._entries),
                "bytes": (self.where / self.tar_name).stat().st_size, "sha256": sha256_file(self.where / self.tar_name),
                "manifest_sha256": sha256_file(self.where / self.manifest_name)}

    def abandon(self) -> None:
        self._tar.close()


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


def _shard_problem(directory: Path, shard: dict, full: bool = False) -> str | None:
    """Why a shard is damaged, or None: missing, another size, its manifest's checksum, unreadable tar
    headers, and with ``full`` the tar's own checksum (a read of the whole tar)."""
    tar, manifest = directory / shard["tar"], directory / shard["manifest"]
    if not tar.is_file() or not manifest.is_file():
        return "missing"
    if tar.stat().st_size != shard["bytes"]:
        return "size"
    if sha256_file(manifest) != shard.get("manifest_sha256"):
        return "manifest"
    if full and sha256_file(tar) != shard.get("sha256"):
        return "checksum"
    try:
        members(tar)
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


def iter_rows(directory: Path) -> Iterator[dict]:
    """The rows of every shard manifest under ``directory``, in shard order, one at a time."""
    for shard in read_index(directory)["shards"]:
        path = Path(directory) / shard["manifest"]
        try:
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        yield json.loads(line)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read the shard manifest {path} ({type(exc).__name__})",
                             "rerun `avasr prepare --force`: it packs just the damaged shards again") from None


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
            sizes[str(tar)] = members(tar)
    for lineno, r in enumerate(rows, start=1):
        if not is_sharded(r):
            continue
        found = sizes.get(str(r["tar_filepath"]))
        if found is None:
            raise InputError(f"{manifest}:{lineno}: {r['tar_filepath']} is not among the shards of its index",
                             "rerun `avasr prepare --force` (the manifest and its shards disagree)")
        if found.get(r["audio_filepath"]) != (int(r["tar_offset"]), int(r["tar_size"])):
            raise InputError(f"{manifest}:{lineno}: {r['audio_filepath']} is not where the manifest says in "
                             f"{r['tar_filepath']}", "rerun `avasr prepare --force` (the manifest and its shards disagree)")


def read_member(row: dict) -> bytes:  # one manifest row's audio
    return read_at(row["tar_filepath"], row["tar_offset"], row["tar_size"], row["audio_filepath"])


def files_on_disk(rows: Iterable[dict]) -> int:
    """Files the audio of ``rows`` occupies: the shards with their manifests and index, or one per clip
    (the files layout; its distinct paths are counted in a set, the layout's own cost in memory)."""
    if isinstance(rows, ShardRows):
        return 2 * len(read_index(rows.directory)["shards"]) + 1
    paths, dirs, all_sharded = set(), set(), True
    for r in rows:
        paths.add(str(r["audio_filepath"]))
        if is_sharded(r):
            dirs.add(Path(r["tar_filepath"]).parent)
        else:
            all_sharded = False
    if paths and all_sharded:
        return sum(2 * len(read_index(d)["shards"]) + 1 for d in sorted(dirs))
    return len(paths)


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
