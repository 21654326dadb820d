"""How well each offline vision encoder's features separate the built-in corpus's scenes: a linear probe.

    python benchmarks/vision_probe.py                    # the default corpus's 880 scenes, 5 random splits
    python benchmarks/vision_probe.py --max-images 200 --splits 2   # a quick look

The pictures are the built-in corpus's own (``plan`` + ``render_scene`` of :mod:`avasr_cli.data.builtin`,
the functions ``avasr prepare`` draws with; no speech is synthesised). Each scene is labelled with the
count, colour and shape of its first group of objects (what the speech says first) and its background
(which the speech never mentions). Features are the pooled vectors the ``clip`` loss aligns to, rounded
through fp16 as the feature store keeps them. Encoders: efficientnet-lite0 (ImageNet weights), the same
network with random weights (seed 0), and the UNTRAINED tiny-siglip.

Probe: features standardised on the training images, then a ridge classifier in closed form (one-hot
targets, ridge strength chosen by 5-fold cross-validation on the training images only), scored on
held-out images (30 %, disjoint scenes). Reported: mean ± sd of held-out accuracy over random splits,
next to the majority-class baseline (the training split's most frequent class, scored on held-out images).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ATTRS = ("count", "size", "colour", "shape", "layout", "background")
LAMBDAS = (1e-1, 1.0, 1e1, 1e2, 1e3, 1e4)


def scenes(cfg) -> tuple[list, dict]:
    """Unique scenes of the corpus ``cfg`` → (PIL images, labels per attribute)."""
    from PIL import Image

    from avasr_cli.data.builtin import plan, render_scene

    seen, images = set(), []
    labels: dict[str, list] = {a: [] for a in ATTRS}
    for item in plan(cfg):
        scene = item["scene"]
        if scene["index"] in seen:  # align scenes are described twice
            continue
        seen.add(scene["index"])
        images.append(Image.open(io.BytesIO(render_scene(scene, item["seed"]))).convert("RGB"))
        n, size, colour, shape = scene["groups"][0]
        for a, v in zip(ATTRS, (n, str(size), colour, shape, scene["layout"], scene["bg"])):
            labels[a].append(v)
    return images, labels


def encoders(names: list[str]):
    """(name, loaded VisionEncoder) for each name; ``efficientnet-lite0-random`` is the network at seed 0."""
    from avasr_cli.vision.adapters import efficientnet
    from avasr_cli.vision.encoder import VisionEncoder, inspect_vision_model, load_vision_encoder

    for name in names:
        if name == "efficientnet-lite0-random":
            info, _ = inspect_vision_model("efficientnet-lite0")
            info = dataclasses.replace(info, label="efficientnet-lite0 with RANDOM weights (seed 0)", untrained=True,
                                       pretrained=False, revision="random-seed0", weights_source="torch.manual_seed(0)")
            yield name, VisionEncoder(info, efficientnet.load(info, None, device="cpu", seed=0), "cpu")
        else:
            yield name, load_vision_encoder(name)


def embed(enc, images: list, batch_size: int):
    import numpy as np

    out = []
    for i in range(0, len(images), batch_size):
        pooled, _ = enc.embed(images[i : i + batch_size])
        out.append(pooled.numpy().astype(np.float16).astype(np.float32))  # as the feature store keeps them
    return np.concatenate(out)


def ridge_fit(x, y_onehot, lam: float):
    """Dual-form ridge (n ≤ d friendly): W = Xᵀ (X Xᵀ + λ I)⁻¹ Y on centred targets."""
    import numpy as np

    mean = y_onehot.mean(0)
    k = x @ x.T
    alpha = np.linalg.solve(k + lam * np.eye(len(x)), y_onehot - mean)
    return x.T @ alpha, mean


def ridge_predict(x, model):
    w, mean = model
    return (x @ w + mean).argmax(1)


def probe(x_train, y_train, x_test, y_test, n_classes: int, rng) -> float:
    """Standardise on train, choose λ by 5-fold CV on train, fit on all of train, accuracy on test."""
    import numpy as np

    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
    onehot = np.eye(n_classes)[y_train]
    folds = np.array_split(rng.permutation(len(x_train)), 5)
    best, best_acc = LAMBDAS[0], -1.0
    for lam in LAMBDAS:
        accs = []
        for f in folds:
            keep = np.setdiff1d(np.arange(len(x_train)), f)
            model = ridge_fit(x_train[keep], onehot[keep], lam)
            accs.append(float((ridge_predict(x_train[f], model) == y_train[f]).mean()))
        if np.mean(accs) > best_acc:
            best, best_acc = lam, float(np.mean(accs))
    return float((ridge_predict(x_test, ridge_fit(x_train, onehot, best)) == y_test).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lang", default="kannada")
    ap.add_argument("--seed", type=int, default=0, help="corpus seed (CorpusConfig.seed)")
    ap.add_argument("--max-images", type=int, default=0, help="use only the first N scenes (0: all)")
    ap.add_argument("--splits", type=int, default=5, help="random train/held-out splits to average over")
    ap.add_argument("--test-fraction", type=float, default=0.3)
    ap.add_argument("--encoders", default="efficientnet-lite0,efficientnet-lite0-random,tiny-siglip")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--markdown", default=None, help="also write the table and a provenance line here "
                                                    "(docs/results/vision-probe.md)")
    args = ap.parse_args()

    os.environ.setdefault("AVASR_HOME", tempfile.mkdtemp(prefix="avasr-probe-"))  # tiny-siglip is built here
    import numpy as np
    import torch

    from avasr_cli.data.builtin import CorpusConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = CorpusConfig(lang=args.lang, seed=args.seed)
    t0 = time.perf_counter()
    images, labels = scenes(cfg)
    if args.max_images:
        images, labels = images[: args.max_images], {a: v[: args.max_images] for a, v in labels.items()}
    y = {}
    for a, values in labels.items():
        classes = sorted(set(values), key=str)
        y[a] = (np.array([classes.index(v) for v in values]), len(classes))
    print(f"corpus: built-in {cfg.lang}, version {cfg.version}, seed {cfg.seed} (align {cfg.num_align}, train {cfg.num_train}, dev {cfg.num_dev}, "
          f"test {cfg.num_test} utterances) -> {len(images)} unique scenes drawn in {time.perf_counter() - t0:.1f} s")
    print(f"probe: ridge on standardised pooled features, λ by 5-fold CV on train, {args.splits} random splits, "
          f"{args.test_fraction:.0%} held out")
    n = len(images)
    n_test = int(round(n * args.test_fraction))
    splits = [np.random.default_rng([args.seed, 7, s]).permutation(n) for s in range(args.splits)]
    results: dict[str, dict[str, list[float]]] = {}
    base = {a: [] for a in ATTRS}
    for perm in splits:
        test, train = perm[:n_test], perm[n_test:]
        for a in ATTRS:
            labels_a = y[a][0]
            majority = np.bincount(labels_a[train], minlength=y[a][1]).argmax()
            base[a].append(float((labels_a[test] == majority).mean()))
    for name, enc in encoders([e.strip() for e in args.encoders.split(",") if e.strip()]):
        t0 = time.perf_counter()
        x = embed(enc, images, args.batch_size)
        print(f"{name}: {enc.label} -> {x.shape[1]}-d pooled, embedded in {time.perf_counter() - t0:.1f} s")
        results[name] = {a: [] for a in ATTRS}
        for s, perm in enumerate(splits):
            test, train = perm[:n_test], perm[n_test:]
            for a in ATTRS:
                labels_a, k = y[a]
                rng = np.random.default_rng([args.seed, 8, s])
                results[name][a].append(probe(x[train], labels_a[train], x[test], labels_a[test], k, rng))

    def cell(values: list[float]) -> str:
        return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"

    lines = ["| held-out accuracy (linear probe) | " + " | ".join(ATTRS) + " |", "|---|" + "---|" * len(ATTRS),
             "| majority class | " + " | ".join(cell(base[a]) for a in ATTRS) + " |"]
    lines += [f"| {name} | " + " | ".join(cell(accs[a]) for a in ATTRS) + " |" for name, accs in results.items()]
    lines += ["", f"{n} scenes of corpus v{cfg.version}, {n - n_test} train / {n_test} held out per split, "
                  f"{args.splits} splits (mean ± sd); classes: " + ", ".join(f"{a} {y[a][1]}" for a in ATTRS) + "."]
    print()
    print("\n".join(lines) + f" Load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}.")
    if args.markdown:
        from avasr_cli.env import write_results_markdown

        write_results_markdown(args.markdown, lines, "python benchmarks/vision_probe.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
