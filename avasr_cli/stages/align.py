"""``avasr align``: continued pretraining of a FastConformer encoder, towards a vision encoder's space
(image objective) or with NeMo's masked-token prediction on the same audio (audio-only control)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from avasr_cli.errors import ConfigError, InputError, PrerequisiteError, at_least_one, raise_problems
from avasr_cli.progress import Reporter
from avasr_cli.run import RunDir, write_json_atomic

OBJECTIVES = ("image", "audio-only")
LOSS_NAMES = ("clip", "siglip", "maxsim")


@dataclass(frozen=True)
class AlignConfig:
    objective: str = "image"
    vision: str = "auto"
    loss: str = "clip"
    init: str = "auto"
    max_steps: int = 300
    batch_size: int = 16
    accumulate: int = 1
    lr: float = 1e-3
    weight_decay: float = 1e-3
    warmup_steps: int = 30
    freeze_layers: int = 0
    heldout_images: float = 0.1
    seed: int = 0
    gpus: int = 0
    nodes: int = 1
    cpu_procs: int = 1
    precision: str = "auto"
    checkpoint_every: int = 100
    resume: bool = True
    workers: int = 2

    def validate(self) -> None:
        problems = []
        if self.objective not in OBJECTIVES:
            problems.append(f"--objective {self.objective!r} is not one of {', '.join(OBJECTIVES)}")
        if self.loss not in LOSS_NAMES:
            problems.append(f"--loss {self.loss!r} is not one of {', '.join(LOSS_NAMES)}")
        problems += at_least_one(self, ("max_steps", "batch_size", "accumulate", "checkpoint_every", "cpu_procs", "nodes"))
        if self.batch_size < 2:
            problems.append("--batch-size must be at least 2 (contrastive losses need negatives)")
        if not 0.0 <= self.heldout_images < 0.5:
            problems.append("--heldout-images must be in [0, 0.5)")
        if self.lr <= 0:
            problems.append("--lr must be positive")
        raise_problems(problems, "see `avasr align --help`")


@dataclass
class AlignResult:
    objective: str
    loss: str | None
    vision: str | None
    init: str
    steps: int
    batch_size: int
    effective_batch: int
    world_size: int
    train_pairs: int
    heldout_pairs: int
    final_loss: float | None
    recall_before: dict | None = None
    recall_after: dict | None = None
    seconds: float = 0.0
    step_seconds: float | None = None  # steady-state seconds per batch (data loading included)
    encoder_dir: str = ""
    vision_untrained: bool = False
    history: list = field(default_factory=list)


def resolve_init(run: RunDir, init: str) -> str:
    if init != "auto":
        return init
    prepare = run.stage("prepare") or {}
    if prepare.get("config", {}).get("source", "builtin") == "builtin":
        return "tiny"
    raise ConfigError("--init is required for this corpus",
                      "pass a .nemo file or a NeMo pretrained name, e.g. --init nvidia/stt_kn_fastconformer_hybrid_large_pc")


def split_heldout(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Hold out whole images (all their pairs), so recall measures pairs never seen in training."""
    import numpy as np

    images = sorted({r.get("image_sha256", "") for r in rows})
    rng = np.random.default_rng(seed)
    n = int(round(len(images) * fraction))
    held = set(rng.choice(images, size=n, replace=False).tolist()) if n else set()
    return [r for r in rows if r.get("image_sha256") not in held], [r for r in rows if r.get("image_sha256") in held]


def load_features(run: RunDir, cfg: AlignConfig, rows: list[dict]) -> tuple[dict[str, int], dict]:
    """Check the run's feature store covers ``rows`` → (image sha → int id, features.json)."""
    from avasr_cli.vision.store import FeatureStore

    path = run.root / "features.json"
    if not path.exists() or run.stage("embed-images") is None:
        raise PrerequisiteError(f"run directory {run.root} has no image features",
                                f"run `avasr embed-images --vision {cfg.vision if cfg.vision != 'auto' else 'siglip2'}` first")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        int(info.get("dim", 0))
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not a valid features record ({exc})",
                         "rerun `avasr embed-images --force` to rewrite it") from None
    if cfg.vision != "auto" and cfg.vision not in (info.get("vision"), info.get("model_id")):
        raise ConfigError(f"--vision {cfg.vision}: this run's features were made with {info.get('vision') or info.get('model_id')}",
                          f"run `avasr embed-images --vision {cfg.vision}` (use --force to replace them) or drop --vision")
    store = FeatureStore.open(info["store"])
    keys = sorted({r["image_sha256"] for r in rows})
    missing = store.missing(keys)
    if missing:
        raise InputError(f"{len(missing)} image(s) of the alignment set have no features in {info['store']}",
                         "rerun `avasr embed-images` (it embeds only what is missing)")
    if store.dim != int(info.get("dim", store.dim)):
        raise InputError(f"{path} says features have dimension {info.get('dim')}, but the store {info['store']} "
                         f"holds dimension {store.dim}", "rerun `avasr embed-images --force` to rewrite features.json")
    return {k: i for i, k in enumerate(keys)}, info


