"""``avasr compare``: one table of runs, grouped by arm, with paired bootstrap tests against a baseline.

Reads only ``run.json`` and ``reports/wer-<split>.json`` of each run directory (no lock, nothing written
except an optional plot). Never imports torch or NeMo.

Arms and groups
    A run's arm is ``direct`` (no align stage), ``audio-only`` (align objective ``audio-only``) or
    ``align:<vision>/<loss>``. Runs whose settings (arm, align and finetune settings, data, the train hours
    asked for) are equal and that differ only in seeds form one row: WER/CER are the mean ± sample std over
    them. An init description that differs only by a ``seed N`` inside it or by the run's own directory
    counts as the same setting. Seeds subsample slightly different amounts of the hours asked for, so the
    ``hours`` flag below ignores differences under 2%.

Baseline
    ``--baseline`` names a run directory (its row becomes the baseline) or an arm label; by default the
    ``direct`` row. ΔWER = WER(row) − WER(baseline), in absolute terms.

Paired test (choice documented here)
    Per utterance, the word errors of a row are averaged over its runs (seeds), likewise for the
    baseline; rows and baseline are then paired by utterance id and speakers are resampled
    (:mod:`avasr_cli.report.bootstrap`). Because all seeds share one test set and a speaker takes all its
    utterances along, this equals pooling the utterances of every seed (ids made unique per seed) and
    pairing seed *i* with seed *i* when the seeds match, and it still works when the seed sets differ.
    The interval reflects test-set (speaker) sampling; variation between training seeds is the ± column.

Fairness
    Reports of the compared split with different ``manifest_sha256`` (or different utterance ids) raise
    :class:`FairnessError`. A finetune budget, tokenizer or amount of training data that differs from the
    baseline's is flagged in the ``flags`` column and explained in a footnote.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

from avasr_cli.errors import ConfigError, FairnessError, InputError, raise_problems

FORMATS = ("rich", "markdown", "csv", "json")
DASH = "—"
_SPLIT_ORDER = {"test": 0, "dev": 1, "validation": 1, "train": 2}
HOURS_TOLERANCE = 0.02  # relative: seeds subsample slightly different amounts of the same hours


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    runs: tuple[str, ...]
    baseline: str | None = None
    split: str = "test"
    format: str = "rich"
    plot: str | None = None
    n_resamples: int = 1000
    seed: int = 0

    def validate(self) -> None:
        problems = []
        if not self.runs:
            problems.append("no run directories given")
        if self.format not in FORMATS:
            problems.append(f"--format must be one of {', '.join(FORMATS)}, not {self.format!r}")
        if not self.split or "/" in self.split:
            problems.append(f"--split {self.split!r} is not a split name")
        if self.n_resamples < 0:
            problems.append(f"--resamples must be 0 (no test) or more, not {self.n_resamples}")
        if self.plot is not None and Path(self.plot).suffix.lower() not in (".png", ".pdf", ".svg"):
            problems.append(f"--plot {self.plot!r} must end in .png, .pdf or .svg")
        raise_problems(problems, "see `avasr compare --help`")


@dataclasses.dataclass
class CompareResult:
    split: str
    splits: list[str]
    baseline: str | None
    rows: list[dict]
    flags: list[str]
    n_resamples: int
    seed: int
    plot: str | None = None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------- runs
@dataclasses.dataclass
class _Run:
    path: str
    name: str
    info: dict
    reports: dict[str, dict]


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _first(*values: Any) -> Any:
    for v in values:
        if v is not None and v != "":
            return v
    return None


_SEED_IN_TEXT = re.compile(r"\bseed[\s=:]*\d+", re.IGNORECASE)


def _same_setting(value: Any, root: Path) -> Any:
    """An init description as a setting: the run's own directory and any ``seed N`` inside it do not
    count (``tiny (seed 1, random init)`` of seed 1 and ``tiny (seed 2, …)`` of seed 2 are one setting)."""
    if not isinstance(value, str):
        return value
    return _SEED_IN_TEXT.sub("seed *", value.replace(str(root), "<run>"))


def _run_info(record: dict, root: Path) -> dict:
    """The settings compare shows and groups by, from run.json; stage results (resolved values) win over
    stage configs (what was asked, e.g. ``auto``)."""
    stages = record.get("stages") or {}
    prep = _get(stages, "prepare", "config") or {}
    align = stages.get("align")
    acfg = _get(align, "config") or {}
    ares = _get(align, "result") or {}
    fcfg = _get(stages, "finetune", "config") or {}
    fres = _get(stages, "finetune", "result") or {}
    budget = fres.get("budget") or {}
    if align is None:  # fine-tuned from an encoder aligned in another run directory (--init DIR)
        earlier = [h for h in fres.get("encoder_history") or [] if isinstance(h, dict) and h.get("stage") == "align"]
        if earlier:
            align, ares = {"result": earlier[-1]}, earlier[-1]
    objective = _first(ares.get("objective"), acfg.get("objective")) if align is not None else None
    vision = _first(ares.get("vision"), acfg.get("vision")) if objective != "audio-only" else None
    loss = _first(ares.get("loss"), acfg.get("loss"))
    if align is None:
        arm = "direct"
    elif objective == "audio-only":
        arm = "audio-only"
    else:
        arm = f"align:{vision or DASH}/{loss or DASH}"
    batch = _first(budget.get("batch_size"), fcfg.get("batch_size"))
    hours = _first(budget.get("train_hours"), fres.get("train_hours"))
    init = _first(fres.get("init"), fcfg.get("init"), acfg.get("init"))
    return {
        "arm": arm,
        "objective": objective,
        "vision": vision,
        "vision_untrained": bool(ares.get("vision_untrained")) if align is not None else False,
        "loss": loss,
        "align_steps": _first(acfg.get("max_steps"), ares.get("steps")),
        "align_batch": _first(ares.get("effective_batch"), acfg.get("batch_size")),
        "align_init": _same_setting(_first(ares.get("init"), acfg.get("init")), root),
        "init": init,
        "init_setting": _same_setting(init, root),
        "decoder": _first(budget.get("decoder"), fres.get("decoder"), fcfg.get("decoder")),
        "max_steps": _first(budget.get("max_steps"), fcfg.get("max_steps")),
        "batch_size": batch,
        "effective_batch": _first(budget.get("effective_batch"), batch),
        "lr": _first(budget.get("lr"), fcfg.get("lr")),
        "schedule": budget.get("schedule"),
        "train_hours": hours,
        # the amount asked for (0 = all): seeds subsample slightly different hours of the same amount
        "hours_setting": fcfg["train_hours"] if "train_hours" in fcfg else (round(float(hours), 2) if hours is not None else None),
        "seed": _first(budget.get("seed"), fcfg.get("seed")),
        "tokenizer": fres.get("tokenizer_sha256"),
        "lang": prep.get("lang"),
        "source": prep.get("source"),
    }


# what must be equal for runs to share a row: everything shown except seeds and the tokenizer hash
_GROUP_KEYS = ("arm", "objective", "vision", "loss", "align_steps", "align_batch", "align_init", "init_setting",
               "decoder", "max_steps", "batch_size", "effective_batch", "lr", "schedule", "hours_setting", "lang", "source")
_BUDGET_KEYS = ("max_steps", "effective_batch", "lr", "schedule", "decoder")


def _load_run(path: str) -> _Run:
    from avasr_cli.run import RunDir

    p = Path(path)
    if not p.is_dir() or not (p / "run.json").is_file():
        what = "does not exist" if not p.exists() else ("is not a directory" if not p.is_dir() else "has no run.json")
        raise InputError(f"{path} {what}: not a run directory",
                         "pass run directories (each with a run.json), e.g. `avasr compare runs/*`")
    record = RunDir(p).load()
    reports: dict[str, dict] = {}
    for f in sorted((p / "reports").glob("wer-*.json")):
        try:
            rep = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"report {f} cannot be read ({exc})", f"avasr evaluate -r {path}") from exc
        if not isinstance(rep, dict):
            raise InputError(f"report {f} is not a JSON object", f"avasr evaluate -r {path}")
        reports[rep.get("split") or f.name[len("wer-"):-len(".json")]] = rep
    if not reports:
        raise InputError(f"run directory {path} has no reports (reports/wer-<split>.json)", f"avasr evaluate -r {path}")
    return _Run(path=str(path), name=p.resolve().name, info=_run_info(record, p.resolve()), reports=reports)


# ------------------------------------------------------------------------------------------ fairness
def _short(sha: str | None) -> str:
    return (sha or "?")[:12]


def _check_same_test_set(runs: list[_Run], split: str, notes: list[str]) -> None:
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
        parts = "; ".join(f"{', '.join(paths)} (manifest {_short(sha)})" for sha, paths in by_sha.items())
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


# ------------------------------------------------------------------------------------------- compare
def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


def _utterance_arrays(group: list[_Run], split: str, order: list[str], pos: dict[str, int]):
    """Per-utterance word errors and reference words, averaged over the group's runs, in ``order``."""
    import numpy as np

    n = len(order)
    err = np.zeros(n)
    words = np.zeros(n)
    for run in group:
        utts = run.reports[split]["utterances"]
        e = np.array([u["word_errors"] for u in utts], dtype=float)
        w = np.array([u["ref_words"] for u in utts], dtype=float)
        ids = [u["utt_id"] for u in utts]
        if ids == order:
            err += e
            words += w
        else:
            idx = np.array([pos[i] for i in ids], dtype=np.int64)
            np.add.at(err, idx, e)
            np.add.at(words, idx, w)
    return err / len(group), words / len(group)


