"""Audio batches for alignment: audio decoded in DataLoader workers, batches of similar duration
(bucketing), image keys attached so features are read from the memory-mapped store per batch."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from avasr_cli.errors import InputError


def read_clip(row: dict, sample_rate: int = 16000) -> np.ndarray:
    """A manifest row's audio: its file, or its bytes inside an audio shard (``avasr_cli.data.shards``)."""
    from avasr_cli.data.shards import is_sharded, read_member

    if not is_sharded(row):
        return read_audio(row["audio_filepath"], sample_rate)
    import io


    return read_audio(io.BytesIO(read_member(row)), sample_rate, name=f"{row['tar_filepath']}:{row['audio_filepath']}")


def read_audio(path, sample_rate: int = 16000, name: str | None = None) -> np.ndarray:
    import soundfile as sf

    try:
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / OSError
        raise InputError(f"cannot decode audio {name or path} ({exc})", "rerun `avasr prepare --force` or fix the file") from exc
    if sr != sample_rate:
        raise InputError(f"audio {name or path} is {sr} Hz, expected {sample_rate} Hz", "resample to 16 kHz (avasr prepare does this)")
    return audio.mean(axis=1)


class PairDataset(Dataset):
    """Rows of a manifest → (audio float32, image index, image sha256). ``image_index`` maps sha → int."""

    def __init__(self, rows: list[dict], image_index: dict[str, int] | None = None):
        self.rows = rows
        self.image_index = image_index or {}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        row = self.rows[i]
        sha = row.get("image_sha256", "")
        return torch.from_numpy(read_clip(row)), self.image_index.get(sha, -1), sha


class PairCollate:
    """Pads audio and reads the batch's image features from the memory-mapped feature store (in the
    DataLoader worker, so feature reads overlap the encoder step). Batches are
    ``(audio [B, S], lengths [B], image_ids [B], pooled [B, D] | None, patches [B, P, D] | None)``."""

    def __init__(self, store_path: str | None = None, patches: bool = False):
        self.store_path, self.patches = store_path, patches
        self._store = None

    def __getstate__(self):
        return {"store_path": self.store_path, "patches": self.patches, "_store": None}

    def features(self, shas: list[str]):
        if self.store_path is None:
            return None, None
        if self._store is None:
            from avasr_cli.vision.store import FeatureStore

            self._store = FeatureStore.open(self.store_path)
        pooled, patches = self._store.lookup(shas, patches=self.patches)
        return torch.from_numpy(pooled), (torch.from_numpy(patches) if patches is not None else None)

    def __call__(self, items):
        audios, images, shas = zip(*items)
        lengths = torch.tensor([a.shape[0] for a in audios], dtype=torch.long)
        batch = torch.zeros(len(audios), int(lengths.max()))
        for i, a in enumerate(audios):
            batch[i, : a.shape[0]] = a
        pooled, patches = self.features(list(shas))
        return batch, lengths, torch.tensor(images, dtype=torch.long), pooled, patches


def collate(items):
    """Audio only: ``(audio [B, S], lengths [B], image_ids [B])``."""
    return PairCollate()(items)[:3]


class BucketBatchSampler(Sampler):
    """Fixed-size batches of similar duration, shuffled by a seed that changes each epoch.

    Sorting within pools of ``pool`` batches keeps padding low; every rank sees ``len(self)`` batches of
    exactly ``batch_size`` (the last partial batch is dropped) so features can be all-gathered. A pool
    never spans more than a quarter of the data: were one pool to hold every clip, sorting it would give
    the same batches (the same in-batch negatives) in every epoch, only in another order.

    Lightning calls ``set_epoch`` only on a DataLoader's ``sampler`` and ``batch_sampler.sampler``, never
    on a batch sampler: the module that owns one calls :meth:`set_epoch` at each epoch start.
    """

    def __init__(self, durations: list[float], batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 pool: int = 8):
        self.durations = np.asarray(durations)
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world_size
        self.pool = pool
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])  # seed + epoch would give seed 1 seed 0's epoch 1
        order = rng.permutation(len(self.durations))
        pool = max(1, min(self.pool, len(self.durations) // (4 * self.batch_size)))
        chunk = self.batch_size * pool
        batches: list[list[int]] = []
        for start in range(0, len(order), chunk):
            block = order[start : start + chunk]
            block = block[np.argsort(self.durations[block], kind="stable")]
            batches += [block[i : i + self.batch_size].tolist() for i in range(0, len(block), self.batch_size)]
        batches = [b for b in batches if len(b) == self.batch_size]
        rng.shuffle(batches)
        usable = len(batches) - len(batches) % self.world
        return batches[self.rank : usable : self.world]

    def __iter__(self):
        return iter(self._batches())

    def __len__(self) -> int:
        return (len(self.durations) // self.batch_size) // self.world
