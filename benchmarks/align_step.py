"""avasr's align step against a bare step of the same encoder on the same batches, in one run.

    python benchmarks/align_step.py [--steps 40] [--batch-size 16] [--init tiny] [--loss clip]

* bare:  a plain loop over batches already in memory: preprocessor + FastConformer + head + loss,
         backward, AdamW step — no Lightning, no data loading, no feature reads — with torch's
         deterministic algorithms on, as ``run_align`` trains (also timed with the default kernels, to
         show what determinism costs on its own).
* avasr: ``run_align`` end to end through Lightning with its DataLoader (audio decoded in workers,
         duration bucketing) and image features read per batch from the memory-mapped store.

Both run the same number of optimiser steps of the same batch size on the same corpus (a small built-in
corpus generated into a temporary $AVASR_HOME). Prints seconds per step for each and the overhead
ratio; the target is avasr/bare ≤ 1.10. On a 2-core machine, ``--workers 2`` (the default) puts two
loader processes beside the step's two torch threads; ``--workers 0`` shows the step without them. Also
prints the cost of reading one batch of features from the store against the bare step.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--init", default="tiny")
    ap.add_argument("--loss", default="clip")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="avasr-bench-"))
    os.environ["AVASR_HOME"] = str(tmp / "home")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from avasr_cli.data.manifest import read_manifest
    from avasr_cli.models.align_module import AlignModule
    from avasr_cli.models.audio_data import BucketBatchSampler, PairCollate, PairDataset
    from avasr_cli.models.fastconformer import load_init
    from avasr_cli.run import RunDir
    from avasr_cli.stages.align import AlignConfig, load_features, run_align
    from avasr_cli.stages.embed_images import EmbedConfig, run_embed_images
    from avasr_cli.stages.prepare import PrepareConfig, run_prepare

    run = RunDir(tmp / "run")
    pcfg = PrepareConfig(num_align=max(200, args.batch_size * 12), num_train=20, num_dev=4, num_test=4)
    run_prepare(run, pcfg)
    run.record_stage("prepare", pcfg, {})
    ecfg = EmbedConfig(workers=0)
    run_embed_images(run, ecfg)
    run.record_stage("embed-images", ecfg, {})
    cfg = AlignConfig(max_steps=args.steps, batch_size=args.batch_size, init=args.init, loss=args.loss,
                      heldout_images=0.0, workers=args.workers, checkpoint_every=10 ** 6, warmup_steps=1)

    # bare: same module, batches pre-loaded in memory, plain loop
    rows = read_manifest(run.manifest("align"))
    index, info = load_features(run, cfg, rows)
    torch.manual_seed(0)
    module = AlignModule(load_init(args.init), objective="image", loss=args.loss, vision_dim=info["dim"],
                         rows=rows, image_index=index, store_path=info["store"])
    data = PairDataset(rows, index)
    collate = PairCollate(info["store"], patches=args.loss == "maxsim")
    sampler = BucketBatchSampler([float(r["duration"]) for r in rows], args.batch_size, seed=0)
    order, epoch = [], 0
    while len(order) < args.steps:  # epoch after epoch, as the fit draws them (its module sets the epoch)
        sampler.set_epoch(epoch)
        order += list(sampler)
        epoch += 1
    batches = [collate([data[j] for j in b]) for b in order[: args.steps]]  # the batches avasr trains on
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-3)
    module.train()

    def bare_step(batch) -> None:
        loss = module.compute_loss(*batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        opt.step()

    def time_bare() -> float:
        for b in batches[:3]:  # warm-up
            bare_step(b)
        start = time.perf_counter()
        for i in range(args.steps):
            bare_step(batches[i % len(batches)])
        return (time.perf_counter() - start) / args.steps

    torch.use_deterministic_algorithms(False)
    bare_free = time_bare()  # torch's default kernels
    torch.use_deterministic_algorithms(True, warn_only=True)  # what run_align trains with (make_deterministic)
    bare_before = time_bare()

    shas = [r["image_sha256"] for r in rows[: args.batch_size]]
    start = time.perf_counter()
    for _ in range(50):
        collate.features(shas)
    read = (time.perf_counter() - start) / 50

    start = time.perf_counter()
    result = run_align(run, cfg)
    total = time.perf_counter() - start
    avasr = result.step_seconds  # steady-state step of the fit loop, data loading included
    bare = min(bare_before, time_bare())  # deterministic, before and after avasr's run; the faster counts

    print(f"batch {args.batch_size}, {args.steps} steps, encoder {args.init}, loss {args.loss}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"bare step (in-memory batches, plain loop) : {bare * 1000:8.1f} ms   (deterministic algorithms, as avasr "
          f"trains; {bare_free * 1000:.1f} ms with torch's default kernels)")
    print(f"avasr align step (Lightning + DataLoader) : {avasr * 1000:8.1f} ms   "
          f"(whole run_align incl. set-up and recall: {total:.1f} s, fit {result.seconds:.1f} s)")
    print(f"overhead ratio avasr / bare               : {avasr / bare:8.3f}   (target <= 1.10)")
    print(f"feature read for one batch from the store : {read * 1000:8.3f} ms   ({read / bare:.4f} of a bare step)")


if __name__ == "__main__":
    main()
