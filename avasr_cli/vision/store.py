"""The feature store: fp16 image features on disk, memory-mapped for reading, keyed by image content.

One store per (model id, revision, layer, pooling, patch_pool), shared by every run directory::

    $AVASR_HOME/features/<16 hex of sha256(key)>/
        store.json              key, model label, dim, num_patches, grid, dtype
        shard-00000/            committed by renaming a finished temp dir: a shard exists whole or not at all
            pooled.npy          [n, D] float16
            patches.npy         [n, P, D] float16
            keys.json           the n image sha256s, in row order
            index.json          rows, and each file's size in bytes and sha256
        shard-00001/ ...

A killed run leaves at most a ``.tmp-shard-*`` directory, removed on the next open; finished shards stay,
so a rerun embeds only the missing images. Several processes (``embed-images --gpus N``) may write one
store at once: each commits its own shards, and a rename that finds the number taken tries the next.

Damage is found when a store is opened, never in the middle of training: a shard whose files are missing,
whose ``.npy`` headers do not match the file sizes, whose row counts disagree, or (with
:meth:`FeatureStore.verify`) whose checksums differ from its ``index.json`` is *damaged*: it is not
indexed (its images count as missing), :attr:`FeatureStore.damaged` names it and why, and
``avasr embed-images`` removes it and re-embeds just its images. Readers (``align``) open a store with :meth:`FeatureStore.open`
and call :meth:`FeatureStore.lookup`. numpy only: no torch here.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from avasr_cli.errors import InputError
from avasr_cli.vision.key_index import KeyIndex, encode
from avasr_cli.run import _pid_alive, avasr_home, sha256_file, write_json_atomic

STORE_FORMAT = 1
KEY_FIELDS = ("model_id", "revision", "layer", "pooling", "patch_pool")
FP16_MAX = float(np.finfo(np.float16).max)
SHARD_FILES = ("pooled.npy", "patches.npy", "keys.json")


def _npy_problem(path: Path, rows: int | None) -> tuple[str | None, int | None]:
    """(what is wrong with an ``.npy`` file, or None; its row count). Reads the header only."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(fh)
            data_start = fh.tell()
    except FileNotFoundError:
        return f"{path.name} is missing", None
    except (OSError, ValueError, SyntaxError, TypeError) as exc:  # a directory, garbage, a cut header
        return f"{path.name} is not a numpy array file ({type(exc).__name__})", None
    if np.dtype(dtype) != np.float16:  # an object array is a pickle: never loaded, whatever its size says
        return f"{path.name} holds {np.dtype(dtype)} values, not float16", None
    expected = data_start + int(np.prod(shape)) * np.dtype(dtype).itemsize
    if size != expected:
        return f"{path.name} is {size} bytes, its header says {expected}", None
    if rows is not None and (not shape or shape[0] != rows):
        return f"{path.name} holds {shape[0] if shape else 0} rows, keys.json names {rows}", None
    return None, int(shape[0]) if shape else 0


def shard_problem(shard: Path, indexed: bool = True) -> tuple[str | None, list[str]]:
    """(why ``shard`` is damaged, or None; its keys). Cheap: sizes, headers and row counts, no checksums.
    ``indexed``: the store writes ``index.json`` in every shard, so one without it is damaged (stores made
    before index.json existed are checked by their headers alone)."""
    try:
        keys = json.loads((shard / "keys.json").read_text(encoding="utf-8"))
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ValueError("not a list of image hashes")
    except FileNotFoundError:
        return "keys.json is missing", []
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return f"keys.json is unreadable ({type(exc).__name__})", []
    for name in ("pooled.npy", "patches.npy"):
        problem, _ = _npy_problem(shard / name, len(keys))
        if problem:
            return problem, keys
    index = shard / "index.json"
    if indexed and not index.exists():
        return "index.json is missing", keys
    if index.exists():
        try:
            files = json.loads(index.read_text(encoding="utf-8"))["files"]
            sizes = {name: int(files[name]["bytes"]) for name in SHARD_FILES}
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            return f"index.json is unreadable ({type(exc).__name__})", keys
        for name, size in sizes.items():
            if (shard / name).stat().st_size != size:
                return f"{name} is {(shard / name).stat().st_size} bytes, index.json says {size}", keys
    return None, keys