def run_align(run: RunDir, cfg: AlignConfig, rep: Reporter | None = None) -> AlignResult:
    rep = rep or Reporter()
    cfg.validate()
    import torch

    from avasr_cli.data.manifest import read_manifest
    from avasr_cli.models.align_module import AlignModule, retrieval_recall
    from avasr_cli.models.fastconformer import load_init
    from avasr_cli.models.trainer import (ReporterCallback, checkpoints_for, make_trainer, quiet_libraries,
                                          resolve_hardware, teardown_distributed)

    quiet_libraries()
    run.require("prepare", "run `avasr prepare` first")
    hw = resolve_hardware(cfg.gpus, cfg.nodes, cfg.cpu_procs, cfg.precision)
    rows = [r for r in read_manifest(run.manifest("align")) if r.get("image_sha256") or cfg.objective != "image"]
    if len(rows) < cfg.batch_size * hw.world_size:
        raise InputError(f"{run.manifest('align')} has {len(rows)} usable pairs, fewer than one global batch "
                         f"({cfg.batch_size} x {hw.world_size} processes)", "lower --batch-size or prepare more data")
    train_rows, held_rows = split_heldout(rows, cfg.heldout_images, cfg.seed)
    index, info = {}, {}
    if cfg.objective == "image":  # checked before the encoder loads: a bad feature store fails fast
        index, info = load_features(run, cfg, rows)
    init = resolve_init(run, cfg.init)
    bundle = load_init(init, seed=cfg.seed)
    rep.log(f"encoder: {bundle.source} (d_model {bundle.d_model}, {bundle.encoder['n_layers']} layers)")
    if info:
        rep.log(f"vision features: {info.get('label') or info.get('model_id')} (dim {info['dim']}, "
                f"{info.get('num_patches')} patches, {len(index)} images)")
    torch.manual_seed(cfg.seed)
    module = AlignModule(bundle, objective=cfg.objective, loss=cfg.loss, vision_dim=int(info.get("dim", 0)),
                         rows=train_rows, image_index=index, store_path=info.get("store"), batch_size=cfg.batch_size,
                         lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps, max_steps=cfg.max_steps,
                         seed=cfg.seed, freeze_layers=cfg.freeze_layers, num_workers=cfg.workers)
    recall_before = None
    if cfg.objective == "image" and held_rows:
        recall_before = retrieval_recall(module, held_rows)
        rep.log(f"held-out recall before: a→i R@1 {recall_before['a2i_r@1']:.3f}, R@5 {recall_before['a2i_r@5']:.3f}")

    ckpt_dir = run.align_dir / "checkpoints"
    resume = checkpoints_for(ckpt_dir, asdict(cfg), rep)
    if resume:
        rep.log(f"resuming from {resume}")
    start = time.time()
    with rep.task(f"align ({cfg.objective}{'' if cfg.objective != 'image' else ', ' + cfg.loss})", total=cfg.max_steps) as task:
        progress = ReporterCallback(task)
        trainer = make_trainer(hw, max_steps=cfg.max_steps, ckpt_dir=ckpt_dir, every=cfg.checkpoint_every,
                               callbacks=[progress], accumulate=cfg.accumulate)
        trainer.fit(module, ckpt_path=str(resume) if resume else None)
    seconds = time.time() - start
    final_loss = trainer.callback_metrics.get("train_loss")
    teardown_distributed()
    if trainer.global_rank != 0:
        raise SystemExit(0)  # only rank 0 writes the outputs

    recall_after = None
    if cfg.objective == "image" and held_rows:
        recall_after = retrieval_recall(module.cpu(), held_rows)
        rep.log(f"held-out recall after:  a→i R@1 {recall_after['a2i_r@1']:.3f}, R@5 {recall_after['a2i_r@5']:.3f}")
        write_json_atomic(run.align_dir / "recall.json", {"before": recall_before, "after": recall_after})

    bundle.state_dict = {k: v.detach().cpu().clone() for k, v in module.encoder.state_dict().items()}
    history_entry = {"stage": "align", "objective": cfg.objective, "loss": cfg.loss if cfg.objective == "image" else None,
                     "vision": info.get("vision") or info.get("model_id"), "vision_untrained": bool(info.get("untrained")),
                     "steps": cfg.max_steps, "effective_batch": cfg.batch_size * cfg.accumulate * hw.world_size,
                     "init": bundle.source, "run": str(run.root)}
    bundle.history = list(bundle.history) + [history_entry]
    bundle.save(run.align_dir / "encoder")
    return AlignResult(
        objective=cfg.objective, loss=cfg.loss if cfg.objective == "image" else None,
        vision=info.get("vision") or info.get("model_id"), init=bundle.source, steps=int(trainer.global_step),
        batch_size=cfg.batch_size, effective_batch=cfg.batch_size * cfg.accumulate * hw.world_size,
        world_size=hw.world_size, train_pairs=len(train_rows), heldout_pairs=len(held_rows),
        final_loss=float(final_loss) if final_loss is not None else None, recall_before=recall_before,
        recall_after=recall_after, seconds=round(seconds, 1), step_seconds=progress.step_seconds,
        encoder_dir=str(run.align_dir / "encoder"),
        vision_untrained=bool(info.get("untrained", False)),
        history=bundle.history,
    )


def describe(result: dict) -> str:
    r = result
    line = f"aligned encoder ({r['objective']}) after {r['steps']} steps → {r['encoder_dir']}"
    if r.get("recall_after"):
        b, a = r["recall_before"], r["recall_after"]
        line += (f"\nheld-out audio→image R@1 {b['a2i_r@1']:.3f} → {a['a2i_r@1']:.3f}, "
                 f"R@5 {b['a2i_r@5']:.3f} → {a['a2i_r@5']:.3f} (chance R@1 {a['chance_a2i_r@1']:.3f})")
    return line


__all__ = ["AlignConfig", "AlignResult", "run_align", "describe"]
