"""Statistics of ``avasr compare``: mean ± std over seeds, the paired bootstrap of each row against the
baseline, and per-seed differences.

Two intervals (each row's ``interval`` says which one ``ci_low``/``ci_high``/``p_value`` are)
    ``"seed×speaker"`` — when the row or the baseline has several seeds: the two-level paired bootstrap
    of :func:`avasr_cli.report.bootstrap.seed_speaker_bootstrap`. Each resample draws test speakers
    (the same draw for every row) and, per row, that row's seeds with replacement; a row's resampled WER
    is the mean over its drawn seeds of each seed's WER on the drawn speakers. It covers both
    test-speaker sampling and the spread between training runs. Rows with the same seed numbers as the
    baseline share its seed draw (``seed_pairing: "paired"``: seed N of one arm goes with seed N of the
    other, as the recipes run them, same init and data order); rows with other seeds draw
    ``"independent"``ly, and a note says so.

    ``"speaker"`` — one seed on both sides: speakers are resampled, nothing else (with one seed per row
    the two-level bootstrap is exactly this, for the same ``--seed``).

    The speaker-only interval of the seed-averaged systems (per utterance, word errors averaged over a
    row's seeds, paired by utterance id, speakers resampled) is always kept as ``speaker_ci_low`` /
    ``speaker_ci_high`` / ``speaker_p_value``: it answers "would these averaged systems differ on
    other speakers?", not "would another training run differ?".

Per-seed differences
    ``seed_deltas``: for each seed the row and the baseline share, ``WER(row, seed) − WER(baseline,
    seed)`` from the two runs' reports.
"""

from __future__ import annotations

import math

from avasr_cli.stages.compare.runs import Run

SEED_SPEAKER, SPEAKER = "seed×speaker", "speaker"


def interval_names(unit: str) -> tuple[str, str]:
    """("seed×<unit>", "<unit>"): what the two intervals resample, for a test set whose independent unit
    is ``unit`` (``speaker``, or ``voice`` on the built-in corpus)."""
    return f"seed×{unit}", unit


def group_of(utt: dict) -> str | None:
    """The resampled unit of a report's utterance: its speaker group (a voice on the built-in corpus), or
    for reports written before groups its speaker; ``None`` (a group of its own) when unknown."""
    value = utt.get("group") or utt.get("speaker")
    return None if value in (None, "", "unknown") else value


def mean_std(values: list) -> tuple[float | None, float | None]:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


def seed_deltas(row_runs: list[Run], base_runs: list[Run], split: str) -> list[dict]:
    """``[{"seed", "delta"}]`` for the seeds both rows have (the first run of a seed where one repeats)."""
    def by_seed(runs: list[Run]) -> dict:
        out: dict = {}
        for r in runs:
            wer = r.reports[split].get("wer")
            if r.info["seed"] is not None and wer is not None:
                out.setdefault(r.info["seed"], float(wer))
        return out

    mine, base = by_seed(row_runs), by_seed(base_runs)
    return [{"seed": s, "delta": mine[s] - base[s]} for s in sorted(set(mine) & set(base), key=str)]


def _per_run_arrays(group: list[Run], split: str, order: list[str], pos: dict[str, int]):
    """``S × n`` word errors and reference words of a row's runs (seeds), utterances in ``order``."""
    import numpy as np

    err = np.zeros((len(group), len(order)))
    words = np.zeros((len(group), len(order)))
    for s, run in enumerate(group):
        utts = run.reports[split]["utterances"]
        ids = [u["utt_id"] for u in utts]
        idx = slice(None) if ids == order else np.array([pos[i] for i in ids], dtype=np.int64)
        err[s, idx] = [u["word_errors"] for u in utts]
        words[s, idx] = [u["ref_words"] for u in utts]
    return err, words


