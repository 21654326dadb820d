"""``avasr compare --by-word``: where a row's gain comes from, word by word and class by class.

Per-word error rate
    Each test reference word is aligned to the hypothesis (jiwer's word alignment of the normalised
    texts the reports hold) and counts as an error when it is substituted or deleted; insertions belong
    to no reference word and are left out. A word's error rate is its errors over its occurrences,
    summed over a row's seeds (so the rate of a row is that of its pooled runs).

Classes (built-in corpus)
    The data card's ``word_classes`` (:func:`avasr_cli.data.builtin.word_classes`) sorts every word into
    what a picture shows (count, size, colour, shape, position, background) and what it does not (names,
    times, places, verbs, comments, function words). For each class, and for all depicted and all other
    words together, each row's error rate and its difference from the baseline's, with a 95% interval
    and p-value from the same two-level paired bootstrap as the main table
    (:func:`avasr_cli.report.bootstrap.seed_speaker_bootstrap`: the test set's independent unit, voices
    or speakers, and seeds resampled): per utterance, the class's word errors and occurrences take the
    place of word errors and reference words.

Words that changed most (any corpus)
    Per row, the words with at least ``min_count`` occurrences whose error rate moved most against the
    baseline, each with its interval (the same bootstrap on that word's counts).
"""

from __future__ import annotations

import json
from pathlib import Path

from avasr_cli.stages.compare.runs import Run
from avasr_cli.stages.compare.stats import group_of

DEPICTED = ("count", "size", "colour", "shape", "position", "background")


def word_errors(refs: list[str], hyps: list[str]) -> list[list[tuple[str, int]]]:
    """Per utterance, each reference word and 1 if it was substituted or deleted, else 0."""
    import jiwer

    out: list[list[tuple[str, int]]] = []
    if not refs:
        return out
    safe_refs = [r if r.strip() else "" for r in refs]
    result = jiwer.process_words([r or "\u2205" for r in safe_refs], [h or "" for h in hyps])
    for i, ref in enumerate(safe_refs):
        if not ref:
            out.append([])
            continue
        words = result.references[i]
        marks = [0] * len(words)
        for chunk in result.alignments[i]:
            if chunk.type in ("substitute", "delete"):
                for k in range(chunk.ref_start_idx, chunk.ref_end_idx):
                    marks[k] = 1
        out.append(list(zip(words, marks)))
    return out


def _run_words(run: Run, split: str, order: list[str]) -> list[list[tuple[str, int]]]:
    utts = {u["utt_id"]: u for u in run.reports[split]["utterances"]}
    return word_errors([utts[i]["ref"] for i in order], [utts[i]["hyp"] for i in order])


