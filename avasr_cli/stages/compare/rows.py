"""Rows of ``avasr compare``: the baseline, each row's label and its fields (one dict per row, the same
dict ``--format json`` prints)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from avasr_cli.errors import ConfigError
from avasr_cli.stages.compare.fairness import (align_budget_diffs, align_reference, align_row_budget,
                                               environment_flags, finetune_flags)
from avasr_cli.stages.compare.runs import DASH, GROUP_KEYS, Run, fmt
from avasr_cli.stages.compare.stats import mean_std, seed_deltas


def resolve_baseline(baseline: str | None, groups: list[list[Run]], notes: list[str]) -> int | None:
    """``--baseline`` (a run directory or an arm label) or the ``direct`` row: its index, or ``None``."""
    if baseline:
        target = Path(baseline).resolve()
        for gi, g in enumerate(groups):
            if any(Path(r.path).resolve() == target for r in g):
                return gi
        matches = [gi for gi, g in enumerate(groups) if g[0].info["arm"] == baseline]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ConfigError(f"--baseline {baseline!r} matches {len(matches)} rows with different settings",
                              "name one of its run directories instead")
        arms = sorted({g[0].info["arm"] for g in groups})
        raise ConfigError(f"--baseline {baseline!r} is neither one of the runs nor an arm",
                          f"use a run directory or one of: {', '.join(arms)}")
    direct = [gi for gi, g in enumerate(groups) if g[0].info["arm"] == "direct"]
    if not direct:
        notes.append("no `direct` run among the runs: no ΔWER (pass --baseline RUN_OR_ARM)")
        return None
    if len(direct) > 1:
        # the direct row fine-tuned like the other arms (not the equal-compute one), else the largest
        steps = [g[0].info["max_steps"] for g in groups if g[0].info["arm"] != "direct"]
        usual = max(set(steps), key=steps.count) if steps else None
        matching = [gi for gi in direct if groups[gi][0].info["max_steps"] == usual]
        if len(matching) == 1:
            return matching[0]
        best = max(matching or direct, key=lambda gi: len(groups[gi]))
        notes.append(f"{len(direct)} `direct` rows with different settings; baseline: "
                     f"{', '.join(r.name for r in groups[best])} (pass --baseline to choose)")
        return best
    return direct[0]


def row_labels(groups: list[list[Run]]) -> list[str]:
    """The arm, made unique with the first differing setting when two rows share an arm."""
    labels = [g[0].info["arm"] for g in groups]
    for arm in set(labels):
        idx = [i for i, lab in enumerate(labels) if lab == arm]
        if len(idx) < 2:
            continue
        for k in GROUP_KEYS:
            values = [groups[i][0].info[k] for i in idx]
            if len(set(map(str, values))) > 1:
                name = {"hours_setting": "train_hours", "init_setting": "init"}.get(k, k)
                shown = "train_hours" if k == "hours_setting" else k
                for i in idx:
                    labels[i] = f"{arm} ({name}={fmt(groups[i][0].info[shown])})"
                break
    seen: dict[str, int] = {}
    for i, lab in enumerate(labels):  # still equal (should not happen): number them
        seen[lab] = seen.get(lab, 0) + 1
        if seen[lab] > 1:
            labels[i] = f"{lab} #{seen[lab]}"
    return labels


def equal_compute_rows(groups: list[list[Run]], base: int | None, ref: int | None) -> dict[int, int]:
    """Direct rows (other than the baseline) fine-tuned for the baseline's steps plus exactly the align
    steps of the reference continued-pretraining row, at the baseline's fine-tuning batch: row index →
    those extra steps."""
    if base is None or ref is None:
        return {}
    b, a = groups[base][0].info, groups[ref][0].info["align_budget"] or {}
    extra = a.get("max_steps")
    out = {}
    for gi, g in enumerate(groups):
        info = g[0].info
        if gi == base or info["arm"] != "direct" or not isinstance(extra, int):
            continue
        if (isinstance(info["max_steps"], int) and isinstance(b["max_steps"], int)
                and info["max_steps"] == b["max_steps"] + extra and info["effective_batch"] == b["effective_batch"]):
            out[gi] = extra
    return out


def _steps_by_batch(steps: Any, batch: Any) -> str:
    return f"{steps} × {batch}" if steps is not None and batch is not None else DASH


def make_row(g: list[Run], label: str, base_runs: list[Run] | None, is_base: bool, splits: list[str],
             split: str) -> dict:
    """One row: settings, WER/CER per split (mean and std over seeds), per-seed WERs and differences;
    statistics are filled in later."""
    info = g[0].info
    row: dict[str, Any] = {
        "label": label,
        "runs": [r.path for r in g],
        "names": [r.name for r in g],
        "baseline": is_base,
        "arm": info["arm"],
        "objective": info["objective"],
        "vision": info["vision"],
        "loss": info["loss"],
        "init": info["init"] if len({r.info["init"] for r in g}) == 1 else info["init_setting"],
        "decoder": info["decoder"],
        "train_hours": mean_std([r.info["train_hours"] for r in g])[0],
        "max_steps": info["max_steps"],
        "effective_batch": info["effective_batch"],
        "budget": _steps_by_batch(info["max_steps"], info["effective_batch"]),
        "align_budget": align_row_budget(g),
        "align_budget_diffs": [],
        "seeds": [r.info["seed"] for r in g],
    }
    row["align_steps_batch"] = (_steps_by_batch(row["align_budget"]["max_steps"], row["align_budget"]["effective_batch"])
                                if row["align_budget"] else DASH)
    for s in splits:
        have = [r for r in g if s in r.reports]
        row[f"wer_{s}"], row[f"wer_{s}_std"] = mean_std([r.reports[s].get("wer") for r in have])
        row[f"cer_{s}"], row[f"cer_{s}_std"] = mean_std([r.reports[s].get("cer") for r in have])
        row[f"n_{s}"] = len(have)
    row["run_wers"] = [r.reports[split].get("wer") for r in g]
    row["seed_deltas"] = seed_deltas(g, base_runs, split) if base_runs is not None and not is_base else []
    row.update(delta_wer=None, ci_low=None, ci_high=None, p_value=None, interval=None, seed_pairing=None,
               speaker_ci_low=None, speaker_ci_high=None, speaker_p_value=None, wer_ci_low=None, wer_ci_high=None,
               flags=[])
    return row


def build_rows(groups: list[list[Run]], base: int | None, splits: list[str], split: str,
               notes: list[str]) -> list[dict]:
    """Rows with labels, flags and footnotes (fine-tuning against the baseline, continued pretraining
    against the reference align row); ΔWER as the difference of mean WERs."""
    labels = row_labels(groups)
    base_runs = groups[base] if base is not None else None
    ref = align_reference(groups)
    extra = equal_compute_rows(groups, base, ref)
    for gi, steps in extra.items():
        labels[gi] = f"direct (equal compute: +{steps} steps)"
    directs = [gi for gi, g in enumerate(groups) if g[0].info["arm"] == "direct"]
    if extra and base in directs and set(directs) - {base} <= set(extra):
        labels[base] = "direct"  # the one direct row that is not an equal-compute one
    rows = []
    for gi, (g, label) in enumerate(zip(groups, labels)):
        row = make_row(g, label, base_runs, gi == base, splits, split)
        # the equal-compute arm's longer fine-tuning is the point of the arm, not an unfair budget
        row["flags"], fnotes = finetune_flags(g, base_runs if base_runs is not None else groups[0], label,
                                              ignore=("max_steps",) if gi in extra else ())
        if gi in extra:
            row["equal_compute"] = True
            b_steps = groups[base][0].info["max_steps"]
            notes.append(f"[equal-compute] {label}: the direct baseline's {b_steps} fine-tuning steps plus as many "
                         f"as the continued-pretraining arms' {extra[gi]} align steps, at its batch: as many "
                         "training steps as an aligned arm, without the images")
        env_flags, env_notes = environment_flags(g, base_runs, label)
        row["flags"] += env_flags
        notes.extend(fnotes + env_notes)
        rows.append(row)
    for gi, row in enumerate(rows):
        if ref is None or gi == ref or row["align_budget"] is None:
            continue
        row["align_budget_diffs"], fnotes = align_budget_diffs(row["align_budget"], rows[ref]["align_budget"],
                                                               row["label"], rows[ref]["label"])
        notes.extend(fnotes)
        if row["align_budget_diffs"]:
            row["flags"].append("align-budget")
    if base is not None:
        bw = rows[base][f"wer_{split}"]
        for row in rows:
            w = row[f"wer_{split}"]
            row["delta_wer"] = None if w is None or bw is None else w - bw
    return rows
