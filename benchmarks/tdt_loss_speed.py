"""How fast is avasr's PyTorch TDT loss on the CPU, next to NeMo's CPU RNN-T loss?

Times forward + backward on one random joint output (default B=4, T=32, U=22, V=48, durations 0..4), median
of ``--repeats`` runs after a warm-up, for each thread count in ``--threads``:

* NeMo ``RNNTLoss`` default (numba ``warprnnt_numba``) on the CPU, plus the log-softmax the joint applies there;
* avasr ``tdt_loss`` with sigma 0.02 and omega 0 (TDT only) and omega 0.1 (TDT + RNN-T, avasr's setting);
* NeMo's loop-based ``TDTLossPytorch`` reference (its ``.cuda()`` calls made no-ops), once, with ``--reference``.

    python benchmarks/tdt_loss_speed.py [--batch 4] [--frames 32] [--labels 22] [--vocab 48] [--threads 0 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (numba compiles on its first call)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--labels", type=int, default=22)
    parser.add_argument("--vocab", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, nargs="+", default=[0, 1], help="0 = torch's default")
    parser.add_argument("--reference", action="store_true", help="also time NeMo's loop-based TDTLossPytorch")
    args = parser.parse_args()

    from nemo.collections.asr.losses.rnnt import RNNTLoss

    from avasr_cli.models.tdt_loss import tdt_loss

    B, T, U, V = args.batch, args.frames, args.labels, args.vocab
    durations = [0, 1, 2, 3, 4]
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(B, T, U + 1, V + 1 + len(durations), generator=g)
    labels = torch.randint(0, V, (B, U), generator=g)
    act_lens, label_lens = torch.full((B,), T), torch.full((B,), U)
    rnnt = RNNTLoss(num_classes=V, reduction="mean_batch", loss_name="default")

    def nemo_rnnt():
        x = acts[..., : V + 1].clone().requires_grad_()
        rnnt(log_probs=x.log_softmax(-1), targets=labels, input_lengths=act_lens, target_lengths=label_lens).backward()

    def avasr_tdt(omega):
        def run():
            x = acts.clone().requires_grad_()
            loss = tdt_loss(x, labels, act_lens, label_lens, blank=V, durations=durations, sigma=0.02, omega=omega)
            loss.mean().backward()
        return run

    default_threads = torch.get_num_threads()
    print(f"B={B} T={T} U={U} V={V} durations={durations}; forward+backward, median of {args.repeats} (ms)")
    print(f"{'threads':>7}  {'NeMo RNN-T (numba, CPU)':>24}  {'avasr TDT':>10}  {'avasr TDT+0.1 RNN-T':>20}  "
          f"{'speed-up':>8}")
    for threads in args.threads:
        torch.set_num_threads(threads or default_threads)
        base = timed(nemo_rnnt, args.repeats)
        tdt = timed(avasr_tdt(0.0), args.repeats)
        mixed = timed(avasr_tdt(0.1), args.repeats)
        print(f"{torch.get_num_threads():>7}  {base:>24.1f}  {tdt:>10.1f}  {mixed:>20.1f}  {base / mixed:>7.1f}x")
    torch.set_num_threads(default_threads)

    if args.reference:
        from nemo.collections.asr.losses.rnnt_pytorch import TDTLossPytorch

        torch.Tensor.cuda = lambda self, *a, **k: self  # the reference hard-codes .cuda()
        ref = TDTLossPytorch(blank=V, durations=durations, reduction="mean_batch", sigma=0.02)
        x = acts.clone().requires_grad_()
        start = time.perf_counter()
        ref(acts=x, labels=labels, act_lens=act_lens, label_lens=label_lens).backward()
        print(f"NeMo TDTLossPytorch (loop reference), once: {(time.perf_counter() - start) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
