"""The images a run names, as ``embed-images`` reads them: every manifest's image field collected and keyed
by content hash (:func:`collect_images`), decoded with Pillow (:class:`ImageFiles`: a file that cannot be
read or decoded is reported, never raised) and preprocessed per batch in DataLoader workers
(:class:`PreprocessBatch`: an image the processor rejects is isolated)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from avasr_cli.data.manifest import image_field, read_manifest
from avasr_cli.errors import InputError
from avasr_cli.run import RunDir, sha256_file


@dataclass(frozen=True)
class TarMember:
    """A picture inside an image tar (the built-in corpus in the shards layout): read by offset, never
    unpacked to a file."""

    tar: str
    name: str
    offset: int
    size: int

    def __str__(self) -> str:
        return f"{self.tar}:{self.name}"

    def read(self) -> bytes:
        from avasr_cli.data.tars import read_at

        return read_at(self.tar, self.offset, self.size, self.name)


def collect_images(run: RunDir) -> tuple[dict[str, str], list[dict], int]:
    """Unique ``image_sha256 → path`` over every manifest, images that cannot be read, rows without image."""
    manifests = sorted(run.data.glob("*.jsonl"))
    if not manifests:
        raise InputError(f"no manifests (*.jsonl) in {run.data}", "run `avasr prepare` first")
    recorded = (((run.stage("prepare") or {}).get("result") or {}).get("manifests")) or {}
    lost = [str(run.manifest(split)) for split in recorded if not run.manifest(split).is_file()]
    if lost:  # embedding what is left would leave the lost split's images out without a word
        raise InputError(f"manifest {lost[0]} is missing (prepare wrote it)" + (f", and {len(lost) - 1} more" if len(lost) > 1 else ""),
                         "restore it, or rerun `avasr prepare --force`")
    images: dict[str, str] = {}
    skipped: dict[str, dict] = {}
    hashed: dict[str, str] = {}
    tars: dict[str, dict | str] = {}  # image tar → its members' (offset, size), or why it cannot be read
    no_image = 0
    for manifest in manifests:
        for row in read_manifest(manifest, require=()):
            key = image_field(row)
            if key is None:
                no_image += 1
                continue
            if row.get("image_tar_filepath") and row.get("image_sha256"):
                sha, tar = str(row["image_sha256"]), str(row["image_tar_filepath"])
                if sha in images:
                    continue
                if tar not in tars:
                    tars[tar] = _tar_members(tar)
                where = tars[tar].get(str(row[key])) if isinstance(tars[tar], dict) else None
                if where is None:
                    reason = tars[tar] if isinstance(tars[tar], str) else f"{row[key]} is not in the tar"
                    skipped.setdefault(f"{tar}:{row[key]}", {"path": f"{tar}:{row[key]}", "sha256": sha, "reason": reason})
                    continue
                images[sha] = TarMember(tar, str(row[key]), *where)
                continue
            path = Path(str(row[key])).expanduser()
            if not path.is_absolute():
                path = manifest.parent / path
            spath = str(path)
            sha = row.get("image_sha256") or hashed.get(spath)
            if not sha:
                try:
                    sha = hashed[spath] = sha256_file(path)
                except OSError as exc:
                    skipped.setdefault(spath, {"path": spath, "sha256": None, "reason": f"cannot read: {exc.strerror or exc}"})
                    continue
            images.setdefault(sha, spath)
    return images, list(skipped.values()), no_image


def _tar_members(tar: str) -> dict | str:
    from avasr_cli.data.tars import members

    try:
        return members(Path(tar), what="image tar")
    except InputError as exc:
        return f"{exc.message}; {exc.hint}"


class ImageFiles:
    """Dataset of (sha, path) decoded with PIL; a failure is returned, never raised."""

    def __init__(self, items: list[tuple[str, str]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        import io
        import warnings

        from PIL import Image

        sha, path = self.items[i]
        try:
            with warnings.catch_warnings():  # over MAX_IMAGE_PIXELS Pillow only warns, then decodes it all
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(path.read()) if isinstance(path, TarMember) else path) as im:
                    im.load()
                    return sha, str(path), im.convert("RGB"), None
        except Exception as exc:  # missing, truncated, not an image, decompression bomb...
            return sha, str(path), None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


class PreprocessBatch:
    """Runs in the worker: preprocess the decoded images of a batch; isolate images the processor rejects."""

    def __init__(self, preprocessor):
        self.preprocessor = preprocessor

    def __call__(self, items):
        bad = [{"path": p, "sha256": s, "reason": r} for s, p, im, r in items if im is None]
        good = [(s, p, im) for s, p, im, r in items if im is not None]
        try:
            return [s for s, _, _ in good], (self.preprocessor([im for _, _, im in good]) if good else None), bad
        except Exception:
            kept = []
            for s, p, im in good:
                try:
                    self.preprocessor([im])
                    kept.append((s, p, im))
                except Exception as exc:
                    bad.append({"path": p, "sha256": s, "reason": f"preprocessing failed: {type(exc).__name__}: {exc}"})
            return [s for s, _, _ in kept], (self.preprocessor([im for _, _, im in kept]) if kept else None), bad
