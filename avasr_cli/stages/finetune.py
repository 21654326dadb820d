"""``avasr finetune``: supervised ASR training of a NeMo FastConformer on the transcribed train split,
starting from the run's aligned encoder when it has one, else from ``--init``."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from avasr_cli.errors import ConfigError, at_least_one, raise_problems
from avasr_cli.models.param_groups import group_problems
from avasr_cli.progress import Reporter
from avasr_cli.run import RunDir, sha256_file, write_json_atomic


@dataclass(frozen=True)
class FinetuneConfig:
    decoder: str = "hybrid-tdt-ctc"
    init: str = "auto"
    max_steps: int = 400
    batch_size: int = 16
    accumulate: int = 1
    lr: float = 2e-3
    weight_decay: float = 1e-3
    warmup_steps: int = 40
    head_lr_ratio: float = 1.0  # the new decoder's (joint's, CTC head's) rate over the encoder's
    layer_decay: float = 1.0  # 1 = every encoder layer at --lr
    schedule: str = "cosine"
    vocab_size: int = 64
    spec_augment: bool = True
    train_hours: float = 0.0  # 0 = all
    val_every: int = 100
    resume: bool = True
    seed: int = 0
    gpus: int = 0
    nodes: int = 1
    cpu_procs: int = 1
    precision: str = "auto"
    workers: int = 2
    max_duration: float = 20.0

    def validate(self) -> None:
        from avasr_cli.models.asr import DECODERS

        problems = []
        if self.decoder not in DECODERS + ("auto",):
            problems.append(f"--decoder {self.decoder!r} is not one of auto, {', '.join(DECODERS)}")
        if self.schedule not in ("cosine", "noam"):
            problems.append(f"--schedule {self.schedule!r} is not one of cosine, noam")
        problems += at_least_one(self, ("max_steps", "batch_size", "accumulate", "val_every", "nodes", "cpu_procs"))
        if self.vocab_size < 8:
            problems.append("--vocab-size must be at least 8")
        if self.train_hours < 0:
            problems.append("--train-hours must be 0 (all) or positive")
        if self.lr <= 0:
            problems.append("--lr must be positive")
        problems += group_problems(self.head_lr_ratio, self.layer_decay)
        raise_problems(problems, "see `avasr finetune --help`")


@dataclass
class FinetuneResult:
    decoder: str
    init: str
    init_kind: str  # aligned | init
    encoder_history: list
    budget: dict
    tokenizer: dict
    tokenizer_sha256: str
    train_utterances: int
    train_hours: float
    best_dev_wer: float | None
    steps: int
    seconds: float
    model: str
    model_sha256: str = ""
    encoder_sha256: str = ""  # the starting encoder's weights (aligned or base)
    notes: list = field(default_factory=list)
    inputs: dict = field(default_factory=dict)  # finetune_inputs() when the stage ran
    # the checkpoint a killed run resumed from: not bit-identical to an uninterrupted run (the interrupted
    # epoch starts its batch order again), so compare and readers can tell
    resumed_from: str | None = None



def resolve_decoder(decoder: str, gpus: int) -> str:
    """``auto`` is the paper's hybrid TDT + CTC on GPUs and CPUs alike."""
    return "hybrid-tdt-ctc" if decoder == "auto" else decoder


def subsample_hours(rows: list[dict], hours: float, seed: int) -> list[dict]:
    """Deterministic subset of whole utterances adding up to at most ``hours`` (all when 0)."""
    if hours <= 0:
        return rows
    import numpy as np

    order = np.random.default_rng(seed + 7919).permutation(len(rows))
    picked, total = [], 0.0
    for i in order:
        d = float(rows[i]["duration"])
        if total + d > hours * 3600:
            continue
        picked.append(rows[i])
        total += d
    return picked


def finetune_inputs(run: RunDir, cfg: FinetuneConfig) -> dict:
    """The train and dev manifests and the starting encoder: the run's aligned one, else ``--init``."""
    from avasr_cli.run import input_fingerprint
    from avasr_cli.models.start import resolve_init

    aligned = run.align_dir / "encoder"
    start = str(aligned) if run.stage("align") is not None else resolve_init(run, cfg.init)
    return input_fingerprint({"train manifest": run.manifest("train"), "dev manifest": run.manifest("dev")}, start)


def _shard_streams(ft, train_rows: list[dict], dev_rows: list[dict], rank: int, world: int) -> dict:
    """NeMo's shard patterns for train (this rank's disjoint part) and dev (all of it, so that every rank
    scores the whole dev split) when they live in audio shards (else None each)."""
    from avasr_cli.data.shards import is_sharded, nemo_patterns

    sharded = {name: bool(rows) and all(is_sharded(r) for r in rows) for name, rows in (("train", train_rows), ("dev", dev_rows))}
    return {"train": nemo_patterns(train_rows, ft / "train_shards", rank, world) if sharded["train"] else None,
            # every shard, in a directory of this rank's own (the ranks write their links at once)
            "dev": nemo_patterns(dev_rows, ft / "dev_shards" / f"for-rank{rank}", 0, 1) if sharded["dev"] else None}