def add_bootstrap(groups: list[list[Run]], rows: list[dict], base: int | None, split: str, n_resamples: int,
                  seed: int, notes: list[str]) -> None:
    """Fill each row's intervals (see the module docstring) in place."""
    if n_resamples == 0:
        return
    usable = [gi for gi, g in enumerate(groups) if all(r.reports[split].get("utterances") for r in g)]
    lacking = [r.path for gi, g in enumerate(groups) if gi not in usable for r in g]
    if lacking:
        notes.append(f"no per-utterance results in {', '.join(lacking)}: no confidence interval for their rows")
    if base is not None and base not in usable:
        notes.append("the baseline has no per-utterance results: no paired test")
    ref = base if base is not None and base in usable else (usable[0] if usable else None)
    if ref is None:
        return
    from avasr_cli.report.bootstrap import paired_bootstrap_many, seed_speaker_bootstrap, seeds_paired

    utts = groups[ref][0].reports[split]["utterances"]
    order = [u["utt_id"] for u in utts]
    pos = {u: i for i, u in enumerate(order)}
    speakers = [group_of(u) for u in utts]
    units = {(r.reports[split].get("group_unit") or "speaker") for gi in usable for r in groups[gi]}
    unit = units.pop() if len(units) == 1 else "speaker"
    if len(units) > 1:
        notes.append(f"the runs' reports resample different units ({', '.join(sorted(units | {unit}))}): the "
                     f"intervals resample the baseline's groups")
    seed_kind, one_kind = interval_names(unit)
    others = [gi for gi in usable if gi != ref]
    arrays = [_per_run_arrays(groups[gi], split, order, pos) for gi in [ref, *others]]
    ids = [[r.info["seed"] for r in groups[gi]] for gi in [ref, *others]]
    if not others:  # one row: its own interval only (against itself)
        arrays.append(arrays[0])
        ids.append(ids[0])
    two = seed_speaker_bootstrap([a[0] for a in arrays], [a[1] for a in arrays], speakers, seed_ids=ids,
                                 n_resamples=n_resamples, seed=seed)
    if all(len(a[0]) == 1 for a in arrays):
        one = two
    else:
        one = paired_bootstrap_many(arrays[0][0].mean(axis=0), arrays[0][1].mean(axis=0),
                                    [a[0].mean(axis=0) for a in arrays[1:]], [a[1].mean(axis=0) for a in arrays[1:]],
                                    speakers, n_resamples=n_resamples, seed=seed)
    several = len(groups[ref]) > 1
    rows[ref].update(wer_ci_low=two[0]["baseline_ci_low"], wer_ci_high=two[0]["baseline_ci_high"],
                     interval=seed_kind if several else one_kind)
    paired = base is not None and ref == base
    half: list[str] = []  # rows whose comparison has several seeds on one side only
    unpaired: list[str] = []  # rows with several seeds on both sides, but not the baseline's seed numbers
    for gi, res, res1, seeds in zip(others, two, one, ids[1:]):
        row = rows[gi]
        row.update(wer_ci_low=res["wer_ci_low"], wer_ci_high=res["wer_ci_high"])
        if not paired:
            row["interval"] = seed_kind if len(groups[gi]) > 1 else one_kind
            continue
        row.update(delta_wer=res["delta"], ci_low=res["ci_low"], ci_high=res["ci_high"], p_value=res["p_value"],
                   speaker_ci_low=res1["ci_low"], speaker_ci_high=res1["ci_high"], speaker_p_value=res1["p_value"],
                   interval=seed_kind if several or len(groups[gi]) > 1 else one_kind)
        if several != (len(groups[gi]) > 1):
            half.append(row["label"])
        if several and len(groups[gi]) > 1:
            row["seed_pairing"] = "paired" if seeds_paired(seeds, ids[0]) else "independent"
            if row["seed_pairing"] == "independent":
                unpaired.append(row["label"])
    if half and several:
        notes.append(f"{', '.join(half)}: one seed, so the {seed_kind} interval against the baseline covers "
                     "only the baseline's seed-to-seed spread")
    elif half:
        notes.append(f"the baseline has one seed, so the {seed_kind} intervals of {', '.join(half)} cover only "
                     "their own seed-to-seed spread")
    if unpaired:
        notes.append(f"{', '.join(unpaired)}: seed numbers differ from the baseline's, so seeds are drawn "
                     "independently on each side (not paired by seed number)")

