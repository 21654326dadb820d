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
  ``1 / n_resamples``; identical systems give 1.
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


def iter_resample_counts(n_groups: int, n_resamples: int, seed: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_row, counts)`` chunks of the ``n_resamples × n_groups`` matrix counting how often each
    group is drawn in each resample (chunked to bound memory; the same seed gives the same matrix)."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // max(n_groups, 1))
    for start in range(0, n_resamples, chunk):
        rows = min(chunk, n_resamples - start)
        idx = rng.integers(0, n_groups, size=(rows, n_groups))
        flat = (idx + (np.arange(rows, dtype=np.int64) * n_groups)[:, None]).ravel()
        counts = np.bincount(flat, minlength=rows * n_groups).reshape(rows, n_groups)
        yield start, counts.astype(np.float64)


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


def _summary(delta: float, deltas: np.ndarray) -> dict:
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    r = len(deltas)
    p = min(1.0, 2.0 * min(np.count_nonzero(deltas <= 0) / r, np.count_nonzero(deltas >= 0) / r))
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
    na = np.asarray(n_a, dtype=np.float64)
    eb = np.asarray(err_bs, dtype=np.float64).reshape(-1, len(ea))
    nb = np.asarray(n_bs, dtype=np.float64).reshape(-1, len(ea))
    if na.shape != ea.shape or eb.shape != nb.shape:
        raise ValueError("errors and reference lengths must have the same shapes")
    if n_resamples < 1:
        raise ValueError("n_resamples must be at least 1")
    inv, n_groups = group_index(groups, len(ea))
    k = eb.shape[0]
    # per-group sums: columns (err_a, n_a, err_b1, n_b1, ...)
    cols = np.empty((len(ea), 2 * (k + 1)))
    cols[:, 0], cols[:, 1] = ea, na
    cols[:, 2::2], cols[:, 3::2] = eb.T, nb.T
    sums = np.empty((n_groups, cols.shape[1]))
    for c in range(cols.shape[1]):
        sums[:, c] = np.bincount(inv, weights=cols[:, c], minlength=n_groups)

    total = sums.sum(axis=0)
    wer_full = _ratio(total[0::2], total[1::2])  # (k + 1,)

    wers = np.empty((n_resamples, k + 1))
    for start, counts in iter_resample_counts(n_groups, n_resamples, seed):
        wers[start:start + len(counts)] = resampled_wers(counts, sums)

    base = wers[:, 0]
    b_lo, b_hi = np.percentile(base, [2.5, 97.5])
    results = []
    for j in range(k):
        res = _summary(wer_full[j + 1] - wer_full[0], wers[:, j + 1] - base)
        lo, hi = np.percentile(wers[:, j + 1], [2.5, 97.5])
        res.update(wer=float(wer_full[j + 1]), wer_ci_low=float(lo), wer_ci_high=float(hi),
                   baseline_wer=float(wer_full[0]), baseline_ci_low=float(b_lo), baseline_ci_high=float(b_hi))
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
