"""``avasr evaluate``: transcribe dev/test with the fine-tuned model and score WER/CER.

Writes ``reports/wer-<split>.json`` (machine-readable, with the checkpoint and manifest hashes),
``reports/hyps-<split>.jsonl`` (one hypothesis per utterance) and ``reports/errors-<split>.txt``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from avasr_cli.errors import ConfigError, InputError, at_least_one, raise_problems
from avasr_cli.progress import Reporter
from avasr_cli.run import RunDir, sha256_file, write_json_atomic, write_jsonl_atomic, write_text_atomic


@dataclass(frozen=True)
class EvaluateConfig:
    splits: tuple[str, ...] = ("dev", "test")
    batch_size: int = 16
    device: str = "auto"
    decoder: str = "default"  # for hybrid models: default (transducer) or ctc
    gpus: int = 0  # > 1: one process per GPU (DDP), each transcribing its own part of every split
    nodes: int = 1
    cpu_procs: int = 1  # with gpus 0: CPU processes (gloo), mostly for testing

    @property
    def world_size(self) -> int:
        return max(self.gpus, self.cpu_procs if self.gpus == 0 else 1) * self.nodes

    def validate(self) -> None:
        problems = []
        bad = [s for s in self.splits if s not in ("train", "dev", "test")]
        if bad:
            problems.append(f"--split {','.join(bad)}: splits are train, dev and test")
        problems += at_least_one(self, ("batch_size", "nodes", "cpu_procs"))
        if self.gpus < 0:
            problems.append("--gpus must be 0 or more")
        if self.gpus > 0 and self.device == "cpu":
            problems.append("--device cpu contradicts --gpus; drop one")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"--device {self.device!r} is not one of auto, cpu, cuda")
        if self.decoder not in ("default", "ctc"):
            problems.append(f"--decoder {self.decoder!r} is not one of default, ctc")
        raise_problems(problems, "see `avasr evaluate --help`")


@dataclass
class EvaluateResult:
    model: str
    model_sha256: str
    splits: dict = field(default_factory=dict)  # split → {"wer", "cer", "num_utterances", "report"}


def load_model(path):
    """Restore a fine-tuned .nemo with stock NeMo; a non-ASR or broken file gets a clear error."""
    from avasr_cli.models.fastconformer import restore_asr_model

    try:
        model = restore_asr_model(str(path))
    except Exception as exc:
        raise InputError(f"cannot load {path} as a NeMo ASR model ({type(exc).__name__})",
                         "rerun `avasr finetune --force`") from exc
    return model


def transcribe(model, paths: list[str], batch_size: int, decoder: str = "default", task=None) -> list[str]:
    """One stock ``model.transcribe`` call (one DataLoader) over ``paths``; ``task`` advances per batch.

    The progress comes from a forward hook on the encoder, which NeMo's CTC, RNN-T/TDT and hybrid models
    run once per batch: a batch counts once it is encoded (its decoding follows at once). The hook only
    reads the batch size; the batching, and so every hypothesis, is stock ``transcribe``'s."""
    if decoder == "ctc":
        if not hasattr(model, "cur_decoder"):
            raise ConfigError("--decoder ctc needs a hybrid model", "drop --decoder")
        model.change_decoding_strategy(decoder_type="ctc", verbose=False)
    hook = None
    if task is not None:
        hook = model.encoder.register_forward_hook(lambda module, args, out: task.advance(int(out[0].shape[0])))
    try:
        out = model.transcribe(paths, batch_size=batch_size, verbose=False)
    finally:
        if hook is not None:
            hook.remove()
        model.eval()  # transcribe() leaves modules in train mode
    if isinstance(out, tuple):  # older NeMo returns (best, all) for transducers
        out = out[0]
    return [h.text if hasattr(h, "text") else str(h) for h in out]


def _launch(cfg: EvaluateConfig):
    """One process, or a Fabric launch of ``cfg.world_size`` (see :func:`~avasr_cli.models.trainer.launch_processes`)."""
    from avasr_cli.models.trainer import launch_processes

    return launch_processes(cfg.gpus, cfg.nodes, cfg.cpu_procs, "evaluate")


def _transcribe_shared(fabric, model, paths: list[str], cfg: EvaluateConfig, task) -> list[str]:
    """Rank ``r`` of ``W`` transcribes utterances ``r, r + W, …``; every rank gets all hypotheses back in
    manifest order (one process: a plain :func:`transcribe`)."""
    if fabric is None:
        return transcribe(model, paths, cfg.batch_size, cfg.decoder, task)
    import torch.distributed as dist

    rank, world = fabric.global_rank, fabric.world_size
    part = paths[rank::world]  # empty on ranks past the split's length (NeMo refuses an empty list)
    mine = transcribe(model, part, cfg.batch_size, cfg.decoder, task if rank == 0 else None) if part else []
    parts: list = [None] * world
    dist.all_gather_object(parts, mine)
    return interleave(parts, len(paths))