def run_finetune(run: RunDir, cfg: FinetuneConfig, rep: Reporter | None = None, callbacks=()) -> FinetuneResult:
    """``callbacks``: extra Lightning callbacks for the fit (tests watch the real training loop with them)."""
    rep = rep or Reporter()
    cfg.validate()
    _check_inputs(run, cfg)  # before the heavy imports: bad input fails in a second, not after NeMo loads
    import torch
    from omegaconf import OmegaConf

    from avasr_cli.data.manifest import read_manifest, total_hours
    from avasr_cli.env import make_deterministic
    from avasr_cli.models.asr import build_config, model_class, train_tokenizer, use_cpu_tdt_loss
    from avasr_cli.models.fastconformer import EncoderBundle, load_init
    from avasr_cli.models.param_groups import build_param_groups, lowest_lr, summarise, use_param_groups
    from avasr_cli.models.trainer import (BestWeights, ReporterCallback, checkpoints_for, launch_rank, make_trainer,
                                          quiet_libraries, resolve_hardware, teardown_distributed)
    from avasr_cli.run import write_jsonl_atomic
    from avasr_cli.models.start import resolve_init

    quiet_libraries()
    run.require("prepare", "run `avasr prepare` first")
    decoder = resolve_decoder(cfg.decoder, cfg.gpus)
    hw = resolve_hardware(cfg.gpus, cfg.nodes, cfg.cpu_procs, cfg.precision)
    notes = []
    if "tdt" in decoder and cfg.gpus == 0:
        notes.append("TDT loss on the CPU: avasr's PyTorch implementation, tested against NeMo's reference")

    # starting point ---------------------------------------------------------------------------------
    if run.stage("align") is not None:  # its encoder, or an error naming what is lost: never the base instead
        if cfg.init != "auto":
            raise ConfigError(f"--init {cfg.init}: this run has an aligned encoder, finetune starts from it",
                              "drop --init, or use a run directory without an align stage")
        bundle, init_kind = EncoderBundle.load(run.align_dir / "encoder"), "aligned"
    else:
        bundle, init_kind = load_init(resolve_init(run, cfg.init, rep), seed=cfg.seed), "init"
    rep.log(f"starting from {'the aligned encoder' if init_kind == 'aligned' else 'the base encoder'}: {bundle.source}"
            + (f" + {', '.join(h['stage'] + ':' + h['objective'] for h in bundle.history)}" if bundle.history else ""))

    # data and tokenizer -----------------------------------------------------------------------------
    ft = run.finetune_dir
    train_rows = read_manifest(run.manifest("train"), require=("audio_filepath", "duration", "text"))
    dev_rows = read_manifest(run.manifest("dev"), require=("audio_filepath", "duration", "text"))
    train_rows = [r for r in train_rows if r["text"].strip()]
    train_rows = subsample_hours(train_rows, cfg.train_hours, cfg.seed)
    train_manifest = ft / "train_used.jsonl"
    write_jsonl_atomic(train_manifest, train_rows)
    tok = train_tokenizer([r["text"] for r in train_rows], ft / "tokenizer", cfg.vocab_size, cfg.seed)
    if tok["round_trip_failures"]:
        raise ConfigError(f"the tokenizer does not round-trip {tok['round_trip_failures']} train transcript(s), "
                          f"e.g. {tok['examples'][0]!r}", "check the transcripts' characters (see data/train.jsonl)")
    if tok["unrepresentable_chars"]:
        rep.warn(f"train text has characters the tokenizer cannot represent: {''.join(tok['unrepresentable_chars'])}")
    rep.log(f"tokenizer: SentencePiece unigram, {tok['vocab_size']} pieces, identity normalisation; "
            f"{len(train_rows)} train utterances ({total_hours(train_rows):.3f} h)")

    head_lr = cfg.lr * cfg.head_lr_ratio
    rank = launch_rank(hw.devices)
    streamed = _shard_streams(ft, train_rows, dev_rows, rank, hw.world_size)
    if streamed["train"]:
        rep.log("train and dev audio streamed from NeMo tarred shards (Lhotse loader, duration buckets)")
    model_cfg = build_config(decoder, bundle.preprocessor, bundle.encoder, ft / "tokenizer", train_manifest,
                             run.manifest("dev"), batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                             warmup_steps=cfg.warmup_steps, max_steps=cfg.max_steps, schedule=cfg.schedule,
                             workers=cfg.workers, spec_augment=cfg.spec_augment, max_duration=cfg.max_duration,
                             lowest_lr=lowest_lr(cfg.lr, head_lr, cfg.layer_decay, int(bundle.encoder["n_layers"])),
                             train_shards=streamed["train"], dev_shards=streamed["dev"], seed=cfg.seed,
                             rank=rank)
    make_deterministic(cfg.seed)
    ckpt_dir = ft / "checkpoints"
    encoder_sha = bundle.weights_sha256()
    # a checkpoint is only resumed when it was trained on the same data from the same starting encoder
    inputs = {"train manifest": sha256_file(train_manifest), "dev manifest": sha256_file(run.manifest("dev")),
              "starting encoder": encoder_sha, "tokenizer": tok["vocab_sha256"]}
    resume = checkpoints_for(ckpt_dir, asdict(cfg), rep, inputs)
    start = time.time()
    with rep.task(f"finetune ({decoder})", total=cfg.max_steps) as task:
        best = BestWeights(ckpt_dir / "best_weights.pt", metric="val_wer")
        progress = ReporterCallback(task)
        trainer = make_trainer(hw, max_steps=cfg.max_steps, ckpt_dir=ckpt_dir, every=cfg.val_every,
                               callbacks=[progress, best, *callbacks], accumulate=cfg.accumulate,
                               val_every=min(cfg.val_every, cfg.max_steps), log_dir=ft / "tensorboard", resuming=resume is not None,
                               # NeMo's map-style loaders: each rank its own part; its Lhotse loader shards itself
                               distributed_sampler=not streamed["train"],
                               # an "epoch" of the endless streams: the train split once over all ranks (the
                               # same count on every rank, as DDP needs)
                               epoch_batches=-(-len(train_rows) // (cfg.batch_size * hw.world_size)) if streamed["train"] else None)
        model = model_class(decoder)(cfg=OmegaConf.create(model_cfg), trainer=trainer)
        if use_cpu_tdt_loss(model) and hw.accelerator == "cpu":
            rep.log("TDT loss: avasr's PyTorch implementation (NeMo's is CUDA-only)")
        model.encoder.load_state_dict(bundle.state_dict, strict=True)

        def groups(model=model):  # encoder vs new decoder rates, layer decay, no decay on biases and norms
            return build_param_groups(model, model.encoder, lr=cfg.lr, head_lr=head_lr,
                                      weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay)

        use_param_groups(model, groups)
        group_summary = summarise(groups())
        if resume:
            rep.log(f"resuming from {resume}")
        trainer.fit(model, ckpt_path=str(resume) if resume else None)
    seconds = time.time() - start
    teardown_distributed()
    if trainer.global_rank != 0:
        raise SystemExit(0)
    if best.path.exists():
        model.load_state_dict(torch.load(best.path, map_location="cpu", weights_only=True))
    model = model.cpu().eval()
    model_path = ft / "model.nemo"
    from avasr_cli.run import atomic_path

    with atomic_path(model_path) as tmp:
        model.save_to(str(tmp))
    budget = {"max_steps": cfg.max_steps, "steps": int(trainer.global_step), "batch_size": cfg.batch_size,
              "effective_batch": cfg.batch_size * cfg.accumulate * hw.world_size, "lr": cfg.lr,
              "head_lr": head_lr, "layer_decay": cfg.layer_decay, "weight_decay": cfg.weight_decay,
              "param_groups": group_summary,
              "schedule": f"{cfg.schedule} (warm-up {cfg.warmup_steps})", "seed": cfg.seed,
              "train_hours": round(total_hours(train_rows), 4), "decoder": decoder, "spec_augment": cfg.spec_augment,
              "precision": hw.precision, "world_size": hw.world_size, "sync_batchnorm": hw.sync_batchnorm,
              # seconds per training batch of this fit, data loading included: the first 5 batches (warm-up)
              # left out when more than 6 were timed, all of them otherwise; null when fewer than 2 were
              # timed. Validation passes between two timed batches count in that interval
              "step_seconds": round(step, 4) if (step := progress.step_seconds) else None}
    write_json_atomic(ft / "budget.json", budget)
    return FinetuneResult(
        decoder=decoder, init=bundle.source, init_kind=init_kind, encoder_history=bundle.history, budget=budget,
        tokenizer=tok, tokenizer_sha256=tok["vocab_sha256"],
        train_utterances=len(train_rows), train_hours=budget["train_hours"],
        best_dev_wer=best.best, steps=int(trainer.global_step), seconds=round(seconds, 1), model=str(model_path),
        model_sha256=sha256_file(model_path), encoder_sha256=encoder_sha, notes=notes,
        inputs=finetune_inputs(run, cfg), resumed_from=str(resume) if resume else None,
    )


def _check_inputs(run: RunDir, cfg: FinetuneConfig) -> None:
    """Prerequisites, manifests (every line), the audio they name (headers) and an --init file."""
    from avasr_cli.data.manifest import check_audio_files, read_manifest
    from avasr_cli.models.fastconformer import check_init_file

    run.require("prepare", "run `avasr prepare` first")
    for split in ("train", "dev"):
        path = run.manifest(split)
        check_audio_files(path, read_manifest(path, require=("audio_filepath", "duration", "text")))
    if cfg.init != "auto":
        check_init_file(cfg.init)


def describe(result: dict) -> str:
    r = result
    wer = f"{r['best_dev_wer']:.3f}" if r.get("best_dev_wer") is not None else "—"
    return (f"fine-tuned {r['decoder']} from {r['init_kind']} encoder ({r['init']}) for {r['steps']} steps; "
            f"best dev WER {wer} → {r['model']}")