def _resolve_baseline(cfg: CompareConfig, groups: list[list[_Run]], notes: list[str]) -> int | None:
    if cfg.baseline:
        target = Path(cfg.baseline).resolve()
        for gi, g in enumerate(groups):
            if any(Path(r.path).resolve() == target for r in g):
                return gi
        matches = [gi for gi, g in enumerate(groups) if g[0].info["arm"] == cfg.baseline]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ConfigError(f"--baseline {cfg.baseline!r} matches {len(matches)} rows with different settings",
                              "name one of its run directories instead")
        arms = sorted({g[0].info["arm"] for g in groups})
        raise ConfigError(f"--baseline {cfg.baseline!r} is neither one of the runs nor an arm",
                          f"use a run directory or one of: {', '.join(arms)}")
    direct = [gi for gi, g in enumerate(groups) if g[0].info["arm"] == "direct"]
    if not direct:
        notes.append("no `direct` run among the runs: no ΔWER (pass --baseline RUN_OR_ARM)")
        return None
    if len(direct) > 1:
        best = max(direct, key=lambda gi: len(groups[gi]))
        notes.append(f"{len(direct)} `direct` rows with different settings; baseline: "
                     f"{', '.join(r.name for r in groups[best])} (pass --baseline to choose)")
        return best
    return direct[0]


