"""Paired speaker bootstrap: hand-computed and exhaustively enumerated small cases, determinism."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest

from avasr_cli.report.bootstrap import (group_index, paired_bootstrap, paired_bootstrap_many, resample_counts,
                                        resampled_wers)

# three speakers, two utterances each, 5 reference words per utterance (10 per speaker)
#   speaker  errors a  errors b   b - a
#   s1       1 + 1     0 + 1      -1
#   s2       2 + 1     1 + 2       0
#   s3       3 + 2     1 + 1      -3
GROUPS = ["s1", "s2", "s3", "s1", "s2", "s3"]
ERR_A = [1, 2, 3, 1, 1, 2]
ERR_B = [0, 1, 1, 1, 2, 1]
WORDS = [5] * 6


def _manual_delta(draw: tuple[int, ...]) -> float:
    """WER_b - WER_a of one resample, the slow way: utterance by utterance."""
    spk = ["s1", "s2", "s3"]
    ea = eb = na = 0
    for g in draw:
        for i, s in enumerate(GROUPS):
            if s == spk[g]:
                ea, eb, na = ea + ERR_A[i], eb + ERR_B[i], na + WORDS[i]
    return eb / na - ea / na


def test_hand_computed_delta():
    res = paired_bootstrap(ERR_A, WORDS, ERR_B, WORDS, GROUPS, n_resamples=200, seed=0)
    assert res["delta"] == pytest.approx(6 / 30 - 10 / 30)
    assert res["wer"] == pytest.approx(6 / 30) and res["baseline_wer"] == pytest.approx(10 / 30)


def test_vectorised_resamples_match_an_exhaustive_enumeration():
    draws = list(itertools.product(range(3), repeat=3))  # all 27 resamples of 3 speakers
    counts = np.array([np.bincount(d, minlength=3) for d in draws], dtype=float)
    inv, n_groups = group_index(GROUPS, 6)
    assert n_groups == 3 and list(inv) == [0, 1, 2, 0, 1, 2]
    sums = np.zeros((3, 4))
    for i, g in enumerate(inv):
        sums[g] += [ERR_A[i], WORDS[i], ERR_B[i], WORDS[i]]
    wers = resampled_wers(counts, sums)
    deltas = wers[:, 1] - wers[:, 0]
    assert deltas == pytest.approx([_manual_delta(d) for d in draws])
    # exact two-sided p over the 27 equally likely resamples: only (s2, s2, s2) reaches delta >= 0
    exact_p = 2 * min(np.mean(deltas <= 0), np.mean(deltas >= 0))
    assert exact_p == pytest.approx(2 / 27)


def test_fixed_resample_indices_reproduce_ci_and_p():
    n = 500
    counts = resample_counts(3, n, seed=7)
    assert counts.shape == (n, 3) and (counts.sum(axis=1) == 3).all()
    deltas = []
    for row in counts:  # turn each count row back into a draw of speaker indices
        draw = tuple(g for g in range(3) for _ in range(int(row[g])))
        deltas.append(_manual_delta(draw))
    deltas = np.array(deltas)
    res = paired_bootstrap(ERR_A, WORDS, ERR_B, WORDS, GROUPS, n_resamples=n, seed=7)
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    assert res["ci_low"] == pytest.approx(lo) and res["ci_high"] == pytest.approx(hi)
    assert res["p_value"] == pytest.approx(min(1.0, 2 * min(np.mean(deltas <= 0), np.mean(deltas >= 0))))


def test_p_value_converges_to_the_exhaustive_value():
    res = paired_bootstrap(ERR_A, WORDS, ERR_B, WORDS, GROUPS, n_resamples=20000, seed=1)
    assert res["p_value"] == pytest.approx(2 / 27, abs=0.01)
    assert -0.3 <= res["ci_low"] <= res["delta"] <= res["ci_high"] <= 0.0


def test_deterministic_by_seed():
    rng = np.random.default_rng(3)
    n = 300
    words = rng.integers(1, 20, n)
    ea, eb = rng.binomial(words, 0.3), rng.binomial(words, 0.25)
    spk = [f"s{i % 17}" for i in range(n)]
    a = paired_bootstrap(ea, words, eb, words, spk, n_resamples=400, seed=5)
    b = paired_bootstrap(ea, words, eb, words, spk, n_resamples=400, seed=5)
    c = paired_bootstrap(ea, words, eb, words, spk, n_resamples=400, seed=6)
    assert a == b
    assert a["delta"] == c["delta"] and (a["ci_low"], a["ci_high"]) != (c["ci_low"], c["ci_high"])


def test_unknown_speakers_are_their_own_groups():
    rng = np.random.default_rng(0)
    words = rng.integers(1, 10, 40)
    ea, eb = rng.binomial(words, 0.4), rng.binomial(words, 0.3)
    none = paired_bootstrap(ea, words, eb, words, None, n_resamples=300, seed=2)
    unknown = paired_bootstrap(ea, words, eb, words, [None] * 20 + [""] * 20, n_resamples=300, seed=2)
    unique = paired_bootstrap(ea, words, eb, words, [f"u{i}" for i in range(40)], n_resamples=300, seed=2)
    assert none == unknown == unique


def _three_systems():
    """A baseline and three systems on 100 utterances of 9 speakers."""
    rng = np.random.default_rng(1)
    words = rng.integers(1, 15, 100)
    ea = rng.binomial(words, 0.3)
    ebs = [rng.binomial(words, p) for p in (0.2, 0.3, 0.4)]
    return words, ea, ebs, [f"s{i % 9}" for i in range(100)]


def test_many_systems_share_one_draw():
    words, ea, ebs, spk = _three_systems()
    many = paired_bootstrap_many(ea, words, ebs, [words] * 3, spk, n_resamples=250, seed=4)
    single = [paired_bootstrap(ea, words, eb, words, spk, n_resamples=250, seed=4) for eb in ebs]
    assert many == single


def test_identical_systems():
    res = paired_bootstrap(ERR_A, WORDS, ERR_A, WORDS, GROUPS, n_resamples=100)
    assert res["delta"] == 0 and res["ci_low"] == 0 and res["ci_high"] == 0 and res["p_value"] == 1.0


def test_large_case_is_fast():
    import time

    rng = np.random.default_rng(0)
    n = 10_000
    words = rng.integers(1, 30, n)
    ea, eb = rng.binomial(words, 0.3), rng.binomial(words, 0.29)
    t = time.perf_counter()
    paired_bootstrap(ea, words, eb, words, [f"s{i % 300}" for i in range(n)], n_resamples=1000)
    assert time.perf_counter() - t < 2.0


def test_bad_input():
    with pytest.raises(ValueError):
        paired_bootstrap([1, 2], [3, 4], [1], [3], None)
    with pytest.raises(ValueError):
        paired_bootstrap([1], [3], [1], [3], ["a", "b"])
    with pytest.raises(ValueError):
        paired_bootstrap([1], [3], [1], [3], None, n_resamples=0)


# ---------------------------------------------------------------- two levels: seeds and speakers (#12.5)
def _seed_systems(rng, n, offsets_a, offsets_b, p_a=0.3, p_b=0.25):
    """Per-seed errors (S × n) of two systems whose seeds shift the error rate by ``offsets``."""
    words = rng.integers(1, 15, n)
    ea = np.array([rng.binomial(words, p_a + o) for o in offsets_a])
    eb = np.array([rng.binomial(words, p_b + o) for o in offsets_b])
    return words, ea, eb


def test_two_level_with_one_seed_each_is_the_one_level_bootstrap():
    from avasr_cli.report.bootstrap import seed_speaker_bootstrap

    words, ea, ebs, spk = _three_systems()
    many = paired_bootstrap_many(ea, words, ebs, [words] * 3, spk, n_resamples=250, seed=4)
    two = seed_speaker_bootstrap([[ea]] + [[e] for e in ebs], [[words]] * 4, spk, n_resamples=250, seed=4)
    assert two == many  # identical numbers, not merely close


def test_two_level_matches_a_loop_over_the_documented_draws():
    """Every resample, written out: speakers from resample_counts(seed), seeds of system k from
    seed_counts(S_k, R, seed, k); a system's WER is the mean over its drawn seeds of that seed's WER."""
    from avasr_cli.report.bootstrap import seed_counts, seed_speaker_bootstrap

    seeds_a = [[1, 2, 3, 1, 1, 2], [2, 2, 4, 2, 1, 3]]
    seeds_b = [[0, 1, 1, 1, 2, 1], [1, 0, 2, 0, 1, 1], [3, 3, 3, 3, 3, 3]]
    errs = [np.array(seeds_a, float), np.array(seeds_b, float)]
    words = [np.full((2, 6), 5.0), np.full((3, 6), 5.0)]
    r = 300
    spk_counts = resample_counts(3, r, seed=9)
    draws = [seed_counts(2, r, 9, 0), seed_counts(3, r, 9, 1)]
    assert draws[0].shape == (r, 2) and (draws[1].sum(axis=1) == 3).all()
    inv, _ = group_index(GROUPS, 6)
    deltas, wers_b = [], []
    for i in range(r):
        w = spk_counts[i][inv]  # how often each utterance is drawn (its speaker's count)
        per_system = []
        for k in range(2):
            # exact rational arithmetic, so a tie at zero is exactly zero
            seed_wers = [Fraction(int((w * errs[k][s]).sum()), int((w * words[k][s]).sum())) for s in range(len(errs[k]))]
            per_system.append(sum(int(draws[k][i][s]) * seed_wers[s] for s in range(len(seed_wers))) / len(seed_wers))
        deltas.append(float(per_system[1] - per_system[0]))
        wers_b.append(float(per_system[1]))
    res = seed_speaker_bootstrap(errs, words, GROUPS, n_resamples=r, seed=9)[0]
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    assert res["ci_low"] == pytest.approx(lo) and res["ci_high"] == pytest.approx(hi)
    assert res["p_value"] == pytest.approx(min(1.0, 2 * min(np.mean(np.array(deltas) <= 0), np.mean(np.array(deltas) >= 0))))
    assert (res["wer_ci_low"], res["wer_ci_high"]) == pytest.approx(tuple(np.percentile(wers_b, [2.5, 97.5])))
    mean_wer = [np.mean([e.sum() / 30 for e in errs[k]]) for k in range(2)]
    assert res["delta"] == pytest.approx(mean_wer[1] - mean_wer[0]) and res["wer"] == pytest.approx(mean_wer[1])


def test_seeds_with_the_same_numbers_share_one_draw_matched_by_label():
    """Pairing by seed number: system 1 lists seeds 3, 1, 2 and takes, in every resample, the draw of
    system 0's seeds 1, 2, 3 (from seed_counts(3, R, seed, 0)), column by column by label."""
    from avasr_cli.report.bootstrap import seed_counts, seed_speaker_bootstrap

    rng = np.random.default_rng(2)
    words = np.full(6, 5.0)
    errs = [rng.integers(0, 5, (3, 6)).astype(float), rng.integers(0, 5, (3, 6)).astype(float)]
    ids = [[1, 2, 3], [3, 1, 2]]
    r = 200
    spk_counts = resample_counts(3, r, seed=4)
    draw = seed_counts(3, r, 4, 0)  # columns: seeds 1, 2, 3
    inv, _ = group_index(GROUPS, 6)
    deltas = []
    for i in range(r):
        w = spk_counts[i][inv]
        mean = [sum(draw[i][ids[0].index(label)] * (w * errs[k][j]).sum() / (w * words).sum()
                    for j, label in enumerate(ids[k])) / 3 for k in range(2)]
        deltas.append(mean[1] - mean[0])
    res = seed_speaker_bootstrap(errs, [[words] * 3] * 2, GROUPS, seed_ids=ids, n_resamples=r, seed=4)[0]
    assert (res["ci_low"], res["ci_high"]) == pytest.approx(tuple(np.percentile(deltas, [2.5, 97.5])))