def _audio(row: dict):
    """What NeMo's ``transcribe`` gets for a row: its file's path, or for a clip inside an audio shard the
    decoded samples (NeMo transcribes arrays the same way; the shard is read by offset, in manifest order)."""
    from avasr_cli.data.shards import is_sharded
    from avasr_cli.models.audio_data import read_clip

    return read_clip(row) if is_sharded(row) else row["audio_filepath"]


def interleave(parts: list[list], n: int) -> list:
    """Undo the round-robin split: ``parts[r]`` holds items ``r, r + W, …`` of ``n``."""
    out: list = [None] * n
    for r, part in enumerate(parts):
        if len(part) != len(range(r, n, len(parts))):
            raise RuntimeError(f"rank {r} returned {len(part)} hypotheses for {len(range(r, n, len(parts)))} utterances")
        out[r::len(parts)] = part
    return out


def run_evaluate(run: RunDir, cfg: EvaluateConfig, rep: Reporter | None = None) -> EvaluateResult:
    rep = rep or Reporter()
    cfg.validate()
    import torch

    from avasr_cli.data.manifest import check_audio_files, read_manifest
    from avasr_cli.report.metrics import format_errors, score

    from avasr_cli.models.trainer import quiet_libraries

    ft = run.require("finetune", "run `avasr finetune` first")
    quiet_libraries()
    model_path = run.finetune_dir / "model.nemo"
    if not model_path.is_file():
        raise InputError(f"{model_path} is missing although the finetune stage is recorded", "rerun `avasr finetune --force`")
    fabric = _launch(cfg)
    model = load_model(model_path)
    if fabric is not None:
        device = fabric.device
    else:
        device = "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
    model = model.to(device).eval()
    main = fabric is None or fabric.global_rank == 0
    prepared = run.stage("prepare") or {}
    lang = prepared.get("config", {}).get("lang")
    unit = group_unit(prepared)
    result = EvaluateResult(model=str(model_path), model_sha256=sha256_file(model_path))
    for split in cfg.splits:
        manifest = run.manifest(split)
        rows = read_manifest(manifest, require=("audio_filepath", "duration", "text"))
        if not rows:
            raise InputError(f"{manifest} is empty", "run `avasr prepare` again")
        check_audio_files(manifest, rows)  # NeMo's loader would stop on a lost or damaged clip with its own error
        share = len(rows) if fabric is None else len(range(0, len(rows), fabric.world_size))  # rank 0's part
        with rep.task(f"transcribing {split}" + (f" (rank 0 of {fabric.world_size})" if fabric else ""),
                      total=share) as task:
            hyps = _transcribe_shared(fabric, model, [_audio(r) for r in rows], cfg, task)
        if not main:
            continue
        extra = {k: [str(r.get(k, "")) for r in rows] for k in ("gender", "district") if any(k in r for r in rows)}
        scored = score([r["text"] for r in rows], hyps, utt_ids=[r.get("utt_id", str(i)) for i, r in enumerate(rows)],
                       speakers=[str(r.get("speaker", "")) for r in rows] if any("speaker" in r for r in rows) else None,
                       extra=extra or None, lang=lang,
                       groups=[str(r.get("speaker_group") or r.get("speaker") or "") for r in rows])
        report = dict(scored, split=split, group_unit=unit, manifest=str(manifest), manifest_sha256=sha256_file(manifest),
                      checkpoint=str(model_path), checkpoint_sha256=result.model_sha256,
                      decoder=ft["result"].get("decoder") if cfg.decoder == "default" else "ctc")
        write_jsonl_atomic(run.reports / f"hyps-{split}.jsonl",
                           [{"utt_id": u["utt_id"], "audio_filepath": r["audio_filepath"], "ref": r["text"], "hyp": h}
                            for u, r, h in zip(scored["utterances"], rows, hyps)])
        write_text_atomic(run.reports / f"errors-{split}.txt", format_errors(scored))
        write_json_atomic(run.reports / f"wer-{split}.json", report)
        rep.log(f"{split}: WER {scored['wer']:.2%}  CER {scored['cer']:.2%}  ({len(rows)} utterances)")
        result.splits[split] = {"wer": scored["wer"], "cer": scored["cer"], "num_utterances": len(rows),
                                "report": str(run.reports / f"wer-{split}.json")}
    if fabric is not None:
        from avasr_cli.models.trainer import teardown_distributed

        teardown_distributed()
        if not main:
            raise SystemExit(0)  # rank 0 writes the reports and records the stage
    return result


def group_unit(prepared: dict) -> str:
    """What a row's ``speaker_group`` is, as the prepare stage recorded it in run.json (``prepared``):
    ``voice`` on the built-in corpus, ``speaker`` elsewhere (and for runs prepared before groups existed)."""
    unit = (prepared.get("result") or {}).get("speaker_group_unit") if isinstance(prepared, dict) else None
    return unit if isinstance(unit, str) and unit else "speaker"


def describe(result: dict) -> str:
    return "\n".join(f"{split}: WER {s['wer']:.2%}  CER {s['cer']:.2%}  ({s['num_utterances']} utterances) → {s['report']}"
                     for split, s in result["splits"].items())
