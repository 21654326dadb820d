"""Oracle image features for the built-in corpus: the positive control of the alignment stage.

A built-in picture shows one or two groups of objects, each a (count, size, colour, shape), in a layout;
its sentence says that (and sometimes words no picture shows). The oracle feature of a picture encodes
the groups and the layout and nothing else (not the background, which few sentences name): each group is
a one-hot (count | size | colour | shape) vector, mapped through a fixed random matrix into ``dim``
dimensions, with a little noise. ``pooled`` is the map of both groups and the layout concatenated (the
second group all zeros when absent); the two ``patches`` are the groups on their own (the "empty" group
being its own fixed vector), so ``maxsim`` can match frames to objects.

If the alignment stage works, these features must drive its loss well below ``ln(batch)`` and held-out
recall far above chance; with ``shuffle=True`` (every picture gets another picture's feature) held-out
recall must stay at chance. ``tests/unit/test_align_positive_control.py`` holds the stage to that.

:func:`write_oracle_features` writes the features into the run's feature store and ``features.json``
exactly as ``avasr embed-images`` would, and records the embed-images stage, so ``avasr align`` reads
them like any other vision encoder's.
"""

from __future__ import annotations

import numpy as np

from avasr_cli.errors import ConfigError
from avasr_cli.run import RunDir, write_json_atomic

ORACLE_ID = "builtin-scene-oracle"
ORACLE_LABEL = "scene oracle (count/colour/shape one-hots; positive control, not a vision model)"


def scene_of_utterances(prepare_config: dict) -> dict[str, dict]:
    """utt_id → scene (``groups`` of (count, size, colour, shape), ``layout``, ``bg``) of the built-in corpus
    a run prepared."""
    from avasr_cli.data.builtin import CorpusConfig, plan

    if prepare_config.get("source", "builtin") != "builtin":
        raise ConfigError("oracle scene features exist only for the built-in corpus",
                          "prepare the run with the built-in corpus (`avasr prepare`)")
    keys = ("lang", "seed", "num_align", "num_train", "num_dev", "num_test")
    cfg = CorpusConfig(**{k: prepare_config[k] for k in keys if k in prepare_config})
    return {item["utt_id"]: item["scene"] for item in plan(cfg)}


SIZES = (None, "big", "small")
LAYOUTS = ("free", "middle", "left-right", "top-bottom")


def _group_onehot(group, counts: int, colours: list[str], shapes: list[str]) -> np.ndarray:
    v = np.zeros(counts + len(SIZES) + len(colours) + len(shapes), dtype=np.float32)
    if group is not None:
        n, size, colour, shape = group
        v[int(n) - 1] = 1.0
        v[counts + SIZES.index(size)] = 1.0
        v[counts + len(SIZES) + colours.index(colour)] = 1.0
        v[counts + len(SIZES) + len(colours) + shapes.index(shape)] = 1.0
    return v


def oracle_vectors(scenes: list[dict], lang: str, dim: int = 64, noise: float = 0.05,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``scenes`` → (pooled [N, dim], patches [N, 2, dim]) float32."""
    from avasr_cli.data.builtin.lexicon import COLOURS, SHAPES

    colours, shapes = list(COLOURS), list(SHAPES)
    counts = 6
    width = counts + len(SIZES) + len(colours) + len(shapes)
    rng = np.random.default_rng([seed, 97])
    w_pooled = rng.standard_normal((2 * width + len(LAYOUTS), dim)).astype(np.float32) / np.sqrt(2 * width)
    w_patch = rng.standard_normal((width, dim)).astype(np.float32) / np.sqrt(width)
    empty = rng.standard_normal(dim).astype(np.float32) / np.sqrt(width)
    pooled = np.zeros((len(scenes), dim), dtype=np.float32)
    patches = np.zeros((len(scenes), 2, dim), dtype=np.float32)
    for i, scene in enumerate(scenes):
        groups = [tuple(g) for g in scene["groups"]] + [None]
        one = [_group_onehot(g, counts, colours, shapes) for g in groups[:2]]
        layout = np.zeros(len(LAYOUTS), dtype=np.float32)
        layout[LAYOUTS.index(scene.get("layout", "free"))] = 1.0
        pooled[i] = np.concatenate(one + [layout]) @ w_pooled
        patches[i, 0] = one[0] @ w_patch
        patches[i, 1] = one[1] @ w_patch if groups[1] is not None else empty
    pooled += noise * rng.standard_normal(pooled.shape).astype(np.float32)
    patches += noise * rng.standard_normal(patches.shape).astype(np.float32)
    return pooled, patches


def write_oracle_features(run: RunDir, *, shuffle: bool = False, dim: int = 64, noise: float = 0.05,
                          seed: int = 0) -> dict:
    """Oracle features for every image of the run's manifests → store + ``features.json`` (+ the stage
    record). ``shuffle``: give each picture the feature of another picture (the negative control)."""
    from avasr_cli.data.manifest import read_manifest
    from avasr_cli.vision.store import FeatureStore

    prep = run.require("prepare", "run `avasr prepare` first")["config"]
    scene_of = scene_of_utterances(prep)
    images: dict[str, dict] = {}
    for split in ("align", "train", "dev", "test"):
        path = run.manifest(split)
        if not path.exists():
            continue
        for r in read_manifest(path):
            if r.get("image_sha256") and r.get("utt_id") in scene_of:
                images.setdefault(r["image_sha256"], scene_of[r["utt_id"]])
    shas = sorted(images)
    pooled, patches = oracle_vectors([images[s] for s in shas], prep.get("lang", "kannada"), dim, noise, seed)
    if shuffle:
        perm = np.random.default_rng([seed, 98]).permutation(len(shas))
        pooled, patches = pooled[perm], patches[perm]
    variant = f"{'shuffled' if shuffle else 'true'}-d{dim}-n{noise}-s{seed}"
    meta = {"model_id": ORACLE_ID, "revision": variant, "layer": "oracle", "pooling": "oracle", "patch_pool": 0,
            "label": ORACLE_LABEL + (" — SHUFFLED pairs" if shuffle else ""), "untrained": False, "arch": "oracle",
            "dim": dim, "num_patches": 2, "grid": [1, 2]}
    store = FeatureStore.open_or_create(None, meta)
    todo = store.missing(shas)
    if todo:
        pos = {s: i for i, s in enumerate(shas)}
        idx = [pos[s] for s in todo]
        store.write_shard(todo, pooled[idx].astype(np.float16), patches[idx].astype(np.float16))
    info = {"vision": ORACLE_ID, "store": str(store.path), "model_id": ORACLE_ID, "revision": variant,
            "label": meta["label"], "untrained": False, "dim": dim, "num_patches": 2, "grid": [1, 2],
            "layer": "oracle", "pooling": "oracle", "patch_pool": 0, "num_images": len(shas), "shuffled": shuffle}
    write_json_atomic(run.root / "features.json", info)
    run.record_stage("embed-images", {"vision": ORACLE_ID, "shuffle": shuffle}, info)
    return info
