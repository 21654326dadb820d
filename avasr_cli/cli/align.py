"""``avasr align``."""

from __future__ import annotations

from typing import Annotated

import typer

from avasr_cli.cli.common import ForceOption, GpusOption, JsonOption, NodesOption, RunDirOption, run_stage


def register(app: typer.Typer) -> None:
    @app.command("align")
    def align(
        vision: Annotated[str, typer.Option(help="Vision encoder whose cached features are the target (must match embed-images; auto = the run's).")] = "auto",
        objective: Annotated[str, typer.Option(help="image (the method) or audio-only (the control: NeMo masked-token prediction, same audio and steps).")] = "image",
        loss: Annotated[str, typer.Option(help="clip (InfoNCE), siglip (pairwise sigmoid) or maxsim (frame×patch late interaction).")] = "clip",
        pairs: Annotated[str, typer.Option(help="true, or shuffled: the negative control (each training clip paired with another clip's image; same clips, images, batches and budget; held-out recall still on true pairs).")] = "true",
        init: Annotated[str, typer.Option(help="Start encoder: a .nemo file, a NeMo pretrained name, or tiny/small/medium; builtin-ssl = the built-in pretrained encoder (`avasr pretrain`). auto = builtin-ssl on the built-in corpus when built, else a random tiny encoder.")] = "auto",
        max_steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 300,
        batch_size: Annotated[int, typer.Option(help="Pairs per process per step.")] = 16,
        accumulate: Annotated[int, typer.Option(help="Gradient accumulation steps.")] = 1,
        lr: Annotated[float, typer.Option(help="Peak learning rate of the encoder (AdamW, warm-up then cosine).")] = 1e-3,
        warmup_steps: Annotated[int, typer.Option(help="Linear warm-up steps.")] = 30,
        head_lr_ratio: Annotated[float, typer.Option(help="Learning rate of the new parts (projection head, temperature, SigLIP bias; the audio-only decoder) over --lr.")] = 1.0,
        layer_decay: Annotated[float, typer.Option(help="Layer-wise rate decay: the aligned layer gets --lr, each layer below it this factor times the one above (1 = off).")] = 1.0,
        align_layer: Annotated[int, typer.Option(help="Conformer layer whose output is aligned (0-based; negative counts from the last, -1 = the last). Later layers are not trained and are kept as they are.")] = -1,
        freeze_layers: Annotated[int, typer.Option(help="Freeze the subsampling and the first N conformer layers (0 = update all, as in the paper).")] = 0,
        siglip_bias: Annotated[str, typer.Option(help="siglip: initial logit bias, or auto = the log prior odds of a positive pair in the global batch, -ln(batch × processes - 1) (SigLIP's -10 is that prior at ~32 k).")] = "auto",
        heldout_images: Annotated[float, typer.Option(help="Fraction of images held out for recall@k before/after.")] = 0.1,
        recall_pairs: Annotated[int, typer.Option(help="At most this many held-out pairs (and as many training pairs) are scored for recall@k.")] = 1000,
        seed: Annotated[int, typer.Option(help="Seed for init, data order and held-out split.")] = 0,
        gpus: GpusOption = 0,
        nodes: NodesOption = 1,
        cpu_procs: Annotated[int, typer.Option(help="With --gpus 0: CPU processes (DDP over gloo), mostly for testing.")] = 1,
        precision: Annotated[str, typer.Option(help="auto (bf16-mixed on GPU, 32-true on CPU), 32-true, bf16-mixed, 16-mixed.")] = "auto",
        checkpoint_every: Annotated[int, typer.Option(help="Save a checkpoint every K steps (a killed run resumes from the last).")] = 100,
        workers: Annotated[int, typer.Option(help="Audio decoding worker processes.")] = 2,
        resume: Annotated[bool, typer.Option(help="Resume from the last checkpoint of an interrupted run with the same options and inputs.")] = True,
        ssl_mask_prob: Annotated[float, typer.Option(help="audio-only: probability that a masked block starts at a frame (blocks overlap; NeMo NEST recipe 0.01 ≈ a third of the frames masked).")] = 0.01,
        ssl_block_size: Annotated[int, typer.Option(help="audio-only: masked block length in 10 ms frames (NEST recipe: 40).")] = 40,
        ssl_codebook_size: Annotated[int, typer.Option(help="audio-only: random-projection codebook size (NEST recipe: 8192).")] = 8192,
        run_dir: RunDirOption = None,
        force: ForceOption = False,
        json_out: JsonOption = False,
    ) -> None:
        """Align the speech encoder with image features (or run the audio-only control).

        Trains every encoder layer (up to --align-layer) so that pooled (or frame-level) audio embeddings
        land on the cached vision features of the image that prompted the speech. No transcripts are used.
        Biases, norms, the temperature and the SigLIP bias get no weight decay. Writes the
        aligned encoder to align/encoder/, recall@k before/after on held-out and on training pairs to
        align/recall.json (and says whether the alignment generalises or only memorises pairs), and
        TensorBoard curves to align/tensorboard/.

        [bold]Examples:[/bold]

            avasr align --vision siglip2 --gpus 4

            avasr align --loss siglip --max-steps 2000

            avasr align --align-layer 8 --head-lr-ratio 2 --layer-decay 0.9

            avasr -r runs/audio-only align --objective audio-only

            avasr -r runs/shuffled align --pairs shuffled     # the negative control
        """
        from avasr_cli.errors import ConfigError
        from avasr_cli.stages.align import AlignConfig, align_inputs, describe, run_align

        try:
            bias = None if siglip_bias.strip().lower() == "auto" else float(siglip_bias)
        except ValueError:
            raise ConfigError(f"--siglip-bias {siglip_bias!r} is neither auto nor a number", "e.g. --siglip-bias -10") from None

        cfg = AlignConfig(objective=objective, vision=vision, loss=loss, pairs=pairs, init=init, max_steps=max_steps,
                          batch_size=batch_size, accumulate=accumulate, lr=lr, warmup_steps=warmup_steps,
                          head_lr_ratio=head_lr_ratio, layer_decay=layer_decay, align_layer=align_layer,
                          freeze_layers=freeze_layers, heldout_images=heldout_images, recall_pairs=recall_pairs, seed=seed, gpus=gpus,
                          nodes=nodes, cpu_procs=cpu_procs, precision=precision, checkpoint_every=checkpoint_every,
                          workers=workers, resume=resume, ssl_mask_prob=ssl_mask_prob, ssl_block_size=ssl_block_size,
                          ssl_codebook_size=ssl_codebook_size, siglip_bias=bias)
        cfg.validate()
        run_stage("align", run_dir, cfg, run_align, force=force, as_json=json_out, summary=describe,
                  inputs=align_inputs)
