"""Vaani dataset access: a hub id or a local ``hf download`` snapshot, read through ``datasets`` (streaming, audio
left undecoded) or, for file-level work (sizes, image names), as parquet files.

Layout
    A local snapshot's configs are its folders holding parquet files at any depth, named by their path
    (``audio/Kannada``, ``Karnataka_Bangalore``; files at the top or in ``data/`` alone are ``default``); a
    ``train``/``validation``/``test`` folder, or a file name starting with one of those words, names the
    split (else ``train``). On the hub, config names come from ``get_dataset_config_names`` and their files
    from the repository listing grouped the same way (the listing works for gated repositories too).

Access
    Failures are mapped to one-line :class:`InputError`s that never contain the token. ``datasets`` surfaces
    a gated refusal in several ways (``GatedRepoError``, 401/403, ``ConnectionError``, or
    ``FileNotFoundError(<url>)`` when a file is read), and the hub lists a gated repository's files to
    anyone, so a refusal may only appear when data is read: :meth:`VaaniDataset.check_access` reads a row,
    and an ambiguous ``ConnectionError``/``FileNotFoundError`` is settled by asking the hub
    (``HfApi.auth_check``). When ``load_dataset(<hub id>)`` fails with fsspec's ``Invalid pattern: '**'``
    the config's parquet files are listed and loaded explicitly instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Iterator
from urllib.parse import quote

from avasr_cli.data.vaani.select import SPLIT_NAMES, norm
from avasr_cli.errors import AvasrError, InputError

WAV_BYTES_PER_SECOND = 32_000  # 16 kHz, 16-bit, mono: the format Vaani publishes its audio in


def parse_ref(ref: str, revision: str | None) -> tuple[str, str | None]:
    """``id@rev`` pins a revision (beats ``--revision``); local paths are returned as given."""
    if "@" in ref and not Path(ref).expanduser().exists():
        ref, rev = ref.rsplit("@", 1)
        return ref, rev or revision
    return ref, revision


def group_parquet(paths: list[str]) -> dict[str, dict[str, list[str]]]:
    """{config: {split: [relative posix paths]}} for the parquet files of a snapshot (see the module docstring)."""
    layout: dict[str, dict[str, list[str]]] = {}
    for rel in sorted(p for p in paths if p.endswith(".parquet")):
        parts = list(PurePosixPath(rel).parts[:-1])
        if any(p.startswith(".") for p in parts):
            continue
        split = parts.pop() if parts and norm(parts[-1]) in SPLIT_NAMES else None
        if split is None:
            m = re.match(r"(train|validation|valid|dev|test)(?=[-_.])", PurePosixPath(rel).name, re.IGNORECASE)
            split = m.group(1).lower() if m else "train"
        folders = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)] or ["default"]
        for config in folders:
            layout.setdefault("default" if config == "data" else config, {}).setdefault(split, []).append(rel)
    return layout


class VaaniDataset:
    """One hub id or local snapshot directory."""

    def __init__(self, ref: str, revision: str | None, token: str | None):
        ref, self.revision = parse_ref(ref, revision)
        path = Path(ref).expanduser()
        self.local = path.is_dir()
        if not self.local and (ref.startswith(("/", ".", "~")) or ref.count("/") != 1):
            raise InputError(f"dataset {ref!r} is neither a local directory nor a hub id (owner/name)",
                             "pass a hub id such as ARTPARK-IISc/Vaani or the folder `hf download` wrote")
        self.ref = str(path.resolve()) if self.local else ref
        self._token = token
        self._files: tuple[dict, dict] | None = None  # (layout, {relative path: size})
        self._opened: dict[str, dict] = {}

    @property
    def page(self) -> str:
        return f"https://huggingface.co/datasets/{self.ref}"

    def describe(self) -> dict:
        return dict(ref=self.ref, revision=None if self.local else self.revision, local=self.local)

    def fingerprint(self) -> str:
        if not self.local:
            return f"{self.ref}@{self.revision or 'main'}"
        stats = [(rel, size, os.path.getmtime(Path(self.ref) / rel)) for rel, size in self._listing()[1].items()]
        return hashlib.sha256(json.dumps(sorted(stats)).encode()).hexdigest()

    # files -------------------------------------------------------------------------------------------------
    def _listing(self) -> tuple[dict, dict]:
        if self._files is None:
            if self.local:
                root = Path(self.ref)
                sizes = {str(f.relative_to(root).as_posix()): f.stat().st_size for f in root.rglob("*.parquet")}
            else:
                from huggingface_hub import HfApi

                with self.errors():
                    items = HfApi().list_repo_tree(self.ref, recursive=True, revision=self.revision,
                                                   repo_type="dataset", token=self._token)
                    sizes = {i.path: int(i.size) for i in items if getattr(i, "size", None) is not None}
            self._files = (group_parquet(list(sizes)), sizes)
        return self._files

    def files(self, config: str) -> dict[str, list[str]]:
        """{split: [parquet paths relative to the snapshot root]} of ``config`` ({} when none is found): the
        folder of that name, else the one folder whose last component matches (hub ``Kannada`` →
        ``audio/Kannada``)."""
        layout = self._listing()[0]
        if config in layout:
            return layout[config]
        last = norm(config.rsplit("/", 1)[-1])
        candidates = [c for c in layout if norm(c.rsplit("/", 1)[-1]) == last]
        return layout[candidates[0]] if len(candidates) == 1 else {}

    def file_bytes(self, config: str, split: str) -> int | None:
        files = self.files(config).get(split)
        return sum(self._listing()[1][f] for f in files) if files else None

    def url(self, rel: str) -> str:
        return f"hf://datasets/{self.ref}{'@' + quote(self.revision, safe='') if self.revision else ''}/{rel}"

    def parquet(self, rel: str):
        """A ``pyarrow.parquet.ParquetFile`` (read lazily: only the row groups and columns asked for)."""
        import pyarrow.parquet as pq

        if self.local:
            return pq.ParquetFile(Path(self.ref) / rel)
        from huggingface_hub import HfFileSystem

        return pq.ParquetFile(HfFileSystem(token=self._token).open(self.url(rel).removeprefix("hf://"), "rb"))

    # datasets ----------------------------------------------------------------------------------------------
    def configs(self) -> list[str]:
        import datasets

        if self.local:
            return sorted(self._listing()[0])
        with self.errors():
            return list(datasets.get_dataset_config_names(self.ref, revision=self.revision, token=self._token))

    def open(self, config: str) -> dict:
        """{split: IterableDataset} with audio/image columns left undecoded (bytes + path)."""
        if config not in self._opened:
            import datasets

            with self.errors():
                if self.local:
                    files = {s: [str(Path(self.ref) / f) for f in fs] for s, fs in self.files(config).items()}
                    found = datasets.load_dataset("parquet", data_files=files, streaming=True)
                else:
                    try:
                        found = datasets.load_dataset(self.ref, config, streaming=True, revision=self.revision,
                                                      token=self._token)
                    except ValueError as exc:
                        if "Invalid pattern" not in str(exc) or not self.files(config):
                            raise
                        found = datasets.load_dataset("parquet", streaming=True, token=self._token, data_files={
                            s: [self.url(f) for f in fs] for s, fs in self.files(config).items()})
                self._opened[config] = {split: _undecoded(ds) for split, ds in found.items()}
        return self._opened[config]

    def rows(self, config: str, split: str) -> Iterator[dict]:
        iterator = iter(self.open(config)[split])
        while True:
            with self.errors():
                row = next(iterator, None)
            if row is None:
                return
            yield row

    def check_access(self, config: str) -> None:
        """Read one row of ``config``: a gated refusal may only show when data is read."""
        for split in sorted(self.open(config)):
            for _ in self.rows(config, split):
                return

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Map ``datasets``/hub failures to one-line :class:`InputError`s (the token never appears)."""
        try:
            yield
        except AvasrError:
            raise
        except Exception as exc:
            raise access_error(self, exc) from None