def test_pairing_seeds_removes_a_seed_effect_both_systems_share():
    from avasr_cli.report.bootstrap import seed_speaker_bootstrap

    rng = np.random.default_rng(6)
    n = 400
    spk = [f"s{i % 40}" for i in range(n)]
    shared = (-0.15, 0.0, 0.15)  # seed 1 is hard for both systems, seed 3 easy for both
    words, ea, eb = _seed_systems(rng, n, shared, shared)
    args = ([ea, eb], [[words] * 3] * 2, spk)
    paired = seed_speaker_bootstrap(*args, seed_ids=[[1, 2, 3], [1, 2, 3]], n_resamples=1000, seed=0)[0]
    unpaired = seed_speaker_bootstrap(*args, n_resamples=1000, seed=0)[0]
    other_seeds = seed_speaker_bootstrap(*args, seed_ids=[[1, 2, 3], [4, 5, 6]], n_resamples=1000, seed=0)[0]
    assert other_seeds == unpaired
    assert paired["delta"] == unpaired["delta"]
    assert paired["ci_high"] - paired["ci_low"] < 0.5 * (unpaired["ci_high"] - unpaired["ci_low"])
    assert paired["ci_high"] < 0 < unpaired["ci_high"]  # 30% vs 25% per seed: only the paired test sees it


