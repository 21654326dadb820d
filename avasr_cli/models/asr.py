"""NeMo ASR models for fine-tuning: a SentencePiece tokenizer trained on the train transcripts (text as
written, no NFKD), and model configs built in code for each decoder.

Only the encoder (and its preprocessor settings) is ever transferred from an earlier model; the decoder
is always built fresh for the new tokenizer, so the "same vocabulary size silently reloads the old
decoder" trap cannot happen.
"""

from __future__ import annotations

import copy
from pathlib import Path

from avasr_cli.errors import ConfigError, InputError

DECODERS = ("hybrid-tdt-ctc", "hybrid-rnnt-ctc", "rnnt", "tdt", "ctc")
TDT_DURATIONS = [0, 1, 2, 3, 4]


def train_tokenizer(texts: list[str], out_dir: Path, vocab_size: int, seed: int = 0) -> dict:
    """Unigram SentencePiece with identity normalisation; checks every transcript round-trips."""
    import sentencepiece as spm

    texts = [t for t in texts if t.strip()]
    if not texts:
        raise InputError("the train split has no non-empty transcripts", "check data/train.jsonl (run `avasr prepare`)")
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = out_dir / "train_text.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    chars = sorted({c for t in texts for c in t if not c.isspace()})
    # the vocabulary must hold every character plus the specials; unigram needs some room above that
    vocab_size = max(vocab_size, len(chars) + 4)
    import os
    import tempfile

    with tempfile.TemporaryDirectory(dir=out_dir) as tmpdir:
        prefix = os.path.join(tmpdir, "tokenizer")
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=prefix, vocab_size=vocab_size, model_type="unigram",
            character_coverage=1.0, normalization_rule_name="identity", remove_extra_whitespaces=True,
            hard_vocab_limit=False, bos_id=-1, eos_id=-1, unk_id=0, num_threads=1, minloglevel=2,
        )
        os.replace(prefix + ".model", out_dir / "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_file=str(out_dir / "tokenizer.model"))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    (out_dir / "vocab.txt").write_text("\n".join(pieces) + "\n", encoding="utf-8")
    # the .model file embeds its training paths; the vocabulary (pieces + scores) identifies the tokenizer
    import hashlib

    vocab_id = hashlib.sha256("\n".join(f"{p}\t{sp.get_score(i):.6f}" for i, p in enumerate(pieces)).encode()).hexdigest()
    bad = [t for t in texts if sp.decode(sp.encode(" ".join(t.split()))) != " ".join(t.split())]
    unk = sorted({c for c in chars if sp.piece_to_id(c) == sp.unk_id() and not any(c in p for p in pieces)})
    return {"vocab_size": sp.get_piece_size(), "vocab_sha256": vocab_id, "round_trip_failures": len(bad), "examples": bad[:3],
            "unrepresentable_chars": unk, "num_chars": len(chars)}


def _streamed(ds: dict, shards: tuple, *, train: bool, seed: int, max_duration: float) -> dict:
    """NeMo's Lhotse loader over tarred shards: read in sequence (no random access), shards shuffled
    (``shard_seed``), clips bucketed by duration (training) so a batch holds clips of similar length."""
    manifests, tars, clips = shards
    cfg = dict(ds, use_lhotse=True, manifest_filepath=manifests, tarred_audio_filepaths=tars, is_tarred=True,
               skip_missing_manifest_entries=True, shuffle=train, seed=seed, shard_seed=seed,
               max_duration=max_duration if train else float("inf"), min_duration=0.1 if train else -1,
               drop_last=False, pretokenize=False,
               force_finite=not train)  # training streams endlessly (epochs by count); dev is scored once, whole
    if train:
        cfg.update(use_bucketing=True, num_buckets=max(1, min(30, clips // max(1, 4 * ds["batch_size"]))),
                   num_cuts_for_bins_estimate=min(10_000, clips), bucket_buffer_size=min(10_000, clips),
                   shuffle_buffer_size=min(10_000, clips), concurrent_bucketing=False)
    return cfg


def build_config(decoder: str, preprocessor: dict, encoder: dict, tokenizer_dir: Path, train_manifest: Path,
                 dev_manifest: Path, *, batch_size: int, lr: float, weight_decay: float, warmup_steps: int,
                 max_steps: int, schedule: str, workers: int, spec_augment: bool, max_duration: float,
                 pred_hidden: int | None = None, lowest_lr: float | None = None, train_shards: tuple | None = None,
                 dev_shards: tuple | None = None, seed: int = 0, rank: int = 0) -> dict:
    """A NeMo model config for ``decoder`` on top of ``encoder``. ``lowest_lr``: the smallest peak rate of
    any parameter group (the schedule's floor stays below it; default ``lr``).

    ``train_shards`` / ``dev_shards``: ``(manifest pattern, tar pattern, clips)`` of a split in NeMo's
    tarred audio layout (``avasr prepare --audio-layout shards``): that split is then streamed by NeMo's
    Lhotse data loader, shards shuffled and clips drawn into duration buckets of ``batch_size`` clips.
    ``rank``: this process's global rank (its shuffle seed; under DDP ``train_shards`` are already this
    rank's own disjoint part, :func:`avasr_cli.data.shards.nemo_patterns`)."""
    if decoder not in DECODERS:
        raise ConfigError(f"--decoder {decoder!r} is not one of {', '.join(DECODERS)}", "see `avasr finetune --help`")
    d_model = int(encoder["d_model"])
    hidden = pred_hidden or min(640, max(64, d_model))
    ds = {"sample_rate": 16000, "batch_size": batch_size, "num_workers": workers, "pin_memory": False,
          "use_start_end_token": False, "trim_silence": False}
    cfg: dict = {
        "sample_rate": 16000,
        "log_prediction": False,
        "compute_eval_loss": False,
        "skip_nan_grad": False,
        "tokenizer": {"dir": str(tokenizer_dir), "type": "bpe"},
        "train_ds": dict(ds, manifest_filepath=str(train_manifest), shuffle=True, max_duration=max_duration,
                         min_duration=0.1) if train_shards is None else
        _streamed(ds, train_shards, train=True, seed=seed * 1_000_003 + rank, max_duration=max_duration),
        "validation_ds": dict(ds, manifest_filepath=str(dev_manifest), shuffle=False) if dev_shards is None else
        _streamed(ds, dev_shards, train=False, seed=seed, max_duration=max_duration),
        "preprocessor": dict(copy.deepcopy(preprocessor), pad_to=0),
        "spec_augment": {"_target_": "nemo.collections.asr.modules.SpectrogramAugmentation",
                         "freq_masks": 2 if spec_augment else 0, "time_masks": 4 if spec_augment else 0,
                         "freq_width": 15, "time_width": 0.05},
        "encoder": copy.deepcopy(encoder),
        "optim": {"name": "adamw", "lr": lr, "betas": [0.9, 0.98], "weight_decay": weight_decay,
                  "sched": _schedule(schedule, warmup_steps, max_steps, d_model, lowest_lr or lr)},
    }
    ctc_decoder = {"_target_": "nemo.collections.asr.modules.ConvASRDecoder", "feat_in": d_model,
                   "num_classes": -1, "vocabulary": []}
    if decoder == "ctc":
        cfg["decoder"] = ctc_decoder
        cfg["decoding"] = {"strategy": "greedy_batch"}
        return cfg
    tdt = "tdt" in decoder
    cfg["model_defaults"] = {"enc_hidden": d_model, "pred_hidden": hidden, "joint_hidden": hidden}
    cfg["decoder"] = {"_target_": "nemo.collections.asr.modules.RNNTDecoder", "normalization_mode": None,
                      "random_state_sampling": False, "blank_as_pad": True,
                      "prednet": {"pred_hidden": hidden, "pred_rnn_layers": 1, "t_max": None, "dropout": 0.1}}
    cfg["joint"] = {"_target_": "nemo.collections.asr.modules.RNNTJoint", "log_softmax": None,
                    "preserve_memory": False, "fuse_loss_wer": True, "fused_batch_size": max(1, batch_size),
                    "jointnet": {"joint_hidden": hidden, "activation": "relu", "dropout": 0.1}}
    cfg["decoding"] = {"strategy": "greedy_batch", "greedy": {"max_symbols": 10}}
    cfg["loss"] = {"loss_name": "default"}
    if tdt:
        cfg["model_defaults"]["tdt_durations"] = TDT_DURATIONS
        cfg["joint"]["num_extra_outputs"] = len(TDT_DURATIONS)
        cfg["decoding"].update({"model_type": "tdt", "durations": TDT_DURATIONS})
        cfg["loss"] = {"loss_name": "tdt", "tdt_kwargs": {"fastemit_lambda": 0.0, "clamp": -1.0,
                                                          "durations": TDT_DURATIONS, "sigma": 0.02, "omega": 0.1}}
    if decoder.startswith("hybrid"):
        cfg["aux_ctc"] = {"ctc_loss_weight": 0.3, "use_cer": False, "ctc_reduction": "mean_batch",
                          "decoder": dict(ctc_decoder, feat_in=None), "decoding": {"strategy": "greedy"}}
    return cfg


def _schedule(name: str, warmup: int, max_steps: int, d_model: int, lowest_lr: float) -> dict:
    min_lr = min(1e-6, lowest_lr / 100)  # NeMo refuses a group's peak below the floor
    if name == "cosine":
        return {"name": "CosineAnnealing", "warmup_steps": warmup, "min_lr": min_lr, "max_steps": max_steps}
    if name == "noam":
        return {"name": "NoamAnnealing", "d_model": d_model, "warmup_steps": warmup, "min_lr": min_lr, "max_steps": max_steps}
    raise ConfigError(f"--schedule {name!r} is not one of cosine, noam", "see `avasr finetune --help`")


def model_class(decoder: str):
    from nemo.collections.asr.models import EncDecCTCModelBPE, EncDecHybridRNNTCTCBPEModel, EncDecRNNTBPEModel

    if decoder == "ctc":
        return EncDecCTCModelBPE
    if decoder.startswith("hybrid"):
        return EncDecHybridRNNTCTCBPEModel
    return EncDecRNNTBPEModel


def use_cpu_tdt_loss(model) -> bool:
    """Give a NeMo transducer model built with ``loss.loss_name: tdt`` avasr's PyTorch TDT loss.

    NeMo's TDT loss (``TDTLossNumba``) raises on CPU tensors. This swaps the callable inside the model's
    ``RNNTLoss`` wrapper (``model.loss._loss``), which is also what the fused joint calls (the joint holds the
    same ``RNNTLoss`` object), for a :class:`~avasr_cli.models.tdt_loss.TDTLoss` with the same blank, durations,
    sigma and omega. CUDA tensors still go to NeMo's kernel. Returns whether the model had a TDT loss.
    """
    from avasr_cli.models.tdt_loss import TDTLoss

    wrapper = getattr(model, "loss", None)
    inner = getattr(wrapper, "_loss", None)
    if inner is None or isinstance(inner, TDTLoss) or type(inner).__name__ != "TDTLossNumba":
        return isinstance(inner, TDTLoss)
    if inner.fastemit_lambda or inner.clamp > 0:
        raise ConfigError("the CPU TDT loss supports neither FastEmit nor gradient clamping",
                          "set loss.tdt_kwargs fastemit_lambda to 0.0 and clamp to -1.0")
    wrapper._loss = TDTLoss(blank=inner.blank, durations=list(inner.durations), reduction=inner.reduction,
                            sigma=inner.sigma, omega=inner.omega, fallback=inner)
    joint = getattr(model, "joint", None)
    held = getattr(joint, "_loss", None)  # NeMo's fused joint holds model.loss itself (joint.set_loss(model.loss))
    if held is not None and held is not wrapper and type(getattr(held, "_loss", None)).__name__ == "TDTLossNumba":
        held._loss = wrapper._loss
    return True
