"""Stage ``embed-images``: embed every image named in the run's manifests into the shared feature store.

Images are decoded (PIL) and preprocessed in DataLoader workers while the model runs; features are
written in shards, so a killed run resumes and a rerun is all cache hits. The run directory gets
``features.json`` naming the store that ``align`` reads.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time

from avasr_cli.errors import AvasrError, ConfigError, InputError, raise_problems
from avasr_cli.progress import Reporter
from avasr_cli.run import RunDir, write_json_atomic
from avasr_cli.vision.images import ImageFiles, PreprocessBatch, collect_images

SHARD_IMAGES = 1024  # images per shard (commit unit of a resumable run) ...
SHARD_BYTES = 256 << 20  # ... or fewer when their fp16 patches reach this size (big models keep RAM bounded)
SHARD_SECONDS = 60.0  # ... or at least one shard a minute, whichever comes first
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclasses.dataclass(frozen=True)
class EmbedConfig:
    vision: str = "auto"
    revision: str | None = None
    batch_size: int = 32
    device: str = "auto"
    patch_pool: int = 0
    trust_remote_code: bool = False
    workers: int = 2
    verify: bool = False  # check every store shard's checksums (reads the whole store) before embedding
    shard_images: int = SHARD_IMAGES  # images per committed shard: what a killed run keeps
    gpus: int = 0  # > 1: one process per GPU (DDP launch), each embedding its own part of the images
    nodes: int = 1
    cpu_procs: int = 1  # with gpus 0: CPU processes, mostly for testing

    def validate(self) -> None:
        from avasr_cli.vision.registry import REGISTRY, is_known

        problems = []
        if self.vision != "auto" and not is_known(self.vision):
            problems.append(f"unknown vision encoder {self.vision!r}: not a registry name ({', '.join(REGISTRY)}), "
                            "a hub id (owner/name) or an existing directory")
        if not 1 <= self.batch_size <= 65536:
            problems.append(f"--batch-size must be at least 1 (got {self.batch_size})")
        if not _DEVICE.match(str(self.device)):
            problems.append(f"--device must be auto, cpu, mps, cuda or cuda:N (got {self.device!r})")
        if self.patch_pool < 0:
            problems.append(f"--patch-pool must be 0 (off) or a grid side K ≥ 1 (got {self.patch_pool})")
        if self.workers < 0:
            problems.append(f"--workers must be 0 or more (got {self.workers})")
        if self.revision is not None and not str(self.revision).strip():
            problems.append("--revision must not be empty")
        if self.shard_images < 1:
            problems.append(f"--shard-images must be at least 1 (got {self.shard_images})")
        if self.gpus < 0 or self.nodes < 1 or self.cpu_procs < 1:
            problems.append("--gpus must be 0 or more, --nodes and --cpu-procs at least 1")
        if self.gpus > 0 and self.device not in ("auto", "cuda"):
            problems.append(f"--device {self.device} contradicts --gpus {self.gpus}: each process uses its own GPU; drop --device")
        raise_problems(problems, "see `avasr embed-images --help` (and --list for the encoders)")


@dataclasses.dataclass
class EmbedResult:
    vision: str  # the registry name / hub id / directory asked for (after resolving "auto")
    store: str  # feature store directory
    store_key: str
    model_id: str
    revision: str | None
    label: str
    untrained: bool  # random weights (compare flags runs aligned to such features)
    family: str  # the adapter that loaded it: "hf" (transformers towers) or "efficientnet"
    pretrained: bool | None  # None: not known (a generic backbone)
    text_aligned: bool | None
    kind: str  # e.g. "ImageNet-pretrained CNN, not text-aligned"
    weights_source: str
    available_offline: bool | None  # the weights were found without the network
    dim: int
    num_patches: int
    grid: list[int]
    layer: int
    pooling: str
    patch_pool: int
    dtype: str
    device: str
    images: int  # unique images named by the manifests (by content hash)
    embedded: int  # computed in this run
    cached: int  # already in the store
    skipped: int  # unreadable or corrupt images (not embedded)
    skipped_images: list[dict]  # {"path", "sha256", "reason"}
    rows_without_image: int
    shards: dict  # store shard → how many of this run's images it holds (align names a lost one)
    inputs: dict  # embed_inputs() when the stage finished: a rerun repairs a store that lost shards since
    processes: int  # how many processes embedded (world size)
    seconds: float
    images_per_s: float


def embed_inputs(run: RunDir, cfg: EmbedConfig) -> dict:
    """What a finished embed-images must still find for a rerun to skip it: the manifests it read, and its
    images whole in the store (a shard lost or damaged since makes the rerun repair the store)."""
    from avasr_cli.run import input_fingerprint
    from avasr_cli.vision.store import FeatureStore

    try:
        record = json.loads((run.root / "features.json").read_text(encoding="utf-8"))
        store = FeatureStore.open(record["store"])
        shards = record.get("shards") if isinstance(record.get("shards"), dict) else {}
    except (OSError, ValueError, KeyError, TypeError, AvasrError):
        return {**input_fingerprint(_manifests(run)), "feature store": "unreadable"}
    return _inputs(run, store, shards)


def _manifests(run: RunDir) -> dict:
    return {p.name: p for p in sorted(run.data.glob("*.jsonl"))}


def _inputs(run: RunDir, store, shards: dict) -> dict:
    """The manifests' hashes and the health of ``store``'s ``shards`` (shard name → images of this run)."""
    from avasr_cli.run import input_fingerprint

    held = sum(1 for name in shards if (store.path / name).is_dir() and str(store.path / name) not in store.damaged)
    return {**input_fingerprint(_manifests(run)), "store shards lost or damaged": len(shards) - held,
            "damaged shards in the store": len(store.damaged)}


def resolve_vision(run: RunDir, cfg: EmbedConfig) -> str:
    """``auto`` → ``efficientnet-lite0`` for the built-in corpus (ImageNet-pretrained, from a pip package, no
    network), else ``siglip2``."""
    prep = run.require("prepare", hint="run `avasr prepare` first")
    if cfg.vision != "auto":
        return cfg.vision
    source = (prep.get("config") or {}).get("source")
    return "efficientnet-lite0" if source == "builtin" else "siglip2"


# --------------------------------------------------------------------------------------------- stage
def run_embed_images(run: RunDir, cfg: EmbedConfig, rep: Reporter | None = None) -> EmbedResult:
    """Embed the run's missing images. With several processes (``--gpus N``/``--cpu-procs N``/``--nodes M``
    or torchrun/SLURM) rank ``r`` of ``W`` embeds missing images ``r, r + W, …`` (in manifest order) and
    commits its own shards into the one store; rank 0 alone tidies the store first and writes
    ``features.json`` once every rank is done."""
    from avasr_cli.models.trainer import launch_processes
    from avasr_cli.vision.encoder import inspect_vision_model, load_inspected
    from avasr_cli.vision.store import FeatureStore, store_key, store_path

    rep = rep or Reporter()
    cfg.validate()
    vision = resolve_vision(run, cfg)
    images, skipped, no_image = collect_images(run)
    if not images:
        if skipped:
            raise InputError(f"none of the {len(skipped)} images named in {run.data} can be read "
                             f"(first: {skipped[0]['path']}: {skipped[0]['reason']})", "check the image paths in the manifests")
        raise InputError(f"no manifest row in {run.data} names an image",
                         "manifests need image_filepath (or image_path, image, referenceImage) on their rows")
    info, config = inspect_vision_model(vision, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    fabric = launch_processes(cfg.gpus, cfg.nodes, cfg.cpu_procs, "embed-images")
    rank, world = (fabric.global_rank, fabric.world_size) if fabric is not None else (0, 1)
    barrier = fabric.barrier if fabric is not None else (lambda: None)
    if info.untrained:
        rep.warn(f"{info.label}: features from an UNTRAINED model carry no visual meaning")
    else:
        rep.log(f"vision encoder {info.label}: {info.kind}; weights from {info.weights_source}")
    key = {"model_id": info.model_id, "revision": info.revision, "layer": info.layer, "pooling": info.pooling,
           "patch_pool": cfg.patch_pool}
    path = store_path(key)
    if rank == 0 and (path / "store.json").is_file():  # one process tidies, the others wait for it
        store = FeatureStore.open(path)
        if cfg.verify:
            rep.log(f"verifying the checksums of {path}")
            store.verify()
        reasons = dict(store.damaged)
        for shard in store.remove_damaged():  # their images are missing now, and embedded again below
            why = reasons.get(shard, "damaged")
            rep.warn(f"removed damaged feature shard {shard} ({why}): its images are embedded again")
    barrier()
    store = FeatureStore.open(path) if (path / "store.json").is_file() else None
    # rank 0 decides what is missing and tells the others: every rank must take the same branch and split
    # the same list, even while another job writes into the shared store
    todo = _shared(fabric, store.missing(images) if store is not None else list(images))
    device, embedded, seconds, found_bad = cfg.device, 0, 0.0, []
    if todo:
        enc = load_inspected(info, config, device=str(fabric.device) if fabric is not None else cfg.device,
                             trust_remote_code=cfg.trust_remote_code)
        device = str(enc.device)
        grid = list(enc.grid)
        if cfg.patch_pool > min(grid):
            raise ConfigError(f"--patch-pool {cfg.patch_pool} exceeds the {grid[0]}×{grid[1]} patch grid of {info.model_id}",
                              f"use a K between 1 and {min(grid)}, or 0 to keep every patch")
        if cfg.patch_pool:
            grid = [cfg.patch_pool, cfg.patch_pool]
        meta = {**key, **_describe(info), "arch": info.arch, "dim": enc.dim, "num_patches": grid[0] * grid[1],
                "grid": grid}
        if rank == 0:
            store = FeatureStore.open_or_create(None, meta)
        barrier()
        store = FeatureStore.open_or_create(None, meta) if rank else store
        todo = _shared(fabric, store.missing(images))
        mine = todo[rank::world]
        where = f" (rank 0 of {world}: {len(mine)} of them)" if world > 1 else ""
        rep.log(f"{len(images) - len(todo)} of {len(images)} images cached; embedding {len(todo)} with {info.label} "
                f"on {device}{where}")
        embedded, seconds = _embed(enc, store, [(s, images[s]) for s in mine], cfg, rep, found_bad)
    if fabric is not None:  # every rank's count, time and undecodable images, for rank 0's record
        import torch.distributed as dist

        from avasr_cli.models.trainer import teardown_distributed

        parts: list = [None] * world
        dist.all_gather_object(parts, (embedded, seconds, found_bad))
        teardown_distributed()
        if rank:
            raise SystemExit(0)
        embedded, seconds = sum(p[0] for p in parts), max(p[1] for p in parts)
        found_bad = [b for p in parts for b in p[2]]
    skipped += found_bad
    store.refresh()  # the other ranks' shards
    if not todo:
        rep.log(f"all {len(images)} images cached in {path}")
    for item in skipped:
        rep.warn(f"skipped image {item['path']}: {item['reason']}")
    skipped_shas = {s["sha256"] for s in skipped if s["sha256"]}
    if not set(images) - skipped_shas:
        raise InputError(f"none of the {len(skipped)} images named in {run.data} can be decoded "
                         f"(first: {skipped[0]['path']}: {skipped[0]['reason']})",
                         "check the image files (a file that opens but fails to decode is corrupt)")
    shards = store.shards_of(images)
    result = EmbedResult(
        vision=vision, store=str(store.path), store_key=store_key(key), model_id=info.model_id, revision=info.revision,
        **_describe(info), dim=store.dim, num_patches=store.num_patches,
        grid=list(store.meta.get("grid") or []), layer=info.layer, pooling=info.pooling, patch_pool=cfg.patch_pool,
        dtype="float16", device=device, images=len(images), embedded=embedded,
        cached=len(images) - embedded - len(skipped_shas & set(images)), skipped=len(skipped), skipped_images=skipped,
        rows_without_image=no_image, shards=shards, inputs=_inputs(run, store, shards), processes=world, seconds=round(seconds, 3),
        images_per_s=round(embedded / seconds, 2) if seconds > 0 else 0.0,
    )
    write_json_atomic(run.root / "features.json", dataclasses.asdict(result))
    return result


def _shared(fabric, value):
    """``value`` as rank 0 has it, on every rank (one process: ``value``)."""
    if fabric is None:
        return value
    import torch.distributed as dist

    box = [value if fabric.global_rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _describe(info) -> dict:
    """What the features are, as every record (features.json, the stage result, store.json) states it."""
    return {"label": info.label, "untrained": info.untrained, "family": info.family, "pretrained": info.pretrained,
            "text_aligned": info.text_aligned, "kind": info.kind, "weights_source": info.weights_source,
            "available_offline": info.available_offline}


def _embed(enc, store, items, cfg: EmbedConfig, rep: Reporter, skipped: list) -> tuple[int, float]:
    """The embedding loop: decode in workers, forward in this process, commit a shard every so often."""
    import numpy as np
    import torch

    from avasr_cli.vision.encoder import pool_patches
    from avasr_cli.vision.store import FP16_MAX

    loader = torch.utils.data.DataLoader(
        ImageFiles(items), batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.workers,
        collate_fn=PreprocessBatch(enc.preprocessor), prefetch_factor=4 if cfg.workers else None,
    )
    pending: list[tuple] = []  # (shas, pooled fp16, patches fp16) of batches not yet in a shard
    done = 0

    def fp16(x):
        return np.clip(x.numpy(), -FP16_MAX, FP16_MAX).astype(np.float16)

    def flush() -> None:
        batch, pending[:] = list(pending), []
        if batch:
            store.write_shard([k for b in batch for k in b[0]], np.concatenate([b[1] for b in batch]),
                              np.concatenate([b[2] for b in batch]))

    t0 = last = time.perf_counter()
    with rep.task("embedding images", total=len(items), unit="img") as task:
        try:
            for shas, inputs, bad in loader:
                skipped.extend(bad)
                if shas:
                    pooled, patches = enc.forward(inputs)
                    if cfg.patch_pool:
                        patches = pool_patches(patches, enc.grid, cfg.patch_pool)
                    pending.append((shas, fp16(pooled), fp16(patches)))
                    done += len(shas)
                task.advance(len(shas) + len(bad))
                now = time.perf_counter()
                task.update(img_s=f"{done / max(now - t0, 1e-9):.1f}")
                n_pending, n_bytes = sum(len(p[0]) for p in pending), sum(p[2].nbytes for p in pending)
                if n_pending >= cfg.shard_images or n_bytes >= SHARD_BYTES or now - last >= SHARD_SECONDS:
                    flush()
                    last = now
        finally:
            flush()  # keep what was finished, even when interrupted
    return done, time.perf_counter() - t0
