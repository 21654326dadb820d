"""The images a run names, as ``embed-images`` reads them: every manifest's image field collected and keyed
by content hash (:func:`collect_images`), decoded with Pillow (:class:`ImageFiles`: a file that cannot be
read or decoded is reported, never raised) and preprocessed per batch in DataLoader workers
(:class:`PreprocessBatch`: an image the processor rejects is isolated)."""

from __future__ import annotations

from pathlib import Path

from avasr_cli.data.manifest import image_field, read_manifest
from avasr_cli.errors import InputError
from avasr_cli.run import RunDir, sha256_file


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
    no_image = 0
    for manifest in manifests:
        for row in read_manifest(manifest, require=()):
            key = image_field(row)
            if key is None:
                no_image += 1
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


class ImageFiles:
    """Dataset of (sha, path) decoded with PIL; a failure is returned, never raised."""

    def __init__(self, items: list[tuple[str, str]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        import warnings

        from PIL import Image

        sha, path = self.items[i]
        try:
            with warnings.catch_warnings():  # over MAX_IMAGE_PIXELS Pillow only warns, then decodes it all
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    im.load()
                    return sha, path, im.convert("RGB"), None
        except Exception as exc:  # missing, truncated, not an image, decompression bomb...
            return sha, path, None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


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
