"""Peak memory of the maxsim loss (forward + backward), computed in blocks against in one shot.

    python benchmarks/maxsim_memory.py [--batch 32] [--frames 250] [--patches 196] [--dim 768]
                                       [--block 4194304] [--modes unchunked,chunked]

The default setting is the one the scale issue names: a batch of 32 clips of 20 s (10 ms hop, 8x
subsampling → 250 encoder frames) against 32 images of 196 patch tokens, dimension 768, fp32, on the
CPU. The patch tokens come from the feature store and carry no gradient; the frames do.

Each mode runs twice, each time in a fresh Python process (``--child``), and reports two peaks of the
loss's forward + backward, both above what was allocated before it (inputs, and kernels warmed up on
a tiny batch):

* ``live``: the largest total of torch tensors alive at once, from the allocation and free events that
  ``torch.profiler`` records with ``profile_memory=True`` (exact for torch's own allocations);
* ``rss``: the growth of the process's maximum resident set size (``getrusage``) in a run without the
  profiler (whose own buffers would count), which adds the C allocator's slack.

``unchunked`` is the one-shot computation (one block holding the whole [B, B, T, P] similarity tensor,
as before chunking); ``chunked`` uses ``--block`` entries per block (avasr's default). Also printed: the
analytic size of the full similarity tensor, the block size, seconds (of the plain run), and the
largest difference of loss and frame gradient between the modes (they must agree). The last line is
the ratio of the peaks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

HUGE = 1 << 62  # a block larger than any similarity tensor: the one-shot computation


def child(args) -> None:
    import resource
    import time

    import torch

    from avasr_cli.models.losses import MaxSimLoss

    def step(b, t, p, d, block):
        g = torch.Generator().manual_seed(0)
        frames = torch.randn(b, t, d, generator=g, requires_grad=True)
        patches = torch.randn(b, p, d, generator=g)
        lengths = torch.full((b,), t)
        loss = MaxSimLoss(gather=False, block=block) if block else MaxSimLoss(gather=False)  # 0: the default
        return frames, lengths, patches, torch.arange(b), loss

    frames, lengths, patches, ids, loss_fn = step(4, 8, 6, 16, args.child)  # warm-up: kernels, thread pools
    loss_fn(frames, lengths, patches, ids).backward()
    frames, lengths, patches, ids, loss_fn = step(args.batch, args.frames, args.patches, args.dim, args.child)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    if not args.profile:
        loss = loss_fn(frames, lengths, patches, ids)
        loss.backward()
        seconds = time.perf_counter() - start
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        torch.save({"loss": loss.detach(), "grad": frames.grad}, args.out)
        print(json.dumps({"rss_mib": (rss - before) / 1024, "seconds": seconds}))
        return
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        loss_fn(frames, lengths, patches, ids).backward()
    live = peak = 0
    for _, nbytes in sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                            if e.name() == "[memory]"):
        live += nbytes
        peak = max(peak, live)
    print(json.dumps({"live_mib": peak / 2**20}))


def measure(block: int, sizes: list[str], out: str) -> dict:
    """Two fresh processes: one plain (max RSS, seconds, the loss and gradient), one under the profiler."""
    result = {}
    for extra in ([], ["--profile"]):
        proc = subprocess.run([sys.executable, __file__, "--child", str(block), "--out", out, *extra, *sizes],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"child for block {block} failed:\n{proc.stderr[-3000:]}")
        result.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--frames", type=int, default=250)
    ap.add_argument("--patches", type=int, default=196)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--block", type=int, help="similarity entries per block (default: avasr's MAXSIM_BLOCK)")
    ap.add_argument("--modes", default="unchunked,chunked")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        return child(args)
    from avasr_cli.models.losses import MAXSIM_BLOCK

    args.block = args.block or MAXSIM_BLOCK

    import tempfile
    from pathlib import Path

    import torch

    b, t, p, d = args.batch, args.frames, args.patches, args.dim
    sizes = ["--batch", str(b), "--frames", str(t), "--patches", str(p), "--dim", str(d)]
    full = b * b * t * p * 4
    print(f"maxsim forward+backward, fp32 CPU: {b} clips x {t} frames against {b} images x {p} patches, dim {d}")
    print(f"full similarity tensor [B, B, T, P]: {full / 2**20:.0f} MiB; block: {args.block} entries "
          f"({min(args.block, b * b * t * p) * 4 / 2**20:.0f} MiB)")
    tmp = Path(tempfile.mkdtemp(prefix="maxsim-mem-"))
    results = {}
    for mode in args.modes.split(","):
        block = HUGE if mode == "unchunked" else args.block
        results[mode] = measure(block, sizes, str(tmp / f"{mode}.pt"))
        r = results[mode]
        print(f"{mode:>10}: peak live tensors {r['live_mib']:6.0f} MiB, max RSS +{r['rss_mib']:6.0f} MiB, "
              f"{r['seconds']:.2f} s")
    if {"unchunked", "chunked"} <= set(results):
        one, blocks = (torch.load(tmp / f"{m}.pt") for m in ("unchunked", "chunked"))
        print(f"largest difference: loss {float((one['loss'] - blocks['loss']).abs()):.2e}, "
              f"frame gradient {float((one['grad'] - blocks['grad']).abs().max()):.2e}")
        one, blocks = results["unchunked"], results["chunked"]
        print(f"peak ratio unchunked/chunked: live tensors {one['live_mib'] / blocks['live_mib']:.1f}x, "
              f"max RSS {one['rss_mib'] / blocks['rss_mib']:.1f}x")


if __name__ == "__main__":
    main()
