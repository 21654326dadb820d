"""The alignment pool's pairs: held-out images, the shuffled-pairs negative control, the sample recall
is scored on, and what recall after training shows (:func:`recall_verdict`). Pure Python and numpy."""

from __future__ import annotations

import math


def split_heldout(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Hold out whole images (all their pairs), so recall measures pairs never seen in training."""
    import numpy as np

    images = sorted({r.get("image_sha256", "") for r in rows})
    rng = np.random.default_rng(seed)
    n = int(round(len(images) * fraction))
    held = set(rng.choice(images, size=n, replace=False).tolist()) if n else set()
    return [r for r in rows if r.get("image_sha256") not in held], [r for r in rows if r.get("image_sha256") in held]


def shuffle_pairs(rows: list[dict], seed: int) -> tuple[list[dict], int]:
    """The negative control: the same clips and the same images, each clip paired with the image of another
    clip of the pool (a seeded derangement of the image column, repaired so that no clip keeps an image it
    was recorded with, e.g. the one its second description shares). Returns the rows and how many clips
    could not be given a foreign image (0 unless one image holds most of the pool)."""
    import numpy as np

    n = len(rows)
    order = np.random.default_rng([seed, 43]).permutation(n)
    own = [r.get("image_sha256") for r in rows]
    new = list(own)
    for k in range(n):  # a cyclic shift along a random order: a derangement of positions
        new[order[k]] = own[order[(k + 1) % n]]
    for i in range(n):  # two descriptions of one image: a shift can hand a clip its own image back
        if new[i] != own[i]:
            continue
        for j in (int(x) for x in np.random.default_rng([seed, 44, i]).permutation(n)):
            if new[j] != own[i] and new[i] != own[j]:
                new[i], new[j] = new[j], new[i]
                break
    left = sum(a == b for a, b in zip(new, own))
    return [dict(r, image_sha256=sha, true_image_sha256=r.get("image_sha256")) for r, sha in zip(rows, new)], left


def recall_sample(rows: list[dict], n: int, seed: int) -> list[dict]:
    """At most ``n`` of ``rows`` (seeded, in their order): the pairs recall is scored on."""
    import numpy as np

    if n >= len(rows):
        return list(rows)
    idx = np.random.default_rng([seed, 31]).choice(len(rows), size=n, replace=False)
    return [rows[i] for i in sorted(idx)]


def recall_verdict(heldout: dict | None, train: dict | None, alpha: float = 0.01) -> str | None:
    """What the after-training recall shows: ``generalises`` (held-out audio→image R@1 above chance),
    ``memorises`` (training pairs above chance, held-out not) or ``none``. "Above chance" is a one-sided
    binomial test of the R@1 hits against the chance rate ``1 / number of images`` at level ``alpha``."""
    def above_chance(r: dict | None) -> bool:
        if not r or not r.get("num_pairs"):
            return False
        n, p = int(r["num_pairs"]), float(r["chance_a2i_r@1"])
        hits = int(round(r["a2i_r@1"] * n))
        tail = sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(hits, n + 1))
        return tail < alpha

    if heldout is None and train is None:
        return None
    if above_chance(heldout):
        return "generalises"
    return "memorises" if above_chance(train) else "none"
