"""``avasr finetune``."""

from __future__ import annotations

from typing import Annotated

import typer

from avasr_cli.cli.common import ForceOption, GpusOption, JsonOption, NodesOption, RunDirOption, run_stage


def register(app: typer.Typer) -> None:
    @app.command("finetune")
    def finetune(
        decoder: Annotated[str, typer.Option(help="hybrid-tdt-ctc (the paper's), hybrid-rnnt-ctc, rnnt, tdt or ctc. TDT runs on CPU too (avasr's PyTorch TDT loss there).")] = "hybrid-tdt-ctc",
        init: Annotated[str, typer.Option(help="Start encoder when the run has no aligned one: .nemo, NeMo pretrained name, or tiny/small/medium; builtin-ssl = the built-in pretrained encoder (`avasr pretrain`). auto = builtin-ssl on the built-in corpus when built, else a random tiny encoder.")] = "auto",
        max_steps: Annotated[int, typer.Option(help="Optimiser steps (the budget; keep it equal across arms).")] = 400,
        batch_size: Annotated[int, typer.Option(help="Utterances per process per step.")] = 16,
        accumulate: Annotated[int, typer.Option(help="Gradient accumulation steps.")] = 1,
        lr: Annotated[float, typer.Option(help="Peak learning rate of the encoder (AdamW).")] = 2e-3,
        warmup_steps: Annotated[int, typer.Option(help="Warm-up steps.")] = 40,
        head_lr_ratio: Annotated[float, typer.Option(help="Learning rate of the new decoder, joint and CTC head over --lr.")] = 1.0,
        layer_decay: Annotated[float, typer.Option(help="Layer-wise rate decay: the top encoder layer gets --lr, each layer below it this factor times the one above (1 = off).")] = 1.0,
        schedule: Annotated[str, typer.Option(help="cosine (warm-up + cosine) or noam (NeMo's NoamAnnealing).")] = "cosine",
        vocab_size: Annotated[int, typer.Option(help="SentencePiece vocabulary size (raised to cover every character).")] = 64,
        spec_augment: Annotated[bool, typer.Option(help="SpecAugment on the training batches.")] = True,
        train_hours: Annotated[float, typer.Option(help="Use a deterministic subset of this many transcribed hours (0 = all).")] = 0.0,
        val_every: Annotated[int, typer.Option(help="Dev WER every K steps; the best checkpoint by dev WER is kept.")] = 100,
        seed: Annotated[int, typer.Option(help="Seed.")] = 0,
        gpus: GpusOption = 0,
        nodes: NodesOption = 1,
        cpu_procs: Annotated[int, typer.Option(help="With --gpus 0: CPU processes (DDP over gloo), mostly for testing.")] = 1,
        precision: Annotated[str, typer.Option(help="auto (bf16-mixed on GPU, 32-true on CPU) or a Lightning precision.")] = "auto",
        workers: Annotated[int, typer.Option(help="Data loading worker processes.")] = 2,
        resume: Annotated[bool, typer.Option(help="Resume from the last checkpoint of an interrupted run with the same options.")] = True,
        run_dir: RunDirOption = None,
        force: ForceOption = False,
        json_out: JsonOption = False,
    ) -> None:
        """Fine-tune a NeMo FastConformer ASR model on the transcribed train split.

        Starts from the run's aligned encoder when it has one, else from --init. Trains a SentencePiece
        tokenizer on the train transcripts (text kept as written) and always a fresh decoder (its own rate:
        --head-lr-ratio; biases and norms get no weight decay). Writes finetune/model.nemo (best dev WER)
        and records the budget for `avasr compare`.

        [bold]Examples:[/bold]

            avasr finetune

            avasr finetune --decoder ctc --max-steps 400

            avasr finetune --train-hours 1 --gpus 2

            avasr finetune --lr 1.4e-4 --head-lr-ratio 2 --warmup-steps 5000 --max-steps 50000 --gpus 1
        """
        from avasr_cli.stages.finetune import FinetuneConfig, describe, finetune_inputs, run_finetune

        cfg = FinetuneConfig(decoder=decoder, init=init, max_steps=max_steps, batch_size=batch_size,
                             accumulate=accumulate, lr=lr, warmup_steps=warmup_steps, head_lr_ratio=head_lr_ratio,
                             layer_decay=layer_decay, schedule=schedule,
                             vocab_size=vocab_size, spec_augment=spec_augment, train_hours=train_hours,
                             val_every=val_every, seed=seed, gpus=gpus, nodes=nodes, cpu_procs=cpu_procs, precision=precision,
                             workers=workers, resume=resume)
        cfg.validate()
        run_stage("finetune", run_dir, cfg, run_finetune, force=force, as_json=json_out, summary=describe,
                  inputs=finetune_inputs)