def test_seed_variance_widens_the_two_level_interval():
    from avasr_cli.report.bootstrap import seed_speaker_bootstrap

    rng = np.random.default_rng(5)
    n = 400
    spk = [f"s{i % 40}" for i in range(n)]
    # seed effects not shared by the two systems: paired or not, the seeds' spread is in the interval
    words, ea, eb = _seed_systems(rng, n, (-0.15, 0.0, 0.15), (0.15, -0.15, 0.0))
    two = seed_speaker_bootstrap([ea, eb], [[words] * 3] * 2, spk, seed_ids=[[1, 2, 3]] * 2, n_resamples=1000, seed=0)[0]
    one = paired_bootstrap(ea.mean(axis=0), words, eb.mean(axis=0), words, spk, n_resamples=1000, seed=0)
    assert two["delta"] == pytest.approx(one["delta"])
    assert two["ci_high"] - two["ci_low"] > 3 * (one["ci_high"] - one["ci_low"])
    # seeds that barely differ: both intervals are about the speaker-only one
    words, ea, eb = _seed_systems(rng, n, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    two = seed_speaker_bootstrap([ea, eb], [[words] * 3] * 2, spk, n_resamples=1000, seed=0)[0]
    one = paired_bootstrap(ea.mean(axis=0), words, eb.mean(axis=0), words, spk, n_resamples=1000, seed=0)
    assert two["ci_high"] - two["ci_low"] < 2 * (one["ci_high"] - one["ci_low"])


def test_two_level_bad_input_and_speed():
    import time

    from avasr_cli.report.bootstrap import seed_speaker_bootstrap

    with pytest.raises(ValueError):
        seed_speaker_bootstrap([[[1, 2]], [[1]]], [[[3, 4]], [[3]]], None)
    with pytest.raises(ValueError):
        seed_speaker_bootstrap([[[1, 2]]], [[[3, 4]]], None)  # one system: nothing to compare
    rng = np.random.default_rng(0)
    n = 10_000
    words = rng.integers(1, 30, n)
    errs = [rng.binomial(words, 0.3, size=(5, n)) for _ in range(10)]
    t = time.perf_counter()
    seed_speaker_bootstrap(errs, [np.tile(words, (5, 1))] * 10, [f"s{i % 400}" for i in range(n)], n_resamples=1000)
    assert time.perf_counter() - t < 2.0


def test_rounding_noise_at_zero_counts_as_a_tie():
    """The same sums added in another order (per-utterance means over seeds vs the seeds' utterances
    concatenated) must give the same p-value: resampled deltas that are zero up to rounding are ties.
    Speaker s0 is identical in both systems, so every resample drawing only s0 has a delta of exactly 0;
    this configuration is one where floating point used to put some of those on one side of zero."""
    rng = np.random.default_rng(118)
    spk = [f"s{i % 3}" for i in range(6)]
    words = rng.integers(3, 9, 6).astype(float)
    seeds_a = rng.integers(0, 4, (3, 6)).astype(float)
    seeds_b = seeds_a.copy()
    seeds_b[:, [i for i in range(6) if spk[i] != "s0"]] = rng.integers(0, 2, (3, 4)).astype(float)
    mean = paired_bootstrap(seeds_a.mean(0), words, seeds_b.mean(0), words, spk, n_resamples=300, seed=3)
    flat = paired_bootstrap(seeds_a.ravel(), np.tile(words, 3), seeds_b.ravel(), np.tile(words, 3), spk * 3,
                            n_resamples=300, seed=3)
    assert mean["delta"] == pytest.approx(flat["delta"])
    assert mean["p_value"] == flat["p_value"]
