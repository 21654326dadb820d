"""``avasr pretrain``: self-supervised pretraining of a FastConformer on untranscribed audio — the
"pretrained speech encoder" every arm of an experiment starts from.

The objective is the audio-only control's (NeMo's NEST / BEST-RQ masked-token prediction, at NeMo's
recipe settings), run on a pool of audio that is *not* the experiment's: on the built-in corpus, a pool
with its own speakers and sentences (:data:`avasr_cli.data.builtin.RESERVED_EVERY`), by default ten times
the default alignment pool; for your own data, ``--manifest`` (NeMo JSON lines with ``audio_filepath``
and ``duration``; no text needed).

The output is an encoder directory (``encoder/encoder.json`` + ``encoder.safetensors``), a valid
``--init`` for align and finetune, plus ``pretrain.json`` (written last: the marker of a finished run).
The built-in start point lives in ``$AVASR_HOME/pretrained/builtin-ssl-<lang>`` and is what
``--init auto`` means on the built-in corpus once it has been built. A rerun with the same options is a
no-op; a killed run resumes from its last checkpoint.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from avasr_cli.errors import ConfigError, InputError, at_least_one, raise_problems
from avasr_cli.progress import Reporter
from avasr_cli.run import sha256_file, write_json_atomic
from avasr_cli.models.start import builtin_dir, finished
from avasr_cli.models.ssl import SSL_BLOCK_SIZE, SSL_CODEBOOK_SIZE, SSL_MASK_PROB, ssl_problems, ssl_settings

POOL_PER_ALIGN_CLIP = 10  # the pool holds ten times the default alignment pool (800 clips)


@dataclass(frozen=True)
class PretrainConfig:
    lang: str = "kannada"
    manifest: str = ""  # "" = the built-in pool
    out: str = ""  # "" = $AVASR_HOME/pretrained/builtin-ssl-<lang> (built-in) — required with --manifest
    init: str = "tiny"
    num_clips: int = 8000
    # measured on the built-in pool (8000 clips, tiny encoder, batch 16): at a 2e-3 peak the masked-token
    # loss fell from ln(8192) = 9.01 to 7.8 by step 130 and then rose again as the rate peaked (8.4 at
    # step 280), so the peak is 1e-3; 600 steps (1.2 epochs) is what a 2-core machine affords for a demo
    max_steps: int = 600
    batch_size: int = 16
    accumulate: int = 1
    lr: float = 1e-3
    weight_decay: float = 1e-3
    warmup_steps: int = 60
    seed: int = 0
    ssl_mask_prob: float = SSL_MASK_PROB
    ssl_block_size: int = SSL_BLOCK_SIZE
    ssl_codebook_size: int = SSL_CODEBOOK_SIZE
    gpus: int = 0
    nodes: int = 1
    cpu_procs: int = 1
    precision: str = "auto"
    checkpoint_every: int = 250
    resume: bool = True
    workers: int = 2

    def validate(self) -> None:
        from avasr_cli.data.builtin import ALIASES, LANGUAGES

        problems = at_least_one(self, ("num_clips", "max_steps", "batch_size", "accumulate", "checkpoint_every",
                                       "cpu_procs", "nodes"))
        if not self.manifest and ALIASES.get(self.lang, self.lang) not in LANGUAGES:
            problems.append(f"--lang {self.lang!r}: the built-in pool has {', '.join(LANGUAGES)}")
        if self.manifest and not self.out:
            problems.append("--out is required with --manifest (where to write the pretrained encoder)")
        if self.out and Path(self.out).expanduser().exists() and not Path(self.out).expanduser().is_dir():
            problems.append(f"--out {self.out} is a file, not a directory")
        if self.init in ("auto", "builtin-ssl"):
            problems.append(f"--init {self.init}: pretraining starts from an encoder of its own, e.g. tiny, small, "
                            "medium, a .nemo file or an avasr encoder directory")
        if self.lr <= 0:
            problems.append("--lr must be positive")
        problems += ssl_problems(self)
        raise_problems(problems, "see `avasr pretrain --help`")

    def ssl_settings(self) -> dict:
        return ssl_settings(self)


# options that do not change the result (where and how fast it runs)
_RUNTIME = ("gpus", "nodes", "cpu_procs", "workers", "resume", "checkpoint_every", "out")


def output_dir(cfg: PretrainConfig) -> Path:
    return Path(cfg.out).expanduser() if cfg.out else builtin_dir(cfg.lang)


def _pool_rows(cfg: PretrainConfig, rep: Reporter) -> tuple[list[dict], dict]:
    """Rows (absolute ``audio_filepath``, ``duration``) of the pool, and what the record says about it."""
    from avasr_cli.data.manifest import check_audio_files, read_manifest, total_hours

    if cfg.manifest:
        rows = read_manifest(cfg.manifest, require=("audio_filepath", "duration"))
        base = Path(cfg.manifest).resolve().parent  # relative paths are relative to the manifest, as NeMo reads them
        rows = [dict(r, audio_filepath=str(base / r["audio_filepath"])) if not Path(r["audio_filepath"]).is_absolute()
                else r for r in rows]
        check_audio_files(cfg.manifest, rows)
        return rows, {"kind": "manifest", "manifest": str(Path(cfg.manifest).resolve()), "clips": len(rows),
                      "hours": round(total_hours(rows), 3), "speakers": len({r.get("speaker") for r in rows} - {None})}
    from avasr_cli.data.builtin import ALIASES, CorpusConfig, generate_corpus

    lang = ALIASES.get(cfg.lang, cfg.lang)
    corpus = generate_corpus(CorpusConfig(lang=lang, seed=cfg.seed, num_align=0, num_train=0, num_dev=0, num_test=0,
                                          num_pretrain=cfg.num_clips), rep)
    rows = [{"audio_filepath": str(corpus.dir / r["audio"]), "duration": r["duration"], "speaker": r["speaker"]}
            for r in corpus.iter_rows()]
    return rows, {"kind": "builtin pool", "corpus": str(corpus.dir), "clips": len(rows),
                  "hours": round(total_hours(rows), 3), "speakers": len({r["speaker"] for r in rows}),
                  "disjoint": "own speakers (train voices, own rate/pitch) and own scene types: no pool sentence "
                              "or speaker is in any built-in align/train/dev/test split"}


def run_pretrain(cfg: PretrainConfig, rep: Reporter | None = None, force: bool = False) -> dict:
    """Pretrain into :func:`output_dir` (one process at a time per directory: a second one waits, then
    finds the finished encoder)."""
    from filelock import FileLock

    rep = rep or Reporter()
    cfg.validate()
    out = output_dir(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    from avasr_cli.run import is_secondary_rank

    if is_secondary_rank():  # a DDP worker Lightning started: rank 0 holds the lock for both
        return _pretrain(cfg, out, rep, force)
    with FileLock(str(out.parent / f".{out.name}.lock")):
        return _pretrain(cfg, out, rep, force)


def _pretrain(cfg: PretrainConfig, out: Path, rep: Reporter, force: bool) -> dict:
    options = {k: v for k, v in asdict(cfg).items() if k not in _RUNTIME}
    if cfg.manifest and Path(cfg.manifest).is_file():
        options["manifest_sha256"] = sha256_file(cfg.manifest)  # the same path with other rows is another pool
    done = finished(out)
    if done is not None and not force:
        if done.get("options") == options:
            rep.log(f"pretrained encoder already in {out} (use --force to redo it)")
            return dict(done, reused=True)
        raise ConfigError(f"{out} holds a pretrained encoder made with other options",
                          "pass another --out, or --force to replace it")
    import torch

    from avasr_cli.env import environment, make_deterministic
    from avasr_cli.models.align_module import AlignModule
    from avasr_cli.models.fastconformer import load_init
    from avasr_cli.models.trainer import (ReporterCallback, checkpoints_for, make_trainer, quiet_libraries,
                                          resolve_hardware, teardown_distributed)
    from avasr_cli.run import write_jsonl_atomic

    quiet_libraries()
    hw = resolve_hardware(cfg.gpus, cfg.nodes, cfg.cpu_procs, cfg.precision)
    rows, pool = _pool_rows(cfg, rep)
    if len(rows) < cfg.batch_size * hw.world_size:
        raise InputError(f"the pretraining pool has {len(rows)} clips, fewer than one global batch "
                         f"({cfg.batch_size} x {hw.world_size})", "lower --batch-size or give more audio")
    out.mkdir(parents=True, exist_ok=True)
    pool_manifest = out / "pool.jsonl"
    write_jsonl_atomic(pool_manifest, rows)
    bundle = load_init(cfg.init, seed=cfg.seed)
    init_sha = bundle.weights_sha256()
    rep.log(f"pretraining {bundle.source} on {pool['clips']} clips ({pool['hours']} h) with masked-token prediction")
    make_deterministic(cfg.seed)
    module = AlignModule(bundle, objective="audio-only", rows=rows, batch_size=cfg.batch_size, lr=cfg.lr,
                         weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps, max_steps=cfg.max_steps,
                         seed=cfg.seed, num_workers=cfg.workers, ssl=cfg.ssl_settings())
    ckpt_dir = out / "checkpoints"
    if force:
        import shutil

        shutil.rmtree(ckpt_dir, ignore_errors=True)  # --force trains again, it does not resume the old run
    resume = checkpoints_for(ckpt_dir, options, rep, {"pool": sha256_file(pool_manifest), "starting encoder": init_sha})
    start = time.time()
    with rep.task("pretrain (masked-token prediction)", total=cfg.max_steps) as task:
        trainer = make_trainer(hw, max_steps=cfg.max_steps, ckpt_dir=ckpt_dir, every=cfg.checkpoint_every,
                               callbacks=[ReporterCallback(task)], accumulate=cfg.accumulate,
                               log_dir=out / "tensorboard", resuming=resume is not None)
        trainer.fit(module, ckpt_path=str(resume) if resume else None)
    final_loss = trainer.callback_metrics.get("train_loss")
    teardown_distributed()
    if trainer.global_rank != 0:
        raise SystemExit(0)
    name = out.name
    bundle.state_dict = {k: v.detach().cpu().clone() for k, v in module.encoder.state_dict().items()}
    bundle.source = (f"{name} (NEST/BEST-RQ masked-token prediction from {cfg.init}, {pool['clips']} clips, "
                     f"{cfg.max_steps} steps)")
    bundle.history = list(bundle.history) + [{"stage": "pretrain", "objective": "audio-only", "pool": pool,
                                              "steps": int(trainer.global_step), "ssl": cfg.ssl_settings()}]
    bundle.save(out / "encoder")
    record = {"format": "avasr-pretrain-v1", "options": options, "encoder_dir": str(out / "encoder"),
              "source": bundle.source, "pool": pool, "steps": int(trainer.global_step),
              "final_loss": float(final_loss) if final_loss is not None else None,
              "chance_loss": round(float(torch.log(torch.tensor(float(cfg.ssl_codebook_size)))), 3),
              "init": cfg.init, "init_sha256": init_sha, "encoder_sha256": bundle.weights_sha256(),
              "seconds": round(time.time() - start, 1), "world_size": hw.world_size,
              "sync_batchnorm": hw.sync_batchnorm, "environment": environment()}
    write_json_atomic(out / "pretrain.json", record)  # last: the marker of a finished pretraining
    return dict(record, reused=False)


def describe(result: dict) -> str:
    loss = f"{result['final_loss']:.3f}" if result.get("final_loss") is not None else "—"
    return (f"pretrained encoder → {result['encoder_dir']} ({result['steps']} steps on {result['pool']['clips']} clips, "
            f"{result['pool']['hours']} h; final masked-token loss {loss}, chance {result['chance_loss']})\n"
            f"use it with --init {result['encoder_dir']}")
