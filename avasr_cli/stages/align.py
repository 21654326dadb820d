"""``avasr align``: continued pretraining of a FastConformer encoder, towards a vision encoder's space
(image objective) or with NeMo's masked-token prediction on the same audio (audio-only control)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

from avasr_cli.errors import ConfigError, InputError, at_least_one, raise_problems
from avasr_cli.models.pairs import recall_sample, recall_verdict, shuffle_pairs, split_heldout
from avasr_cli.models.param_groups import group_problems
from avasr_cli.models.start import resolve_init
from avasr_cli.models.ssl import SSL_BLOCK_SIZE, SSL_CODEBOOK_SIZE, SSL_MASK_PROB, ssl_problems, ssl_settings
from avasr_cli.progress import Reporter
from avasr_cli.run import RunDir, write_json_atomic
from avasr_cli.vision.features import load_features

OBJECTIVES = ("image", "audio-only")
LOSS_NAMES = ("clip", "siglip", "maxsim")
PAIRS = ("true", "shuffled")


@dataclass(frozen=True)
class AlignConfig:
    objective: str = "image"
    vision: str = "auto"
    loss: str = "clip"
    pairs: str = "true"  # shuffled: the negative control (every clip paired with another clip's image)
    init: str = "auto"
    max_steps: int = 300
    batch_size: int = 16
    accumulate: int = 1
    lr: float = 1e-3
    weight_decay: float = 1e-3
    warmup_steps: int = 30
    head_lr_ratio: float = 1.0  # the new head's (and temperature's) rate over the encoder's
    layer_decay: float = 1.0  # 1 = every encoder layer at --lr
    align_layer: int = -1  # the conformer layer aligned (negative: from the last)
    freeze_layers: int = 0
    heldout_images: float = 0.1
    recall_pairs: int = 1000  # held-out pairs (and as many training pairs) scored for recall: a fixed pool size
    seed: int = 0
    gpus: int = 0
    nodes: int = 1
    cpu_procs: int = 1
    precision: str = "auto"
    checkpoint_every: int = 100
    resume: bool = True
    workers: int = 2
    # siglip's initial logit bias; None = the log prior odds of a positive pair in the global batch,
    # -ln(batch × world - 1) (see siglip_init_bias)
    siglip_bias: float | None = None
    # audio-only control (NeMo NEST / BEST-RQ recipe values; see models/ssl.py)
    ssl_mask_prob: float = SSL_MASK_PROB
    ssl_block_size: int = SSL_BLOCK_SIZE
    ssl_codebook_size: int = SSL_CODEBOOK_SIZE

    def ssl_settings(self) -> dict:
        return ssl_settings(self)

    @staticmethod
    def upgrade_record(config: dict) -> dict:
        """An align config recorded before ``siglip_bias`` existed: siglip runs then started at -10."""
        if "siglip_bias" not in config and config.get("loss") == "siglip" and config.get("objective", "image") == "image":
            return {**config, "siglip_bias": -10.0}
        return config

    def validate(self) -> None:
        problems = []
        if self.objective not in OBJECTIVES:
            problems.append(f"--objective {self.objective!r} is not one of {', '.join(OBJECTIVES)}")
        if self.loss not in LOSS_NAMES:
            problems.append(f"--loss {self.loss!r} is not one of {', '.join(LOSS_NAMES)}")
        if self.pairs not in PAIRS:
            problems.append(f"--pairs {self.pairs!r} is not one of {', '.join(PAIRS)}")
        elif self.pairs == "shuffled" and self.objective != "image":
            problems.append("--pairs shuffled applies only to the image objective (the audio-only control has no pairs)")
        problems += at_least_one(self, ("max_steps", "batch_size", "accumulate", "checkpoint_every", "cpu_procs", "nodes"))
        if self.batch_size < 2:
            problems.append("--batch-size must be at least 2 (contrastive losses need negatives)")
        if not 0.0 <= self.heldout_images < 0.5:
            problems.append("--heldout-images must be in [0, 0.5)")
        if self.recall_pairs < 2:
            problems.append(f"--recall-pairs must be at least 2 (got {self.recall_pairs})")
        if self.lr <= 0:
            problems.append("--lr must be positive")
        problems += group_problems(self.head_lr_ratio, self.layer_decay)
        problems += ssl_problems(self)
        if self.siglip_bias is not None:
            if not math.isfinite(self.siglip_bias):
                problems.append("--siglip-bias must be a finite number or auto")
            elif self.objective != "image" or self.loss != "siglip":
                problems.append("--siglip-bias applies only to --loss siglip (leave it at auto)")
        raise_problems(problems, "see `avasr align --help`")


def siglip_init_bias(cfg: AlignConfig, world_size: int) -> float:
    """The sigmoid loss's initial bias: ``--siglip-bias``, or by default the log prior odds that a pair of
    the global batch is a positive one, ``-ln(B - 1)`` for ``B = batch × world`` clips (−2.71 at 16).

    SigLIP's published ``-10`` is that prior for its batches of ~32 k (−10.4). At small batches it leaves
    every logit far below zero, where the negatives exert no force, and Adam moves the bias by about the
    learning rate per step: measured on the positive control (oracle features, batch 16, 300 steps) the
    bias only went from −10 to −9.84 and held-out R@1 stayed at chance."""
    if cfg.siglip_bias is not None:
        return float(cfg.siglip_bias)
    return -math.log(max(2, cfg.batch_size * world_size) - 1)


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
    train_recall_before: dict | None = None  # the same measurement on a sample of training pairs
    train_recall_after: dict | None = None
    verdict: str | None = None  # generalises | memorises | none (see recall_verdict)
    budget: dict = field(default_factory=dict)  # what compare checks is equal between continued-pretraining arms
    seconds: float = 0.0
    step_seconds: float | None = None  # steady-state seconds per batch (data loading included)
    encoder_dir: str = ""
    vision_untrained: bool = False
    init_sha256: str = ""  # the starting encoder's weights
    encoder_sha256: str = ""  # the aligned encoder's weights
    history: list = field(default_factory=list)
    inputs: dict = field(default_factory=dict)  # align_inputs() when the stage ran
    # the checkpoint a killed run resumed from: not bit-identical to an uninterrupted run (the interrupted
    # epoch starts its batch order again), so compare and readers can tell
    resumed_from: str | None = None


def align_inputs(run: RunDir, cfg: AlignConfig) -> dict:
    """The align manifest, the feature record and the starting encoder (see ``run.input_fingerprint``)."""
    from avasr_cli.run import input_fingerprint

    files = {"align manifest": run.manifest("align")}
    if cfg.objective == "image":
        files["image features"] = run.root / "features.json"
    return input_fingerprint(files, resolve_init(run, cfg.init))


def run_align(run: RunDir, cfg: AlignConfig, rep: Reporter | None = None, callbacks=()) -> AlignResult:
    """``callbacks``: extra Lightning callbacks for the fit (tests watch the real training loop with them)."""
    rep = rep or Reporter()
    cfg.validate()

    from avasr_cli.data.manifest import check_audio_files, read_manifest
    from avasr_cli.env import make_deterministic
    from avasr_cli.models.align_module import AlignModule, resolve_layer, retrieval_recall
    from avasr_cli.models.fastconformer import load_init, state_sha256
    from avasr_cli.models.param_groups import summarise
    from avasr_cli.models.trainer import (ReporterCallback, checkpoints_for, make_trainer, quiet_libraries,
                                          resolve_hardware, teardown_distributed)
    from avasr_cli.run import sha256_file

    quiet_libraries()
    run.require("prepare", "run `avasr prepare` first")
    hw = resolve_hardware(cfg.gpus, cfg.nodes, cfg.cpu_procs, cfg.precision)
    rows = read_manifest(run.manifest("align"))
    # both objectives train on the same clips: the audio-image pairs (all clips when no clip has an image)
    if any(r.get("image_sha256") for r in rows) or cfg.objective == "image":
        rows = [r for r in rows if r.get("image_sha256")]
    if len(rows) < cfg.batch_size * hw.world_size:
        raise InputError(f"{run.manifest('align')} has {len(rows)} usable pairs, fewer than one global batch "
                         f"({cfg.batch_size} x {hw.world_size} processes)", "lower --batch-size or prepare more data")
    check_audio_files(run.manifest("align"), rows)  # before any training: a lost or cut clip is named here
    train_rows, held_rows = split_heldout(rows, cfg.heldout_images, cfg.seed)
    true_pairs_left = None
    if cfg.pairs == "shuffled":  # held-out pairs stay true: recall on them must stay at chance
        train_rows, true_pairs_left = shuffle_pairs(train_rows, cfg.seed)
        rep.log(f"negative control: the {len(train_rows)} training clips are paired with other clips' images "
                f"({true_pairs_left} kept a true image)")
    index, info = {}, {}
    if cfg.objective == "image":  # checked before the encoder loads: a bad feature store fails fast
        index, info = load_features(run, cfg, rows)
    init = resolve_init(run, cfg.init, rep)
    bundle = load_init(init, seed=cfg.seed)
    init_sha = bundle.weights_sha256()
    n_layers = int(bundle.encoder["n_layers"])
    layer = resolve_layer(cfg.align_layer, n_layers)
    if cfg.freeze_layers > layer + 1:
        raise ConfigError(f"--freeze-layers {cfg.freeze_layers}: only {layer + 1} conformer layer(s) are trained "
                          f"up to --align-layer {cfg.align_layer}", f"use --freeze-layers {layer + 1} or fewer")
    kept = f"; aligning layer {layer}, layers {layer + 1}..{n_layers - 1} kept as they are" if layer < n_layers - 1 else ""
    rep.log(f"encoder: {bundle.source} (d_model {bundle.d_model}, {n_layers} layers){kept}")
    if info:
        rep.log(f"vision features: {info.get('label') or info.get('model_id')} (dim {info['dim']}, "
                f"{info.get('num_patches')} patches, {len(index)} images)")
    make_deterministic(cfg.seed)
    module = AlignModule(bundle, objective=cfg.objective, loss=cfg.loss, vision_dim=int(info.get("dim", 0)),
                         rows=train_rows, image_index=index, store_path=info.get("store"), batch_size=cfg.batch_size,
                         lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps, max_steps=cfg.max_steps,
                         seed=cfg.seed, freeze_layers=cfg.freeze_layers, num_workers=cfg.workers,
                         ssl=cfg.ssl_settings(), head_lr_ratio=cfg.head_lr_ratio, layer_decay=cfg.layer_decay,
                         align_layer=layer,
                         loss_kwargs={"init_bias": siglip_init_bias(cfg, hw.world_size)} if cfg.loss == "siglip" else None)
    groups = summarise(module.param_groups())
    # recall on held-out pairs and on as many training pairs: memorising pairs vs alignment that generalises
    # recall is scored on at most recall_pairs held-out pairs: its cost stays flat as the corpus grows, and
    # chance (1 / images in the pool) stays comparable between corpus sizes
    held_rows_all, held_rows = held_rows, recall_sample(held_rows, cfg.recall_pairs, cfg.seed)
    train_sample = recall_sample(train_rows, len(held_rows), cfg.seed)
    recalls: dict[str, dict | None] = {"heldout_before": None, "train_before": None}
    if cfg.objective == "image" and held_rows:
        recalls["heldout_before"] = retrieval_recall(module, held_rows)
        recalls["train_before"] = retrieval_recall(module, train_sample)
        rep.log(f"held-out recall before: a→i R@1 {recalls['heldout_before']['a2i_r@1']:.3f}, "
                f"R@5 {recalls['heldout_before']['a2i_r@5']:.3f}")

    ckpt_dir = run.align_dir / "checkpoints"
    inputs = {"align manifest": sha256_file(run.manifest("align")), "starting encoder": init_sha}
    if info:
        inputs["image features"] = sha256_file(run.root / "features.json")
    resume = checkpoints_for(ckpt_dir, asdict(cfg), rep, inputs)
    if resume:
        rep.log(f"resuming from {resume}")
    make_deterministic(cfg.seed)  # both objectives enter training with the same random state
    start = time.time()
    with rep.task(f"align ({cfg.objective}{'' if cfg.objective != 'image' else ', ' + cfg.loss})", total=cfg.max_steps) as task:
        progress = ReporterCallback(task)
        trainer = make_trainer(hw, max_steps=cfg.max_steps, ckpt_dir=ckpt_dir, every=cfg.checkpoint_every,
                               callbacks=[progress, *callbacks], accumulate=cfg.accumulate,
                               log_dir=run.align_dir / "tensorboard", resuming=resume is not None)
        trainer.fit(module, ckpt_path=str(resume) if resume else None)
    seconds = time.time() - start
    final_loss = trainer.callback_metrics.get("train_loss")
    teardown_distributed()
    if trainer.global_rank != 0:
        raise SystemExit(0)  # only rank 0 writes the outputs

    verdict = None
    if cfg.objective == "image" and held_rows:
        module = module.cpu()
        recalls["heldout_after"] = retrieval_recall(module, held_rows)
        recalls["train_after"] = retrieval_recall(module, train_sample)
        verdict = recall_verdict(recalls["heldout_after"], recalls["train_after"])
        rep.log(f"held-out recall after:  a→i R@1 {recalls['heldout_after']['a2i_r@1']:.3f}, "
                f"R@5 {recalls['heldout_after']['a2i_r@5']:.3f}; training pairs R@1 "
                f"{recalls['train_before']['a2i_r@1']:.3f} → {recalls['train_after']['a2i_r@1']:.3f}")
        write_json_atomic(run.align_dir / "recall.json", {
            "before": recalls["heldout_before"], "after": recalls["heldout_after"],
            "train_before": recalls["train_before"], "train_after": recalls["train_after"],
            "final_train_loss": float(final_loss) if final_loss is not None else None,
            "chance_loss": math.log(cfg.batch_size * hw.world_size), "verdict": verdict})
        _log_recall(trainer, recalls)

    bundle.state_dict = module.encoder_state()
    effective = cfg.batch_size * hw.world_size  # the contrastive negatives of one step
    budget = {"objective": cfg.objective, "loss": cfg.loss if cfg.objective == "image" else None,
              "pairs": cfg.pairs if cfg.objective == "image" else None, "true_pairs_left": true_pairs_left,
              "vision": info.get("vision") or info.get("model_id"), "max_steps": cfg.max_steps,
              "steps": int(trainer.global_step), "batch_size": cfg.batch_size, "accumulate": cfg.accumulate,
              "world_size": hw.world_size, "sync_batchnorm": hw.sync_batchnorm, "effective_batch": effective,
              "siglip_init_bias": siglip_init_bias(cfg, hw.world_size) if cfg.objective == "image" and cfg.loss == "siglip" else None,
              "samples_per_update": cfg.batch_size * cfg.accumulate * hw.world_size, "lr": cfg.lr,
              "weight_decay": cfg.weight_decay, "warmup_steps": cfg.warmup_steps,
              "schedule": f"cosine (warm-up {cfg.warmup_steps})", "init": bundle.source, "init_sha256": init_sha,
              "manifest_sha256": inputs["align manifest"], "train_pairs": len(train_rows),
              "freeze_layers": cfg.freeze_layers, "seed": cfg.seed, "precision": hw.precision,
              "ssl": cfg.ssl_settings() if cfg.objective == "audio-only" else None,
              "head_lr": module.hp["head_lr"], "layer_decay": cfg.layer_decay, "align_layer": layer,
              "encoder_layers": n_layers, "param_groups": groups}
    history_entry = {"stage": "align", "objective": cfg.objective, "loss": cfg.loss if cfg.objective == "image" else None,
                     "pairs": cfg.pairs if cfg.objective == "image" else None,
                     "vision": info.get("vision") or info.get("model_id"), "vision_untrained": bool(info.get("untrained")),
                     "steps": cfg.max_steps, "effective_batch": effective, "init": bundle.source, "run": str(run.root),
                     "budget": budget}
    bundle.history = list(bundle.history) + [history_entry]
    bundle.save(run.align_dir / "encoder")
    return AlignResult(
        objective=cfg.objective, loss=cfg.loss if cfg.objective == "image" else None,
        vision=info.get("vision") or info.get("model_id"), init=bundle.source, steps=int(trainer.global_step),
        batch_size=cfg.batch_size, effective_batch=effective,
        world_size=hw.world_size, train_pairs=len(train_rows), heldout_pairs=len(held_rows_all),
        final_loss=float(final_loss) if final_loss is not None else None, recall_before=recalls["heldout_before"],
        recall_after=recalls.get("heldout_after"), train_recall_before=recalls["train_before"],
        train_recall_after=recalls.get("train_after"), verdict=verdict, budget=budget,
        seconds=round(seconds, 1), step_seconds=progress.step_seconds,
        encoder_dir=str(run.align_dir / "encoder"),
        vision_untrained=bool(info.get("untrained", False)), init_sha256=init_sha,
        encoder_sha256=state_sha256(bundle.state_dict),
        history=bundle.history, inputs=align_inputs(run, cfg), resumed_from=str(resume) if resume else None,
    )


def _log_recall(trainer, recalls: dict) -> None:
    """Recall before/after into the run's TensorBoard curves (step 0 and the last step)."""
    if not trainer.loggers:
        return
    for when, step in (("before", 0), ("after", int(trainer.global_step))):
        metrics = {f"recall/{part}_{k}": v for part in ("heldout", "train")
                   for k, v in (recalls.get(f"{part}_{when}") or {}).items() if "@" in k and not k.startswith("chance")}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
    for logger in trainer.loggers:
        logger.save()


