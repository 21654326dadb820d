"""Fairness checks of ``avasr compare``: are the runs comparable, and where do their budgets differ?

Same test set
    Reports of the compared split with different ``manifest_sha256`` (or different utterance ids) raise
    :class:`FairnessError`.

Fine-tuning (flags ``budget``, ``tokenizer``, ``hours``; ``untrained-vision``)
    A row's fine-tuning budget (steps, effective batch, learning rate, schedule, decoder), tokenizer or
    amount of training data that differs from the baseline's is flagged and explained in a footnote.

Environment (flag ``env``)
    The stack and machine each run's fine-tuning (and align stage) ran on (:mod:`avasr_cli.env`): a row
    whose environment differs from the baseline's in avasr's version or commit, torch, NeMo or Lightning,
    Python, the CPU model or instruction set, the thread count, the GPUs or the determinism switch is
    flagged, naming each difference; seeds of one row that ran on different stacks get a note. Figures
    from two stacks can differ the way two seeds do (see :mod:`avasr_cli.env`).

Continued pretraining (flag ``align-budget``)
    Every row with an align stage is held against a reference align row: the first ``audio-only`` row,
    else the first image row. Compared: :data:`ALIGN_COMPARED` (``init`` as a seed-free setting,
    ``manifest_sha256`` as the set of the row's align manifests) and ``init_sha256`` (the starting
    encoder's weights) seed by seed, for the seeds both rows share. Each difference is one entry
    ``{"key", "value", "reference"}`` (plus ``"seed"`` for ``init_sha256``) in the row's
    ``align_budget_diffs`` and is named, with both values, in the footnote. A key that one side never
    recorded (older run.json) is not compared, and a note says so.
"""

from __future__ import annotations

import math
from typing import Any

from avasr_cli.errors import FairnessError, InputError
from avasr_cli.stages.compare.runs import Run, fmt

HOURS_TOLERANCE = 0.02  # relative: seeds subsample slightly different amounts of the same hours
_BUDGET_KEYS = ("max_steps", "effective_batch", "lr", "head_lr", "layer_decay", "weight_decay", "schedule", "decoder")
ALIGN_COMPARED = ("max_steps", "effective_batch", "samples_per_update", "lr", "weight_decay", "warmup_steps",
                  "schedule", "init", "manifest_sha256", "freeze_layers", "head_lr", "layer_decay", "align_layer",
                  "train_pairs", "precision")


def short(sha: Any) -> str:
    return (sha or "?")[:12] if isinstance(sha, str) or sha is None else str(sha)


# ---------------------------------------------------------------------------------------------- test set
def check_same_test_set(runs: list[Run], split: str, notes: list[str]) -> None:
    missing = [r for r in runs if split not in r.reports]
    if missing:
        r = missing[0]
        others = ", ".join(m.path for m in missing[1:])
        raise InputError(
            f"run {r.path} has no report for split '{split}' (it has: {', '.join(sorted(r.reports))})"
            + (f"; neither do {others}" if others else ""),
            f"avasr evaluate -r {r.path}",
        )
    by_sha: dict[str, list[str]] = {}
    for r in runs:
        sha = r.reports[split].get("manifest_sha256")
        if sha:
            by_sha.setdefault(sha, []).append(r.path)
    if len(by_sha) > 1:
        parts = "; ".join(f"{', '.join(paths)} (manifest {short(sha)})" for sha, paths in by_sha.items())
        raise FairnessError(
            f"runs were scored on different {split} sets: {parts}",
            "compare only runs evaluated on the same test manifest (same prepare --lang/--source/--seed); "
            "re-evaluate the odd ones with `avasr evaluate -r DIR`",
        )
    unverified = [r.path for r in runs if not r.reports[split].get("manifest_sha256")]
    if unverified:
        notes.append(f"{split} manifest hash missing in {', '.join(unverified)}: same test set checked by utterance ids only")
    ids: dict[frozenset, list[str]] = {}
    for r in runs:
        utts = r.reports[split].get("utterances")
        if utts is not None:
            ids.setdefault(frozenset(u.get("utt_id") for u in utts), []).append(r.path)
    if len(ids) > 1:
        parts = "; ".join(f"{', '.join(paths)} ({len(k)} utterances)" for k, paths in ids.items())
        raise FairnessError(f"runs' {split} reports cover different utterances: {parts}",
                            "re-evaluate every run on the same test manifest with `avasr evaluate -r DIR`")