def _fmt(v: Any) -> str:
    return DASH if v is None or v == "" else str(v)


def _flags(row_runs: list[_Run], base_runs: list[_Run] | None, label: str) -> tuple[list[str], list[str]]:
    """Flags of one row against the reference row, and their footnotes."""
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
    diffs = [f"{k} {_fmt(info[k])} vs {_fmt(ref[k])}" for k in _BUDGET_KEYS
             if info[k] is not None and ref[k] is not None and info[k] != ref[k]]
    if diffs:
        flags.append("budget")
        notes.append(f"[budget] {label}: finetune budget differs from the baseline's ({'; '.join(diffs)})")
    base_toks = {r.info["tokenizer"] for r in base_runs if r.info["tokenizer"]}
    if toks and base_toks and toks != base_toks and "tokenizer" not in flags:
        flags.append("tokenizer")
        notes.append(f"[tokenizer] {label}: tokenizer differs from the baseline's "
                     f"({', '.join(map(_short, sorted(toks)))} vs {', '.join(map(_short, sorted(base_toks)))})")
    h, bh = info["train_hours"], ref["train_hours"]
    if h is not None and bh is not None and not math.isclose(float(h), float(bh), rel_tol=HOURS_TOLERANCE, abs_tol=1e-6):
        flags.append("hours")
        notes.append(f"[hours] {label}: trained on {float(h):.3g} h vs the baseline's {float(bh):.3g} h")
    return flags, notes


