"""Paired bootstrap over speakers for the difference in corpus WER between two systems.

Method (Bisani & Ney style, resampling speakers rather than utterances, since one speaker's utterances
are correlated):

* ``delta = WER_b - WER_a`` with each WER a ratio of sums (errors / reference words); ``b`` is the system,
  ``a`` the baseline, so a negative delta means ``b`` is better.
* Utterances are aggregated per group (speaker) first. An utterance whose group is unknown (``None``,
  ``""`` or NaN) is a group of its own.
* Each resample draws ``n_groups`` groups with replacement (an ``n_resamples × n_groups`` index matrix
  from ``numpy.random.default_rng(seed)``), turned into per-group counts; resampled sums are one matrix
  product of those counts with the per-group sums, so several systems share one draw.
* The 95% interval is the 2.5th and 97.5th percentile of the resampled deltas (numpy's linear
  interpolation).
* The two-sided p-value is ``min(1, 2 * min(P(delta* <= 0), P(delta* >= 0)))`` over the resampled deltas
  ``delta*``: twice the fraction on the far side of zero, clipped to 1. ``0.0`` means fewer than
  ``1 / n_resamples``; identical systems give 1. A resampled delta within ``1e-12`` of zero counts as
  zero (on both sides): it is a tie that floating-point rounding would otherwise put on one side or the
  other, depending on how the same sums were added up.

Two levels (:func:`seed_speaker_bootstrap`), for systems trained with several seeds each:

* System ``k`` is ``S_k`` training runs (seeds) scored on the same utterances. Its WER is the mean over
  its seeds of each seed's corpus WER; ``delta`` is the difference of those means.
* Each resample draws the test speakers once for all systems (paired, exactly the one-level draw above
  for the same ``seed``) and, per system, ``S_k`` of its seeds with replacement. The resampled WER of
  system ``k`` is the mean over its drawn seeds of that seed's WER on the drawn speakers.
* Seeds are paired by seed number where the seed sets match (choice documented here): systems whose
  ``seed_ids`` are the same set of distinct labels share one seed draw, matched by label, so a resample
  that takes seed 2 twice takes it twice in each of them. In avasr's recipes a seed number is a block of
  the design (the same seeded init and fine-tuning data order in every arm), so the paired draw
  resamples the per-seed differences, the variation a rerun would show; where a seed means nothing
  shared it is still a valid bootstrap of the difference of means, only without the gain. Systems whose seed set
  differs from every earlier one (or unlabelled, or with repeated labels) draw their seeds independently.
* The seed draw of the first system with a given seed set comes from
  ``numpy.random.default_rng([seed, k + 1])`` (:func:`seed_counts` with ``system=k``), a stream of its
  own, so the speaker draw stays that of ``seed``.
* A system with one seed has nothing to draw: with one seed in every system the results are exactly
  those of :func:`paired_bootstrap_many` for the same ``seed``. With few seeds the seed level is coarse
  (3 seeds give 10 distinct draws) and, like any bootstrap of a small sample, somewhat too narrow.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np

# resampled rows per chunk are chosen so one chunk's count matrix stays near this many cells
_CHUNK_CELLS = 4_000_000


def group_index(groups: Sequence | None, n: int) -> tuple[np.ndarray, int]:
    """Map group labels to ``0..G-1``; unknown labels get a group each. Returns (index, G)."""
    if groups is None:
        return np.arange(n), n
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} items, expected {n}")
    ids: dict = {}
    out = np.empty(n, dtype=np.int64)
    for i, g in enumerate(groups):
        if g is None or g == "" or (isinstance(g, float) and math.isnan(g)):
            key: object = ("\0utt", i)
        else:
            key = g
        out[i] = ids.setdefault(key, len(ids))
    return out, len(ids)


def _draw_counts(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    """``rows × n`` counts of how often each of ``n`` items is drawn in ``n`` draws with replacement."""
    idx = rng.integers(0, n, size=(rows, n))
    flat = (idx + (np.arange(rows, dtype=np.int64) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)


def iter_resample_counts(n_groups: int, n_resamples: int, seed: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_row, counts)`` chunks of the ``n_resamples × n_groups`` matrix counting how often each
    group is drawn in each resample (chunked to bound memory; the same seed gives the same matrix)."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // max(n_groups, 1))
    for start in range(0, n_resamples, chunk):
        rows = min(chunk, n_resamples - start)
        yield start, _draw_counts(rng, rows, n_groups)


def seed_counts(n_seeds: int, n_resamples: int, seed: int, system: int) -> np.ndarray:
    """The ``n_resamples × n_seeds`` counts of how often each seed is drawn in each resample of
    :func:`seed_speaker_bootstrap`, for the first system (index ``system``) with that seed set (a stream
    of its own, so speaker draws stay those of ``seed``)."""
    return _draw_counts(np.random.default_rng([seed, system + 1]), n_resamples, n_seeds)


def resample_counts(n_groups: int, n_resamples: int, seed: int) -> np.ndarray:
    """The whole ``n_resamples × n_groups`` count matrix :func:`paired_bootstrap` uses for this seed."""
    return np.concatenate([c for _, c in iter_resample_counts(n_groups, n_resamples, seed)])


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)


def resampled_wers(counts: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """``counts`` (R × G) times per-group ``sums`` (G × 2K: errors, words for K systems) → WERs (R × K)."""
    s = counts @ sums
    return _ratio(s[:, 0::2], s[:, 1::2])


# resampled deltas this close to zero are ties (rounding noise of the summation order, see the docstring)
_TIE = 1e-12


def _summary(delta: float, deltas: np.ndarray) -> dict:
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    r = len(deltas)
    p = min(1.0, 2.0 * min(np.count_nonzero(deltas <= _TIE) / r, np.count_nonzero(deltas >= -_TIE) / r))
    return {"delta": float(delta), "ci_low": float(lo), "ci_high": float(hi), "p_value": float(p)}


def paired_bootstrap_many(
    err_a: Sequence[float],
    n_a: Sequence[float],
    err_bs: Sequence[Sequence[float]],
    n_bs: Sequence[Sequence[float]],
    groups: Sequence | None,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> list[dict]:
    """:func:`paired_bootstrap` for several systems ``b`` against one baseline ``a``, all sharing one draw
    of resampled groups (so each result equals a separate call with the same seed). Each result also
    carries ``wer`` / ``wer_ci_low`` / ``wer_ci_high`` for system ``b`` and ``baseline_wer`` /
    ``baseline_ci_low`` / ``baseline_ci_high``."""
    ea = np.asarray(err_a, dtype=np.float64)
    eb = np.asarray(err_bs, dtype=np.float64).reshape(-1, len(ea))
    nb = np.asarray(n_bs, dtype=np.float64)
    if nb.size != eb.size:
        raise ValueError("errors and reference lengths must have the same shapes")
    return seed_speaker_bootstrap([ea[None]] + [e[None] for e in eb], [np.asarray(n_a, dtype=np.float64)[None]]
                                  + [n[None] for n in nb.reshape(eb.shape)], groups, n_resamples=n_resamples, seed=seed)


def _seed_set(labels: Sequence) -> frozenset | None:
    """The set of seed labels a system can be paired by: ``None`` if any is missing or repeated."""
    labels = list(labels)
    return frozenset(labels) if labels and None not in labels and len(set(labels)) == len(labels) else None


def seeds_paired(labels_a: Sequence, labels_b: Sequence) -> bool:
    """Whether :func:`seed_speaker_bootstrap` pairs two systems' seeds by label: the same set of distinct
    labels, two or more."""
    key = _seed_set(labels_a)
    return key is not None and len(key) > 1 and key == _seed_set(labels_b)


def _seed_draws(sizes: list[int], seed_ids: Sequence | None, n_resamples: int, seed: int) -> list:
    """Per system: ``None`` (one seed) or the ``n_resamples × S_k`` seed weights (counts / S_k), shared,
    column by label, among systems with the same seed set (see the module docstring)."""
    draws: list = []
    first: dict = {}  # seed set -> (its labels in that system's order, counts)
    for k, size in enumerate(sizes):
        labels = list(seed_ids[k]) if seed_ids is not None else []
        key = _seed_set(labels) if len(labels) == size else None
        if size == 1:
            draws.append(None)
        elif key in first:
            order, counts = first[key]
            draws.append(counts[:, [order.index(x) for x in labels]] / size)
        else:
            counts = seed_counts(size, n_resamples, seed, k)
            if key is not None:
                first[key] = (labels, counts)
            draws.append(counts / size)
    return draws


def seed_speaker_bootstrap(
    errs: Sequence,
    words: Sequence,
    groups: Sequence | None,
    *,
    seed_ids: Sequence[Sequence] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> list[dict]:
    """Two-level paired bootstrap (seeds within each system, speakers shared; see the module docstring)
    of every system ``k >= 1`` against system 0.

    ``errs[k]`` and ``words[k]`` are ``S_k × n`` per-seed, per-utterance word errors and reference words
    of system ``k`` (``S_k >= 1``), every system on the same ``n`` utterances in the same order; ``groups``
    the utterances' speakers; ``seed_ids[k]`` the labels (seed numbers) of system ``k``'s rows, which pair
    seeds across systems with the same seed set (``None``: every system draws independently). Returns
    one dict per system ``k >= 1`` with the keys of :func:`paired_bootstrap_many`; ``delta`` and ``wer``
    are means over seeds of per-seed corpus WERs."""
    es = [np.atleast_2d(np.asarray(e, dtype=np.float64)) for e in errs]
    ns = [np.atleast_2d(np.asarray(w, dtype=np.float64)) for w in words]
    if len(es) < 2 or len(ns) != len(es):
        raise ValueError("need a baseline and at least one system, with errors and reference lengths for each")
    n = es[0].shape[1]
    if any(e.shape != w.shape or e.shape[1] != n or e.shape[0] < 1 for e, w in zip(es, ns)):
        raise ValueError("errors and reference lengths must have the same shapes")
    if n_resamples < 1:
        raise ValueError("n_resamples must be at least 1")
    inv, n_groups = group_index(groups, n)
    # per-group sums: columns (errors, words) for every seed of every system, system 0 first
    cols = np.empty((n, 2 * sum(len(e) for e in es)))
    cols[:, 0::2] = np.concatenate(es).T
    cols[:, 1::2] = np.concatenate(ns).T
    sums = np.empty((n_groups, cols.shape[1]))
    for c in range(cols.shape[1]):
        sums[:, c] = np.bincount(inv, weights=cols[:, c], minlength=n_groups)
    bounds = np.cumsum([0] + [len(e) for e in es])
    total = sums.sum(axis=0)
    run_wers = _ratio(total[0::2], total[1::2])
    wer_full = [float(run_wers[a:b].mean()) for a, b in zip(bounds[:-1], bounds[1:])]

    if seed_ids is not None and len(seed_ids) != len(es):
        raise ValueError("seed_ids needs one list of labels per system")
    draws = _seed_draws([len(e) for e in es], seed_ids, n_resamples, seed)
    wers = np.empty((n_resamples, len(es)))
    for start, counts in iter_resample_counts(n_groups, n_resamples, seed):
        w = resampled_wers(counts, sums)  # R × (all seeds): each seed's WER on the drawn speakers
        stop = start + len(counts)
        for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            wers[start:stop, k] = w[:, a] if draws[k] is None else (w[:, a:b] * draws[k][start:stop]).sum(axis=1)

    base = wers[:, 0]
    b_lo, b_hi = np.percentile(base, [2.5, 97.5])
    results = []
    for k in range(1, len(es)):
        res = _summary(wer_full[k] - wer_full[0], wers[:, k] - base)
        lo, hi = np.percentile(wers[:, k], [2.5, 97.5])
        res.update(wer=wer_full[k], wer_ci_low=float(lo), wer_ci_high=float(hi),
                   baseline_wer=wer_full[0], baseline_ci_low=float(b_lo), baseline_ci_high=float(b_hi))
        results.append(res)
    return results


def paired_bootstrap(
    err_a: Sequence[float],
    n_a: Sequence[float],
    err_b: Sequence[float],
    n_b: Sequence[float],
    groups: Sequence | None,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """Paired speaker-level bootstrap of ``WER_b - WER_a`` (see the module docstring).

    ``err_*`` and ``n_*`` are per-utterance word errors and reference words of the two systems on the
    same utterances, in the same order; ``groups`` the utterances' speakers (``None`` for each utterance
    on its own). Returns ``{"delta", "ci_low", "ci_high", "p_value"}`` (plus the WERs and their intervals,
    see :func:`paired_bootstrap_many`).
    """
    return paired_bootstrap_many(err_a, n_a, [err_b], [n_b], groups, n_resamples=n_resamples, seed=seed)[0]