def store_key(meta: dict) -> str:
    """Short hash of the (model id, revision, layer, pooling, patch_pool) tuple."""
    key = json.dumps([meta.get(k) for k in KEY_FIELDS], sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def features_root() -> Path:
    return avasr_home() / "features"


def store_path(meta: dict, root: Path | str | None = None) -> Path:
    return Path(root if root is not None else features_root()) / store_key(meta)


class FeatureStore:
    """Read and append fp16 features of images keyed by their sha256."""

    def __init__(self, path: Path, meta: dict):
        self.path = Path(path)
        self.meta = meta
        self._index = KeyIndex()  # sha -> (shard number, row), 40 bytes an image (key_index.py)
        self._shards: dict[int, Path] = {}
        self._mmaps: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.damaged: dict[str, str] = {}  # shard directory → what is wrong with it (not indexed)
        self.refresh()

    # open ------------------------------------------------------------------------------------------------
    @classmethod
    def open_or_create(cls, root: Path | str | None, meta: dict) -> "FeatureStore":
        """Open the store for ``meta``'s key under ``root`` (default ``$AVASR_HOME/features``), creating it if new.

        ``meta`` needs the key fields plus ``dim`` and ``num_patches`` (and may carry label, grid, ...).
        """
        missing = [k for k in (*KEY_FIELDS, "dim", "num_patches") if k not in meta]
        if missing:
            raise ValueError(f"feature store meta lacks {missing}")
        path = store_path(meta, root)
        desc = path / "store.json"
        if desc.is_file():
            store = cls.open(path)
            for k in ("dim", "num_patches"):
                if int(store.meta[k]) != int(meta[k]):
                    raise InputError(f"feature store {path} holds {k}={store.meta[k]} but the encoder gives {meta[k]}",
                                     f"delete {path} and rerun (the model changed under the same id and revision)")
            return store
        path.mkdir(parents=True, exist_ok=True)
        record = {"format": STORE_FORMAT, "key": store_key(meta), "dtype": "float16", "shard_index": True,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **meta}
        write_json_atomic(desc, record)
        return cls(path, record)

    @classmethod
    def open(cls, path: Path | str) -> "FeatureStore":
        """Open an existing store directory (as named in a run's ``features.json``)."""
        path = Path(path)
        try:
            meta = json.loads((path / "store.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{path} is not a feature store ({exc.__class__.__name__})",
                             f"restore {path / 'store.json'}, or delete {path} and rerun `avasr embed-images` "
                             "(every run using this encoder re-embeds then)") from exc
        if meta.get("format") != STORE_FORMAT:
            raise InputError(f"feature store {path} has format {meta.get('format')!r}, expected {STORE_FORMAT}",
                             f"delete {path} and rerun `avasr embed-images`")
        return cls(path, meta)

    def refresh(self) -> None:
        """(Re)scan committed shards; drop temp dirs left by dead writers."""
        host = socket.gethostname()
        for tmp in self.path.glob(".tmp-shard-*"):
            try:
                prefix, _, pid = tmp.name.rsplit("-", 2)
                mine = prefix == f".tmp-shard-{host}"
                stale = (mine and not _pid_alive(int(pid))) or time.time() - tmp.stat().st_mtime > 86400
            except (ValueError, OSError):
                stale = False
            if stale:
                shutil.rmtree(tmp, ignore_errors=True)
        for shard in sorted(self.path.glob("shard-*")):
            try:
                num = int(shard.name.split("-", 1)[1])
            except ValueError:
                continue
            if num in self._shards:
                continue
            problem, keys = shard_problem(shard, bool(self.meta.get("shard_index")))
            if problem:
                self.damaged[str(shard)] = problem
                continue
            try:
                self._index.add(keys, num)
            except ValueError as exc:  # a key that is no image sha256, or a number no writer gives
                self.damaged[str(shard)] = f"{shard.name}: {exc}"
                continue
            self.damaged.pop(str(shard), None)
            self._shards[num] = shard

    def verify(self) -> dict[str, str]:
        """Check every indexed shard's files against the sha256s in its ``index.json`` (reads every byte);
        a mismatch moves the shard to :attr:`damaged` and out of the index. Returns :attr:`damaged`."""
        bad = []
        for num, shard in self._shards.items():
            try:
                files = json.loads((shard / "index.json").read_text(encoding="utf-8"))["files"]
            except FileNotFoundError:
                continue  # written before checksums were kept
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self.damaged[str(shard)] = f"index.json is unreadable ({type(exc).__name__})"
                bad.append(num)
                continue
            for name in SHARD_FILES:
                expected = files.get(name, {}).get("sha256") if isinstance(files, dict) else None
                if expected is None or sha256_file(shard / name) != expected:
                    self.damaged[str(shard)] = f"{name} does not match its checksum in index.json"
                    bad.append(num)
                    break
        for num in bad:
            self._drop(num)
        return self.damaged

    def _drop(self, num: int) -> None:
        del self._shards[num]
        self._mmaps.pop(num, None)
        self._index.drop_shard(num)
        for other, shard in sorted(self._shards.items()):  # an image also held by a later shard stays findable
            if other > num:
                self._index.add(json.loads((shard / "keys.json").read_text(encoding="utf-8")), other)

    def remove_damaged(self) -> list[str]:
        """Delete the damaged shards (their images then count as missing and are embedded again)."""
        gone = list(self.damaged)
        for shard in gone:
            shutil.rmtree(shard, ignore_errors=True)
        self.damaged.clear()
        return gone

    def shards_of(self, shas: Iterable[str]) -> dict[str, int]:
        """Shard directory name → how many of ``shas`` it holds (recorded in features.json, so a lost
        shard can be named later)."""
        found, shard, _ = self._index.locate(list(shas))
        nums, counts = np.unique(shard[found], return_counts=True)
        return dict(sorted((self._shards[int(n)].name, int(c)) for n, c in zip(nums, counts)))

    # properties ------------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def num_patches(self) -> int:
        return int(self.meta["num_patches"])

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, sha: str) -> bool:
        return sha in self._index

    def keys(self) -> list[str]:
        return self._index.keys()

    def missing(self, shas: Iterable[str]) -> list[str]:
        """The shas not in the store, unique, in first-seen order."""
        shas = list(shas)
        found, _, _ = self._index.locate(shas)
        seen: set[str] = set()
        out = []
        for s, hit in zip(shas, found):
            if not hit and s not in seen:
                seen.add(s)
                out.append(s)
        return out

    # write -----------------------------------------------------------------------------------------------
    def write_shard(self, keys: Sequence[str], pooled: np.ndarray, patches: np.ndarray) -> Path | None:
        """Append one shard atomically (files to a temp dir, then one rename commits it)."""
        n = len(keys)
        if n == 0:
            return None
        pooled = np.asarray(pooled)
        patches = np.asarray(patches)
        if pooled.shape != (n, self.dim) or patches.shape != (n, self.num_patches, self.dim):
            raise ValueError(f"shard shapes {pooled.shape}, {patches.shape} do not match "
                             f"({n}, {self.dim}) / ({n}, {self.num_patches}, {self.dim})")
        if len(set(keys)) != n:
            raise ValueError("duplicate keys in one shard")
        encode(keys)  # every key an image sha256 (ValueError naming the first that is not)
        tmp = self.path / f".tmp-shard-{socket.gethostname()}-{time.time_ns()}-{os.getpid()}"
        tmp.mkdir(parents=True)
        try:
            for name, arr in (("pooled.npy", pooled), ("patches.npy", patches)):
                arr16 = np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16)  # no inf from fp16 overflow
                with open(tmp / name, "wb") as fh:
                    np.save(fh, arr16)
                    fh.flush()
                    os.fsync(fh.fileno())
            (tmp / "keys.json").write_text(json.dumps(list(keys)))
            files = {name: {"bytes": (tmp / name).stat().st_size, "sha256": sha256_file(tmp / name)} for name in SHARD_FILES}
            (tmp / "index.json").write_text(json.dumps({"rows": n, "files": files}))
            num = max(self._shards, default=-1) + 1
            while True:  # another writer may take a number: renaming onto a non-empty dir fails
                dest = self.path / f"shard-{num:05d}"
                try:
                    if dest.exists():
                        raise FileExistsError(dest)
                    os.rename(tmp, dest)
                    break
                except OSError as exc:
                    if not isinstance(exc, FileExistsError) and exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise  # not a taken number: retrying would loop for ever
                    num += 1
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._shards[num] = dest
        self._index.add(keys, num)
        return dest

    # read ------------------------------------------------------------------------------------------------
    def _mmap(self, num: int) -> tuple[np.ndarray, np.ndarray]:
        if num not in self._mmaps:
            shard = self._shards[num]
            self._mmaps[num] = (np.load(shard / "pooled.npy", mmap_mode="r"),
                                np.load(shard / "patches.npy", mmap_mode="r"))
        return self._mmaps[num]

    def lookup(self, shas: Sequence[str], *, patches: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """fp16 ``(pooled [B, D], patches [B, P, D])`` for ``shas`` in order; a missing sha raises KeyError."""
        b = len(shas)
        found, shard, row = self._index.locate(shas)
        if not found.all():
            raise KeyError(f"image {shas[int(np.argmin(found))]} is not in feature store {self.path}")
        locs = np.stack([shard, row], axis=1)
        out_pooled = np.empty((b, self.dim), dtype=np.float16)
        out_patches = np.empty((b, self.num_patches, self.dim), dtype=np.float16) if patches else None
        for num in np.unique(locs[:, 0]) if b else ():
            sel = np.nonzero(locs[:, 0] == num)[0]
            rows = locs[sel, 1]
            mp, mt = self._mmap(int(num))
            out_pooled[sel] = mp[rows]
            if out_patches is not None:
                out_patches[sel] = mt[rows]
        return out_pooled, out_patches