def _undecoded(ds):
    from datasets import Audio, Image

    features = ds.features or {}
    for column, kind in (("audio", Audio), ("image", Image)):
        if isinstance(features.get(column), kind):
            ds = ds.cast_column(column, kind(decode=False))
    return ds


def _hub_says_gated(ds: VaaniDataset) -> bool | None:
    """Ask the hub whether the token may read ``ds``: True (refused), False (allowed), None (no answer)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        HfApi().auth_check(ds.ref, repo_type="dataset", token=ds._token)
    except RepositoryNotFoundError:  # GatedRepoError is one
        return True
    except Exception as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        return True if status in (401, 403) else None
    return False


def access_error(ds: VaaniDataset, exc: Exception) -> InputError:
    msg = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    if ds._token:
        msg = msg.replace(ds._token, "***")
    if ds.local:
        return InputError(f"cannot read the local dataset {ds.ref} ({msg})",
                          "point --dataset/--transcribed-dataset at a complete `hf download` snapshot")
    from huggingface_hub import get_token
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    status = getattr(getattr(exc, "response", None), "status_code", None)
    text = str(exc).lower()
    offline = "offline" in text
    gated = (isinstance(exc, (GatedRepoError, RepositoryNotFoundError)) or status in (401, 403)
             or any(w in text for w in ("gated", "restricted", "authenticat"))
             or type(exc).__name__ == "DatasetNotFoundError")
    if not gated and not offline and isinstance(exc, (ConnectionError, FileNotFoundError)):
        gated = _hub_says_gated(ds)
        if gated is False and isinstance(exc, FileNotFoundError):
            return InputError(f"a file of {ds.ref} cannot be read ({msg})",
                              "pin a revision that has it with --revision, or use a local snapshot")
    if gated:
        why = "your token was refused" if (ds._token or get_token()) else "no Hugging Face token was found"
        return InputError(f"access to {ds.ref} was refused: {why}",
                          f"accept the dataset terms at {ds.page} while logged in (each Vaani dataset is gated on its "
                          "own page), then run `hf auth login` or set HF_TOKEN (or pass --token)")
    if isinstance(exc, (ConnectionError, OSError, HfHubHTTPError)) or offline or "connect" in text:
        return InputError(f"cannot read {ds.ref} from the Hugging Face Hub ({msg})",
                          f"check the network (and HF_HUB_OFFLINE), or download a snapshot with `hf download "
                          f"{ds.ref} --repo-type dataset --local-dir DIR` and pass the folder instead of the id")
    return InputError(f"reading {ds.ref} failed ({msg})", "pin a known revision with --revision, or use a local snapshot")