def word_classes(run: Run) -> dict[str, str] | None:
    """The data card's word classes of a run (built-in corpus), or None."""
    try:
        card = json.loads((Path(run.path) / "data" / "data_card.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    classes = card.get("word_classes") if isinstance(card, dict) else None
    return classes if isinstance(classes, dict) and classes else None


def _counts(per_run: list[list[list[tuple[str, int]]]], select) -> tuple[list[list[float]], list[list[float]]]:
    """S × n errors and occurrences of the words ``select`` accepts, per seed and utterance."""
    errs, occ = [], []
    for words in per_run:
        errs.append([float(sum(m for w, m in utt if select(w))) for utt in words])
        occ.append([float(sum(1 for w, _ in utt if select(w))) for utt in words])
    return errs, occ


def _rate(errs, occ) -> float | None:
    n = sum(map(sum, occ))
    return sum(map(sum, errs)) / n if n else None


def by_word(groups: list[list[Run]], rows: list[dict], base: int, split: str, *, n_resamples: int, seed: int,
            min_count: int = 5, top: int = 10) -> dict:
    """The by-word report (see the module docstring) of every row against row ``base``."""
    from avasr_cli.report.bootstrap import seed_speaker_bootstrap

    utts = groups[base][0].reports[split]["utterances"]
    order = [u["utt_id"] for u in utts]
    units = [group_of(u) for u in utts]
    words = {gi: [_run_words(r, split, order) for r in g] for gi, g in enumerate(groups)}
    seeds = {gi: [r.info["seed"] for r in g] for gi, g in enumerate(groups)}
    others = [gi for gi in range(len(groups)) if gi != base]

    def test(select) -> tuple[dict, list[dict]]:
        counts = {gi: _counts(words[gi], select) for gi in [base, *others]}
        base_rate = _rate(*counts[base])
        occurrences = int(sum(counts[base][1][0]))
        if not others or not occurrences:
            return {"occurrences": occurrences, "baseline_error_rate": base_rate}, []
        res = seed_speaker_bootstrap([counts[gi][0] for gi in [base, *others]], [counts[gi][1] for gi in [base, *others]],
                                     units, seed_ids=[seeds[gi] for gi in [base, *others]],
                                     n_resamples=max(1, n_resamples), seed=seed)
        return ({"occurrences": occurrences, "baseline_error_rate": base_rate},
                [{"label": rows[gi]["label"], "error_rate": _rate(*counts[gi]), "delta": r["delta"],
                  "ci_low": r["ci_low"] if n_resamples else None, "ci_high": r["ci_high"] if n_resamples else None,
                  "p_value": r["p_value"] if n_resamples else None} for gi, r in zip(others, res)])

    classes = word_classes(groups[base][0])
    class_rows = []
    if classes:
        names = sorted(set(classes.values()), key=lambda c: (c not in DEPICTED, DEPICTED.index(c) if c in DEPICTED else 0, c))
        for name in [*names, "depicted", "not depicted"]:
            if name == "depicted":
                select = lambda w: classes.get(w) in DEPICTED  # noqa: E731
            elif name == "not depicted":
                select = lambda w: w in classes and classes[w] not in DEPICTED  # noqa: E731
            else:
                select = lambda w, name=name: classes.get(w) == name  # noqa: E731
            head, tests = test(select)
            if head["occurrences"]:
                class_rows.append({"class": name, "depicted": name in DEPICTED or name == "depicted", **head,
                                   "rows": tests})
        unknown = sorted({w for utt in words[base][0] for w, _ in utt if w not in classes})
    else:
        unknown = []
    # words that moved most, per row
    occ: dict[str, int] = {}
    for utt in words[base][0]:
        for w, _ in utt:
            occ[w] = occ.get(w, 0) + 1
    frequent = sorted(w for w, n in occ.items() if n >= min_count)
    changed = []
    for gi in others:
        deltas = []
        for w in frequent:
            b = _rate(*_counts(words[base], lambda x, w=w: x == w))
            r = _rate(*_counts(words[gi], lambda x, w=w: x == w))
            if b is not None and r is not None:
                deltas.append((abs(r - b), w, r, b))
        picked = sorted(deltas, key=lambda d: (-d[0], d[1]))[:top]
        entries = []
        for _, w, r, b in picked:
            counts = [_counts(words[k], lambda x, w=w: x == w) for k in (base, gi)]
            res = seed_speaker_bootstrap([c[0] for c in counts], [c[1] for c in counts], units,
                                         seed_ids=[seeds[base], seeds[gi]], n_resamples=max(1, n_resamples),
                                         seed=seed)[0]
            entries.append({"word": w, "class": (classes or {}).get(w), "occurrences": occ[w], "error_rate": r,
                            "baseline_error_rate": b, "delta": r - b,
                            "ci_low": res["ci_low"] if n_resamples else None,
                            "ci_high": res["ci_high"] if n_resamples else None})
        changed.append({"label": rows[gi]["label"], "words": entries})
    return {"split": split, "baseline": rows[base]["label"], "classes": class_rows, "changed": changed,
            "min_count": min_count, "unclassified_words": unknown[:20]}
