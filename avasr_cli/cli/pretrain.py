"""``avasr pretrain``."""

from __future__ import annotations

from typing import Annotated

import typer

from avasr_cli.cli.common import ForceOption, GpusOption, JsonOption, NodesOption


def register(app: typer.Typer) -> None:
    @app.command("pretrain")
    def pretrain(
        lang: Annotated[str, typer.Option(help="Built-in pool language (kannada, hindi); ignored with --manifest.")] = "kannada",
        manifest: Annotated[str, typer.Option(help="Your own untranscribed audio: NeMo JSON lines with audio_filepath and duration (default: the built-in pool).")] = "",
        out: Annotated[str, typer.Option(help="Output directory (default for the built-in pool: $AVASR_HOME/pretrained/builtin-ssl-<lang>).")] = "",
        init: Annotated[str, typer.Option(help="Encoder to start from: tiny/small/medium (random), a .nemo file, a NeMo pretrained name or an avasr encoder directory.")] = "tiny",
        num_clips: Annotated[int, typer.Option(help="Clips in the built-in pool (10x the default alignment pool).")] = 8000,
        max_steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 600,
        batch_size: Annotated[int, typer.Option(help="Clips per process per step.")] = 16,
        accumulate: Annotated[int, typer.Option(help="Gradient accumulation steps.")] = 1,
        lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, warm-up then cosine).")] = 1e-3,
        warmup_steps: Annotated[int, typer.Option(help="Linear warm-up steps.")] = 60,
        seed: Annotated[int, typer.Option(help="Seed for the pool, init and data order.")] = 0,
        ssl_mask_prob: Annotated[float, typer.Option(help="Probability that a masked block starts at a frame (NeMo NEST recipe: 0.01).")] = 0.01,
        ssl_block_size: Annotated[int, typer.Option(help="Masked block length in 10 ms frames (NEST recipe: 40).")] = 40,
        ssl_codebook_size: Annotated[int, typer.Option(help="Random-projection codebook size (NEST recipe: 8192).")] = 8192,
        gpus: GpusOption = 0,
        nodes: NodesOption = 1,
        cpu_procs: Annotated[int, typer.Option(help="With --gpus 0: CPU processes (DDP over gloo), mostly for testing.")] = 1,
        precision: Annotated[str, typer.Option(help="auto (bf16-mixed on GPU, 32-true on CPU), 32-true, bf16-mixed, 16-mixed.")] = "auto",
        checkpoint_every: Annotated[int, typer.Option(help="Save a checkpoint every K steps (a killed run resumes from the last).")] = 250,
        workers: Annotated[int, typer.Option(help="Audio decoding worker processes.")] = 2,
        resume: Annotated[bool, typer.Option(help="Resume an interrupted run with the same options.")] = True,
        force: ForceOption = False,
        json_out: JsonOption = False,
    ) -> None:
        """Pretrain a speech encoder with self-supervision on untranscribed audio (the paper's starting point).

        Runs NeMo's NEST / BEST-RQ masked-token prediction (the audio-only control's objective) on audio
        that the experiment does not use: the built-in pool (its own speakers and sentences, ten times
        the alignment pool) or your --manifest. The result is a valid --init for align and finetune; on
        the built-in corpus `--init auto` picks it up once it exists. Not a run-directory stage: the
        output is shared, like the corpus cache.

        [bold]Examples:[/bold]

            avasr pretrain --lang kannada

            avasr pretrain --manifest unlabelled.jsonl --init small --out ssl/kn-small --gpus 4

            avasr -r runs/align align --init ssl/kn-small/encoder
        """
        import json

        from avasr_cli.cli.common import err, reporter
        from avasr_cli.cli.common import out as stdout
        from avasr_cli.stages.pretrain import PretrainConfig, describe, run_pretrain

        cfg = PretrainConfig(lang=lang, manifest=manifest, out=out, init=init, num_clips=num_clips,
                             max_steps=max_steps, batch_size=batch_size, accumulate=accumulate, lr=lr,
                             warmup_steps=warmup_steps, seed=seed, ssl_mask_prob=ssl_mask_prob,
                             ssl_block_size=ssl_block_size, ssl_codebook_size=ssl_codebook_size, gpus=gpus,
                             nodes=nodes, cpu_procs=cpu_procs, precision=precision, checkpoint_every=checkpoint_every,
                             resume=resume, workers=workers)
        cfg.validate()
        err.print("[bold]avasr pretrain[/bold]")
        result = run_pretrain(cfg, reporter(), force=force)
        if json_out:
            stdout.print_json(json.dumps(result, ensure_ascii=False))
        else:
            stdout.print(describe(result))
