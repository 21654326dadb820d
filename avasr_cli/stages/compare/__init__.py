"""``avasr compare``: one table of runs, grouped by arm, with paired bootstrap tests against a baseline.

Reads only ``run.json`` and ``reports/wer-<split>.json`` of each run directory (no lock, nothing written
except an optional plot). Never imports torch or NeMo. The parts, each its own module:

* :mod:`~avasr_cli.stages.compare.runs` — reading runs: the settings shown and grouped by, the recorded
  (or, for older runs, rebuilt) continued-pretraining budget, runs grouped into rows.
* :mod:`~avasr_cli.stages.compare.fairness` — same test set or stop; fine-tuning budget, tokenizer and
  hours flags against the baseline; continued-pretraining budget flags against a reference align row.
* :mod:`~avasr_cli.stages.compare.stats` — mean ± std over seeds, the speaker-only and the seed×speaker
  bootstrap, per-seed differences.
* :mod:`~avasr_cli.stages.compare.rows` — the baseline, row labels (the shuffled-pairs control and the
  equal-compute direct arm named as such), the row dicts.
* :mod:`~avasr_cli.stages.compare.summary` — what each row's alignment stage reached, and the stacks the
  runs were made with (provenance).
* :mod:`~avasr_cli.stages.compare.words` — ``--by-word``: error rates per word class and per word.

Arms and groups
    A run's arm is ``direct`` (no align stage), ``audio-only`` (align objective ``audio-only``) or
    ``align:<vision>/<loss>`` (``+shuffled`` for the negative control, ``@L<n>`` for an intermediate layer). Runs whose settings (arm, align and finetune settings, data, the train hours
    asked for) are equal and that differ only in seeds form one row: WER/CER are the mean ± sample std over
    them. An init description that differs only by a ``seed N`` inside it or by the run's own directory
    counts as the same setting. Seeds subsample slightly different amounts of the hours asked for, so the
    ``hours`` flag ignores differences under 2%.

Baseline
    ``--baseline`` names a run directory (its row becomes the baseline) or an arm label; by default the
    ``direct`` row. ΔWER = WER(row) − WER(baseline), in absolute terms, each the mean over seeds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from avasr_cli.errors import ConfigError, raise_problems
from avasr_cli.stages.compare.fairness import check_same_test_set, other_split_notes
from avasr_cli.stages.compare.rows import build_rows, resolve_baseline
from avasr_cli.stages.compare.runs import group_runs, load_runs
from avasr_cli.stages.compare.stats import add_bootstrap
from avasr_cli.stages.compare.summary import alignment_summary, provenance

FORMATS = ("rich", "markdown", "csv", "json")
_SPLIT_ORDER = {"test": 0, "dev": 1, "validation": 1, "train": 2}


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    runs: tuple[str, ...]
    baseline: str | None = None
    split: str = "test"
    format: str = "rich"
    plot: str | None = None
    n_resamples: int = 1000
    seed: int = 0
    by_word: bool = False  # also the by-word report (stages.compare.words)
    compact: bool = False  # markdown: the terminal table's columns

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
    alignment: list = dataclasses.field(default_factory=list)  # the continued-pretraining stage per row
    provenance: dict = dataclasses.field(default_factory=dict)  # the stacks and commits the runs were made with
    by_word: dict | None = None
    compact: bool = False

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def run_compare(cfg: CompareConfig) -> CompareResult:
    """Load the runs, check they are comparable, group seeds, test each row against the baseline."""
    cfg.validate()
    notes: list[str] = []
    runs = load_runs(cfg.runs, notes)
    check_same_test_set(runs, cfg.split, notes)
    groups = group_runs(runs)
    base = resolve_baseline(cfg.baseline, groups, notes)
    if base is not None:
        groups.insert(0, groups.pop(base))
        base = 0
    splits = sorted({s for r in runs for s in r.reports}, key=lambda s: (s != cfg.split, _SPLIT_ORDER.get(s, 9), s))
    other_split_notes(runs, splits, cfg.split, notes)
    rows = build_rows(groups, base, splits, cfg.split, notes)
    add_bootstrap(groups, rows, base, cfg.split, cfg.n_resamples, cfg.seed, notes)
    result = CompareResult(split=cfg.split, splits=splits, baseline=rows[base]["label"] if base is not None else None,
                           rows=rows, flags=list(dict.fromkeys(notes)), n_resamples=cfg.n_resamples, seed=cfg.seed,
                           alignment=alignment_summary(groups, rows), provenance=provenance(runs),
                           compact=cfg.compact)
    if cfg.by_word:
        if base is None:
            raise ConfigError("--by-word needs a baseline", "pass --baseline RUN_OR_ARM, or include a `direct` run")
        from avasr_cli.stages.compare.words import by_word

        result.by_word = by_word(groups, rows, base, cfg.split, n_resamples=cfg.n_resamples, seed=cfg.seed)
    if cfg.plot:
        from avasr_cli.report.table import plot_compare

        plot_compare(result, cfg.plot)
        result.plot = str(cfg.plot)
    return result


__all__ = ["FORMATS", "CompareConfig", "CompareResult", "run_compare"]
