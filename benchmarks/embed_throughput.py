"""Embedding throughput: avasr end to end vs the bare model forward, measured in one run.

    python benchmarks/embed_throughput.py                       # tiny-siglip (untrained), 256 images
    python benchmarks/embed_throughput.py --model efficientnet-lite0  # the built-in corpus's default (ImageNet CNN)
    python benchmarks/embed_throughput.py --synthetic small          # untrained ViT-S-sized SigLIP (realistic compute)
    python benchmarks/embed_throughput.py --model /models/siglip2-base --batch-size 32

End to end = ``run_embed_images`` on a fresh run directory and a temporary ``AVASR_HOME`` (PNG decoding,
preprocessing in DataLoader workers, forward, fp16 shard writes; model loading excluded, reported apart).
Bare = the model's forward alone on pixel tensors decoded and preprocessed beforehand, same batches.
The ratio end-to-end / bare is the share of model speed the pipeline keeps (target ≥ 0.9).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_images(folder: Path, n: int, size: int) -> list[Path]:
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        base = rng.integers(0, 255, 3)
        yy, xx = np.mgrid[0:size, 0:size]
        arr = (base + 0.4 * xx[..., None] + 0.3 * yy[..., None]) % 255  # gradient + shapes, like the built-in corpus
        img = Image.fromarray(arr.astype("uint8"))
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x0, y0 = (int(v) for v in rng.integers(0, size - 20, 2))
            draw.ellipse([x0, y0, x0 + int(rng.integers(10, size // 2)), y0 + int(rng.integers(10, size // 2))],
                         fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        path = folder / f"img{i:04d}.png"
        img.save(path)
        paths.append(path)
    return paths


def write_run(root: Path, paths: list[Path]):
    from avasr_cli.run import RunDir, write_jsonl_atomic

    run = RunDir(root)
    rows = [{"audio_filepath": f"/dev/null/{i}.wav", "duration": 1.0, "text": "", "image_filepath": str(p),
             "utt_id": f"u{i}", "speaker": "s0"} for i, p in enumerate(paths)]
    write_jsonl_atomic(run.manifest("align"), rows)
    run.record_stage("prepare", {"source": "benchmark", "lang": "none"}, {})
    return run


SYNTHETIC = {  # untrained SigLIP towers of real sizes, built from configs (no download): compute like the real thing
    "small": dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=6),
    "base": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
}


def build_synthetic(folder: Path, size: str) -> Path:
    import torch
    from transformers import SiglipVisionConfig, SiglipVisionModel
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    torch.manual_seed(0)
    path = folder / f"synthetic-siglip-{size}-untrained"
    SiglipVisionModel(SiglipVisionConfig(image_size=224, patch_size=16, avasr_untrained=True, **SYNTHETIC[size])).save_pretrained(path)
    SiglipImageProcessorPil(size={"height": 224, "width": 224}).save_pretrained(path)
    return path


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (DataLoader workers are reaped when a loop ends)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


CPU: dict[str, list[float]] = {"bare": [], "e2e": []}  # CPU ms per image: robust to other processes' load


def bare_forward(enc, paths: list[Path], batch_size: int) -> float:
    """images/s of the model forward alone on pre-loaded pixel tensors."""
    import torch
    from PIL import Image

    batches = []
    for i in range(0, len(paths), batch_size):
        imgs = [Image.open(p).convert("RGB") for p in paths[i : i + batch_size]]
        batch = enc.preprocessor(imgs)
        batches.append({k: (v.to(enc.device, enc.dtype) if v.is_floating_point() else v.to(enc.device)) for k, v in batch.items()})

    call = enc.backend.run  # the family's own forward (model call + token slicing), as the stage runs it

    with torch.inference_mode():
        call(batches[0])  # warm-up
        t0, c0 = time.perf_counter(), cpu_seconds()
        for b in batches:
            call(b)
        if str(enc.device).startswith("cuda"):
            torch.cuda.synchronize()
        CPU["bare"].append((cpu_seconds() - c0) * 1e3 / len(paths))
        return len(paths) / (time.perf_counter() - t0)


def loader_only(enc, paths: list[Path], batch_size: int, workers: int) -> float:
    """images/s of decoding + preprocessing alone, through the stage's own DataLoader setup."""
    import torch

    from avasr_cli.vision.images import ImageFiles, PreprocessBatch

    loader = torch.utils.data.DataLoader(ImageFiles([(str(i), str(p)) for i, p in enumerate(paths)]), batch_size=batch_size,
                                         num_workers=workers, collate_fn=PreprocessBatch(enc.preprocessor),
                                         prefetch_factor=4 if workers else None)
    t0 = time.perf_counter()
    n = sum(len(shas) for shas, _, _ in loader)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-siglip", help="registry name, hub id or local directory")
    ap.add_argument("--synthetic", choices=sorted(SYNTHETIC), help="use an untrained SigLIP of this size instead of --model")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--image-size", type=int, default=224, help="side of the generated PNGs (px), as the built-in corpus")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for both measurements (0: torch's default)")
    ap.add_argument("--repeats", type=int, default=3, help="alternating repeats; the median is reported")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="avasr-bench-"))
    os.environ["AVASR_HOME"] = str(tmp / "home")  # never touch the user's cache (hub models still come from HF_HOME)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from avasr_cli.stages.embed_images import EmbedConfig, run_embed_images
    from avasr_cli.vision.encoder import load_vision_encoder

    paths = make_images(tmp, args.images, args.image_size)
    if args.synthetic:
        args.model = str(build_synthetic(tmp, args.synthetic))
    t0 = time.perf_counter()
    enc = load_vision_encoder(args.model, device=args.device)
    load_s = time.perf_counter() - t0
    print(f"model: {enc.label}  [{enc.arch}, dim {enc.dim}, {enc.num_patches} patches]  load {load_s:.2f} s")
    print(f"images: {args.images} PNGs {args.image_size}×{args.image_size}, batch {args.batch_size}, "
          f"workers {args.workers}, torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    bare, e2e, walls, loads = [bare_forward(enc, paths, args.batch_size)], [], [], []
    for r in range(args.repeats):  # bare, e2e, bare, e2e, ... bare: each e2e sits between two bare runs
        loads.append(loader_only(enc, paths, args.batch_size, args.workers))
        os.environ["AVASR_HOME"] = str(tmp / f"home-{r}")  # empty cache: everything is embedded
        run = write_run(tmp / f"run-{r}", paths)
        cfg = EmbedConfig(vision=args.model, batch_size=args.batch_size, device=args.device, workers=args.workers)
        t0, c0 = time.perf_counter(), cpu_seconds()
        res = run_embed_images(run, cfg)
        walls.append(args.images / (time.perf_counter() - t0))
        CPU["e2e"].append((cpu_seconds() - c0) * 1e3 / args.images)  # includes model load + scan
        assert res.embedded == args.images, res
        e2e.append(res.images_per_s)
        bare.append(bare_forward(enc, paths, args.batch_size))
    pairs = [e / ((bare[i] + bare[i + 1]) / 2) for i, e in enumerate(e2e)]
    b, e, w, d = (statistics.median(x) for x in (bare, e2e, walls, loads))
    runs = lambda xs: ", ".join(f"{x:.1f}" for x in xs)  # noqa: E731
    print(f"bare model forward        : {b:9.1f} images/s   (runs: {runs(bare)})")
    print(f"avasr embed end to end    : {e:9.1f} images/s   (runs: {runs(e2e)})")
    print(f"  incl. model load + scan : {w:9.1f} images/s")
    print(f"decode+preprocess alone   : {d:9.1f} images/s   (runs: {runs(loads)}; {args.workers} workers, no model)")
    print(f"ratio end-to-end / bare   : {statistics.median(pairs):9.3f}   (median over runs of e2e / mean of the bare runs "
          f"around it: {', '.join(f'{x:.3f}' for x in pairs)}; target >= 0.9)")
    print(f"ratio end-to-end / min(bare, decode) : {e / min(b, d):.3f}   (how well decoding and the model overlap)")
    cb, ce = statistics.median(CPU["bare"]), statistics.median(CPU["e2e"])
    print(f"CPU per image             : bare {cb:.2f} ms, end to end {ce:.2f} ms (decode, workers, load included); "
          f"ratio {cb / ce:.3f}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