def run_compare(cfg: CompareConfig) -> CompareResult:
    """Load the runs, check they are comparable, group seeds, test each row against the baseline."""
    cfg.validate()
    notes: list[str] = []
    seen: set[Path] = set()
    paths = []
    for p in cfg.runs:  # a run given twice counts once
        if Path(p).is_file():  # `runs/*` also matches plots and notes kept beside the runs
            notes.append(f"skipped {p}: a file, not a run directory")
            continue
        if Path(p).resolve() not in seen:
            seen.add(Path(p).resolve())
            paths.append(p)
    if not paths:
        raise InputError("no run directories among the arguments", "pass run directories, e.g. `avasr compare runs/*`")
    runs = [_load_run(p) for p in paths]
    _check_same_test_set(runs, cfg.split, notes)

    names = [r.name for r in runs]
    for r in runs:  # show the path where folder names collide
        if names.count(r.name) > 1:
            r.name = r.path

    key_of = {id(r): json.dumps([r.info[k] for k in _GROUP_KEYS], default=str) for r in runs}
    grouped: dict[str, list[_Run]] = {}
    for r in runs:
        grouped.setdefault(key_of[id(r)], []).append(r)
    groups = list(grouped.values())
    for g in groups:
        g.sort(key=lambda r: (r.info["seed"] is None, str(r.info["seed"]), r.name))
    base = _resolve_baseline(cfg, groups, notes)
    if base is not None:
        groups.insert(0, groups.pop(base))
        base = 0

    splits = sorted({s for r in runs for s in r.reports}, key=lambda s: (s != cfg.split, _SPLIT_ORDER.get(s, 9), s))
    for s in splits:
        if s == cfg.split:
            continue
        shas = {r.reports[s].get("manifest_sha256") for r in runs if s in r.reports} - {None, ""}
        if len(shas) > 1:
            notes.append(f"{s} reports come from different manifests: their WERs are not comparable")

    labels = _row_labels(groups)
    rows: list[dict] = []
    base_runs = groups[base] if base is not None else groups[0]
    for g, label in zip(groups, labels):
        info = g[0].info
        flags, fnotes = _flags(g, base_runs, label)
        notes.extend(fnotes)
        row: dict[str, Any] = {
            "label": label,
            "runs": [r.path for r in g],
            "names": [r.name for r in g],
            "baseline": base is not None and g is groups[base],
            "arm": info["arm"],
            "objective": info["objective"],
            "vision": info["vision"],
            "loss": info["loss"],
            "init": info["init"] if len({r.info["init"] for r in g}) == 1 else info["init_setting"],
            "decoder": info["decoder"],
            "train_hours": _mean_std([r.info["train_hours"] for r in g])[0],
            "max_steps": info["max_steps"],
            "effective_batch": info["effective_batch"],
            "budget": (f"{info['max_steps']} × {info['effective_batch']}"
                       if info["max_steps"] is not None and info["effective_batch"] is not None else DASH),
            "seeds": [r.info["seed"] for r in g],
        }
        for s in splits:
            have = [r for r in g if s in r.reports]
            row[f"wer_{s}"], row[f"wer_{s}_std"] = _mean_std([r.reports[s].get("wer") for r in have])
            row[f"cer_{s}"], row[f"cer_{s}_std"] = _mean_std([r.reports[s].get("cer") for r in have])
            row[f"n_{s}"] = len(have)
        row["run_wers"] = [r.reports[cfg.split].get("wer") for r in g]
        row.update(delta_wer=None, ci_low=None, ci_high=None, p_value=None, wer_ci_low=None, wer_ci_high=None)
        row["flags"] = flags
        rows.append(row)

    if base is not None:
        bw = rows[base][f"wer_{cfg.split}"]
        for row in rows:
            w = row[f"wer_{cfg.split}"]
            row["delta_wer"] = None if w is None or bw is None else w - bw
    _add_bootstrap(cfg, groups, rows, base, notes)
    result = CompareResult(split=cfg.split, splits=splits, baseline=rows[base]["label"] if base is not None else None,
                           rows=rows, flags=list(dict.fromkeys(notes)), n_resamples=cfg.n_resamples, seed=cfg.seed)
    if cfg.plot:
        from avasr_cli.report.table import plot_compare

        plot_compare(result, cfg.plot)
        result.plot = str(cfg.plot)
    return result