def other_split_notes(runs: list[Run], splits: list[str], split: str, notes: list[str]) -> None:
    for s in splits:
        if s == split:
            continue
        shas = {r.reports[s].get("manifest_sha256") for r in runs if s in r.reports} - {None, ""}
        if len(shas) > 1:
            notes.append(f"{s} reports come from different manifests: their WERs are not comparable")


# -------------------------------------------------------------------------------------------- finetune
def start_encoder(info: dict):
    """The encoder an arm began from, as a seed-free setting: the align stage's starting encoder for an
    aligned or audio-only arm, the fine-tuning init for a direct one."""
    if info.get("align_budget") is not None:
        return info["align_budget"].get("init")
    return info.get("init_setting")


def finetune_flags(row_runs: list[Run], base_runs: list[Run] | None, label: str,
                   ignore: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """Flags of one row against the baseline row, and their footnotes (``ignore``: budget keys meant to
    differ, the equal-compute arm's ``max_steps``)."""
    flags: list[str] = []
    notes: list[str] = []
    info = row_runs[0].info
    toks = {r.info["tokenizer"] for r in row_runs if r.info["tokenizer"]}
    if info.get("vision_untrained"):
        flags.append("untrained-vision")
        notes.append(f"[untrained-vision] {label}: aligned to an UNTRAINED vision model (random weights, "
                     "offline demo): not evidence about the method")
    if len(toks) > 1:
        flags.append("tokenizer")
        notes.append(f"[tokenizer] {label}: its runs trained different tokenizers")
    if base_runs is None or base_runs is row_runs:
        return flags, notes
    ref = base_runs[0].info
    diffs = [f"{k} {fmt(info[k])} vs {fmt(ref[k])}" for k in _BUDGET_KEYS
             if k not in ignore and info[k] is not None and ref[k] is not None and info[k] != ref[k]]
    if diffs:
        flags.append("budget")
        notes.append(f"[budget] {label}: finetune budget differs from the baseline's ({'; '.join(diffs)})")
    base_toks = {r.info["tokenizer"] for r in base_runs if r.info["tokenizer"]}
    if toks and base_toks and toks != base_toks and "tokenizer" not in flags:
        flags.append("tokenizer")
        notes.append(f"[tokenizer] {label}: tokenizer differs from the baseline's "
                     f"({', '.join(map(short, sorted(toks)))} vs {', '.join(map(short, sorted(base_toks)))})")
    start, bstart = start_encoder(info), start_encoder(ref)
    if start is not None and bstart is not None and start != bstart:
        flags.append("start")
        notes.append(f"[start] {label}: its arm began from another encoder than the baseline's "
                     f"({fmt(start)} vs {fmt(bstart)}): every arm must start from the same pretrained model")
    h, bh = info["train_hours"], ref["train_hours"]
    if h is not None and bh is not None and not math.isclose(float(h), float(bh), rel_tol=HOURS_TOLERANCE, abs_tol=1e-6):
        flags.append("hours")
        notes.append(f"[hours] {label}: trained on {float(h):.3g} h vs the baseline's {float(bh):.3g} h")
    return flags, notes


# ---------------------------------------------------------------------------------------- environment
def _run_env_diffs(a: Run, b: Run) -> list[str]:
    from avasr_cli.env import differences

    out = differences(a.info.get("environment"), b.info.get("environment"))
    out += [f"align {d}" for d in differences(a.info.get("align_environment"), b.info.get("align_environment"))]
    return out


def environment_flags(row_runs: list[Run], base_runs: list[Run] | None, label: str) -> tuple[list[str], list[str]]:
    """``env`` when the row's runs ran on another stack than the baseline's first run, and a note when a
    row's own seeds ran on different stacks."""
    notes: list[str] = []
    inner = sorted({d for r in row_runs[1:] for d in _run_env_diffs(r, row_runs[0])})
    if inner:
        notes.append(f"{label}: its runs ran on different stacks ({'; '.join(inner)})")
    if base_runs is None or base_runs is row_runs:
        return [], notes
    diffs = sorted({d for r in row_runs for d in _run_env_diffs(r, base_runs[0])})
    if not diffs:
        return [], notes
    notes.append(f"[env] {label}: ran on another stack than the baseline ({'; '.join(diffs)}); figures from two "
                 "stacks can differ the way two seeds do")
    return ["env"], notes


# ---------------------------------------------------------------------------------- continued pretraining
def align_reference(groups: list[list[Run]]) -> int | None:
    """The row every align row is held against: the first audio-only row, else the first image row."""
    aligned = [gi for gi, g in enumerate(groups) if g[0].info["align_budget"] is not None]
    audio = [gi for gi in aligned if groups[gi][0].info["arm"] == "audio-only"]
    return (audio or aligned or [None])[0]


def align_row_budget(runs: list[Run]) -> dict | None:
    """A row's continued-pretraining budget as compared (the row's runs share every setting but seeds
    and hashes): the compared keys, the SSL settings, and the hashes of its align manifests and starting
    encoders (per seed)."""
    budgets = [r.info["align_budget"] for r in runs]
    if budgets[0] is None:
        return None
    out = {k: budgets[0].get(k) for k in ALIGN_COMPARED if k != "manifest_sha256"}
    manifests = sorted({b.get("manifest_sha256") for b in budgets} - {None, ""})
    out["manifest_sha256"] = None if not manifests else manifests[0] if len(manifests) == 1 else manifests
    out["ssl"] = budgets[0].get("ssl")
    out["init_sha256"] = [{"seed": b.get("seed"), "sha256": b.get("init_sha256")} for b in budgets
                          if b.get("init_sha256")]
    return out


def _shown(key: str, value: Any) -> str:
    if key.endswith("sha256"):
        return ", ".join(map(short, value)) if isinstance(value, list) else short(value)
    return fmt(value)


def align_budget_diffs(row: dict, ref: dict, label: str, ref_label: str) -> tuple[list[dict], list[str]]:
    """Differences of one row's align budget (:func:`align_row_budget`) from the reference row's, and the
    footnotes: ``[align-budget]`` naming each differing key, and one naming keys not recorded."""
    diffs: list[dict] = []
    unknown: list[str] = []
    for k in ALIGN_COMPARED:
        v, rv = row.get(k), ref.get(k)
        if v is None or rv is None:
            unknown.append(k)
        elif v != rv:
            diffs.append({"key": k, "value": v, "reference": rv})
    ours = {d["seed"]: d["sha256"] for d in row["init_sha256"]}
    theirs = {d["seed"]: d["sha256"] for d in ref["init_sha256"]}
    shared = sorted(set(ours) & set(theirs), key=str)
    for s in shared:
        if ours[s] != theirs[s]:
            diffs.append({"key": "init_sha256", "seed": s, "value": ours[s], "reference": theirs[s]})
    if not shared:
        unknown.append("init_sha256" if not ours or not theirs else "init_sha256 (no seed in common)")
    notes = []
    if diffs:
        parts = [d["key"] + (f" (seed {d['seed']})" if "seed" in d else "")
                 + f" {_shown(d['key'], d['value'])} vs {_shown(d['key'], d['reference'])}" for d in diffs]
        notes.append(f"[align-budget] {label}: continued-pretraining budget differs from {ref_label}'s "
                     f"({'; '.join(parts)})")
    if unknown:
        notes.append(f"{label}: align budget keys missing from run.json (older runs), not compared with "
                     f"{ref_label}'s: {', '.join(unknown)}")
    return diffs, notes