_VERDICTS = {
    "generalises": "the alignment generalises: held-out audio→image recall is above chance",
    "memorises": "the encoder memorises training pairs: their recall is above chance, held-out recall is not",
    "none": "no alignment learned: recall is at chance on training and held-out pairs",
}


def describe(result: dict) -> str:
    r = result
    line = f"aligned encoder ({r['objective']}) after {r['steps']} steps → {r['encoder_dir']}"
    if (r.get("budget") or {}).get("pairs") == "shuffled":
        line += "\nnegative control: trained on SHUFFLED pairs (held-out recall is measured on true pairs)"
    if r.get("recall_after"):
        b, a = r["recall_before"], r["recall_after"]
        line += (f"\nheld-out audio→image R@1 {b['a2i_r@1']:.3f} → {a['a2i_r@1']:.3f}, "
                 f"R@5 {b['a2i_r@5']:.3f} → {a['a2i_r@5']:.3f} (chance R@1 {a['chance_a2i_r@1']:.3f})")
    if r.get("train_recall_after"):
        b, a = r["train_recall_before"], r["train_recall_after"]
        line += (f"\ntraining pairs audio→image R@1 {b['a2i_r@1']:.3f} → {a['a2i_r@1']:.3f} "
                 f"(chance {a['chance_a2i_r@1']:.3f})")
    if r.get("verdict"):
        line += f"\n{_VERDICTS.get(r['verdict'], r['verdict'])}"
    return line


__all__ = ["AlignConfig", "AlignResult", "run_align", "describe", "recall_verdict"]
