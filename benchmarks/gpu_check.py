"""GPU readiness in one run: align (bf16, each loss), finetune (hybrid TDT-CTC, NeMo's CUDA TDT loss) and
embed-images (fp16 store) on one GPU, through avasr's own stage functions and Lightning loop.

    bash benchmarks/gpu_check.sh                 # on a GPU machine; aims to finish in under 8 minutes
    python benchmarks/gpu_check.py --device cpu --init tiny --steps 6   # a smoke run of this script on CPU

For each stage it prints steady-state seconds per step (the first steps, warm-up, excluded), peak GPU
memory (``torch.cuda.max_memory_allocated``), and, for the training stages, the fraction of the GPU's
bf16 dense peak reached: FLOPs of one training step counted by ``torch.utils.flop_counter`` on a batch of
the same shape, divided by the measured step time and by the peak (a table of known GPUs below, or
``AVASR_GPU_PEAK_TFLOPS``). The corpus is a small built-in one generated into a temporary $AVASR_HOME;
the encoder is ``--init`` (default ``medium``: 16 layers, d_model 256). Nothing needs a network.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl

# bf16 dense tensor-core peaks (TFLOPS) from the vendors' data sheets; substring of the device name
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 756.0,
                    "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0}


def peak_tflops(name: str) -> float | None:
    if os.environ.get("AVASR_GPU_PEAK_TFLOPS"):
        return float(os.environ["AVASR_GPU_PEAK_TFLOPS"])
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value
    return None


class StepMeter(pl.Callback):
    """Wall time of every training step (synchronised with the GPU), for steady-state seconds per step."""

    def __init__(self, skip: int = 3):
        self.skip, self.times = skip, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())

    @property
    def step_seconds(self):
        t = self.times[self.skip:]
        return (t[-1] - t[0]) / (len(t) - 1) if len(t) > 1 else None


def _reset_memory():
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib():
    import torch

    return round(torch.cuda.max_memory_allocated() / 2 ** 30, 2) if torch.cuda.is_available() else None


def align_step_flops(init: str, loss: str, batch: int, seconds_audio: float, vision_dim: int, patches: int) -> float:
    """FLOPs of one forward + backward of the align module on a batch of this shape (fp32 count)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from avasr_cli.models.align_module import AlignModule
    from avasr_cli.models.fastconformer import load_init

    module = AlignModule(load_init(init, seed=0), objective="image", loss=loss, vision_dim=vision_dim)
    n = int(seconds_audio * 16000)
    audio, lengths = torch.randn(batch, n) * 0.1, torch.full((batch,), n)
    ids = torch.arange(batch)
    feats = ({"patches": torch.randn(batch, patches, vision_dim)} if loss == "maxsim"
             else {"pooled": torch.randn(batch, vision_dim)})
    with FlopCounterMode(display=False) as counter:
        module.compute_loss(audio, lengths, ids, **feats).backward()
    return float(counter.get_total_flops())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--init", default="medium")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--losses", default="clip,siglip,maxsim")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="avasr-gpu-check-"))
    os.environ["AVASR_HOME"] = str(tmp / "home")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from avasr_cli.run import RunDir
    from avasr_cli.stages.align import AlignConfig, run_align
    from avasr_cli.stages.embed_images import EmbedConfig, run_embed_images
    from avasr_cli.stages.finetune import FinetuneConfig, run_finetune
    from avasr_cli.stages.prepare import PrepareConfig, run_prepare

    gpu = args.device == "cuda"
    if gpu and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA GPU here (use --device cpu for a smoke run of the script)")
    name = torch.cuda.get_device_name(0) if gpu else "cpu"
    peak = peak_tflops(name) if gpu else None
    print(f"device: {name}; bf16 peak {peak or '?'} TFLOPS; torch {torch.__version__}")
    report: dict = {"device": name, "peak_bf16_tflops": peak, "init": args.init, "batch_size": args.batch_size}

    t0 = time.time()
    base = RunDir(tmp / "base")
    pcfg = PrepareConfig(num_align=max(400, args.batch_size * 10), num_train=200, num_dev=20, num_test=20)
    run_prepare(base, pcfg)
    base.record_stage("prepare", pcfg, {})
    print(f"prepare: {time.time() - t0:.0f} s")

    def guarded(label, fn):
        """Run one check; a failure is printed and recorded, and the remaining checks still run."""
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - a readiness report lists every failure
            import traceback

            traceback.print_exc()
            report[label] = {"failed": f"{type(exc).__name__}: {exc}"}
            print(f"{label}: FAILED ({type(exc).__name__}: {exc})")

    import shutil

    clip_seconds = 4.0  # the built-in clips are a few seconds long; the FLOP count uses this length
    state: dict = {}

    def embed():
        _reset_memory()
        t0 = time.time()
        ecfg = EmbedConfig(vision="efficientnet-lite0", device=args.device, workers=2)
        emb = run_embed_images(base, ecfg)
        base.record_stage("embed-images", ecfg, emb)
        secs = time.time() - t0
        state["emb"] = emb
        report["embed"] = {"seconds": round(secs, 1), "images": emb.embedded, "peak_gib": _peak_gib(),
                           "store_dtype": emb.dtype}
        print(f"embed-images (efficientnet-lite0 on {emb.device}, {emb.dtype} store): {secs:.1f} s for "
              f"{emb.embedded} images ({emb.embedded / secs:.0f}/s, model load included), "
              f"peak {report['embed']['peak_gib']} GiB")

    def align(loss):
        emb = state["emb"]
        run = RunDir(tmp / f"align-{loss}")
        shutil.copytree(base.root, run.root)
        meter = StepMeter()
        _reset_memory()
        cfg = AlignConfig(loss=loss, init=args.init, max_steps=args.steps, batch_size=args.batch_size,
                          gpus=1 if gpu else 0, precision="bf16-mixed" if gpu else "32-true", workers=4,
                          checkpoint_every=10 ** 6)
        res = run_align(run, cfg, callbacks=[meter])
        step, peak_mem = meter.step_seconds, _peak_gib()
        flops = align_step_flops(args.init, loss, args.batch_size, clip_seconds, emb.dim, emb.num_patches)
        frac = flops / step / (peak * 1e12) if (step and peak) else None
        report[f"align-{loss}"] = {"step_seconds": step, "peak_gib": peak_mem, "flops_per_step": flops,
                                   "fraction_of_bf16_peak": frac, "final_loss": res.final_loss}
        print(f"align {loss}: {step:.3f} s/step, peak {peak_mem} GiB, {flops / 1e12:.3f} TFLOP/step "
              f"({clip_seconds:.0f} s clips), {'%.1f%%' % (100 * frac) if frac else '?'} of bf16 peak, "
              f"loss {res.final_loss:.3f}")

    def finetune():
        run = RunDir(tmp / "finetune")
        shutil.copytree(base.root, run.root)
        meter = StepMeter()
        _reset_memory()
        fcfg = FinetuneConfig(decoder="hybrid-tdt-ctc" if gpu else "ctc", init=args.init, max_steps=args.steps,
                              batch_size=args.batch_size, val_every=args.steps, gpus=1 if gpu else 0,
                              precision="bf16-mixed" if gpu else "32-true", workers=4)
        res = run_finetune(run, fcfg, callbacks=[meter])
        report["finetune"] = {"decoder": fcfg.decoder, "step_seconds": meter.step_seconds, "peak_gib": _peak_gib(),
                              "best_dev_wer": res.best_dev_wer, "notes": res.notes}
        print(f"finetune {fcfg.decoder}: {meter.step_seconds:.3f} s/step, peak {_peak_gib()} GiB"
              + (f"; notes: {'; '.join(res.notes)}" if res.notes else ""))

    guarded("embed", embed)
    for loss in [x for x in args.losses.split(",") if x]:
        if "emb" in state:
            guarded(f"align-{loss}", lambda loss=loss: align(loss))
    guarded("finetune", finetune)
    print(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