def _row_labels(groups: list[list[_Run]]) -> list[str]:
    """The arm, made unique with the first differing setting when two rows share an arm."""
    labels = [g[0].info["arm"] for g in groups]
    for arm in set(labels):
        idx = [i for i, lab in enumerate(labels) if lab == arm]
        if len(idx) < 2:
            continue
        for k in _GROUP_KEYS:
            values = [groups[i][0].info[k] for i in idx]
            if len(set(map(str, values))) > 1:
                name = {"hours_setting": "train_hours", "init_setting": "init"}.get(k, k)
                shown = "train_hours" if k == "hours_setting" else k
                for i in idx:
                    labels[i] = f"{arm} ({name}={_fmt(groups[i][0].info[shown])})"
                break
    seen: dict[str, int] = {}
    for i, lab in enumerate(labels):  # still equal (should not happen): number them
        seen[lab] = seen.get(lab, 0) + 1
        if seen[lab] > 1:
            labels[i] = f"{lab} #{seen[lab]}"
    return labels


def _add_bootstrap(cfg: CompareConfig, groups: list[list[_Run]], rows: list[dict], base: int | None,
                   notes: list[str]) -> None:
    if cfg.n_resamples == 0:
        return
    split = cfg.split
    usable = [gi for gi, g in enumerate(groups) if all(r.reports[split].get("utterances") for r in g)]
    lacking = [r.path for gi, g in enumerate(groups) if gi not in usable for r in g]
    if lacking:
        notes.append(f"no per-utterance results in {', '.join(lacking)}: no confidence interval for their rows")
    if base is not None and base not in usable:
        notes.append("the baseline has no per-utterance results: no paired test")
    ref = base if base is not None and base in usable else (usable[0] if usable else None)
    if ref is None:
        return
    from avasr_cli.report.bootstrap import paired_bootstrap_many

    utts = groups[ref][0].reports[split]["utterances"]
    order = [u["utt_id"] for u in utts]
    pos = {u: i for i, u in enumerate(order)}
    speakers = [None if u.get("speaker") in (None, "", "unknown") else u["speaker"] for u in utts]
    err_a, n_a = _utterance_arrays(groups[ref], split, order, pos)
    others = [gi for gi in usable if gi != ref]
    arrays = [_utterance_arrays(groups[gi], split, order, pos) for gi in others]
    results = paired_bootstrap_many(err_a, n_a, [a[0] for a in arrays] or [err_a], [a[1] for a in arrays] or [n_a],
                                    speakers, n_resamples=cfg.n_resamples, seed=cfg.seed)
    rows[ref]["wer_ci_low"] = results[0]["baseline_ci_low"]
    rows[ref]["wer_ci_high"] = results[0]["baseline_ci_high"]
    for gi, res in zip(others, results):
        rows[gi]["wer_ci_low"], rows[gi]["wer_ci_high"] = res["wer_ci_low"], res["wer_ci_high"]
        if base is not None and ref == base:
            rows[gi].update(delta_wer=res["delta"], ci_low=res["ci_low"], ci_high=res["ci_high"], p_value=res["p_value"])
