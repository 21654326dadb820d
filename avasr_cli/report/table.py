"""Render a :class:`~avasr_cli.stages.compare.CompareResult`: rich table, Markdown, CSV, JSON, and a plot.

WER/CER are shown in percent; ΔWER and its interval in percentage points (negative = better than the
baseline). ``x ± s`` is the mean and sample standard deviation over a row's seeds. "CI over" says what the
interval resamples: ``seed×<unit>`` (training seeds and the test set's independent unit: its speakers,
or on the built-in corpus its voices) or ``<unit>`` (that unit only, one seed per side); "Δ per seed" lists WER(row, seed) − WER(baseline, seed) for the seeds both
share, when they share two or more.
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

from avasr_cli.report.fmt import DASH
from avasr_cli.report.fmt import p_value as _p
from avasr_cli.report.fmt import pct as _pct
from avasr_cli.report.fmt import pp as _pp


def _p_label(v: float, n_resamples: int) -> str:
    text = _p(v, n_resamples)
    return text if text.startswith("<") else f"={text}"


def _text(v: Any) -> str:
    if v is None or v == "":
        return DASH
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _runs_cell(row: dict) -> str:
    """``name`` for one run; ``prefix{a,b,c}`` (shell brace style) for seeds sharing a prefix."""
    names = row["names"]
    if len(names) == 1:
        return names[0]
    prefix = os.path.commonprefix(names)
    if len(prefix) >= 3 and all(len(n) > len(prefix) for n in names):
        suffixes = [n[len(prefix):] for n in names]
        common_end = os.path.commonprefix([s[::-1] for s in suffixes])[::-1]
        if common_end and all(len(s) > len(common_end) for s in suffixes):
            suffixes = [s[:-len(common_end)] for s in suffixes]
        else:
            common_end = ""
        return f"{prefix}{{{','.join(suffixes)}}}{common_end}"
    return ", ".join(names)


def columns(result, compact: bool = False) -> list[tuple[str, str]]:
    """(header, key) pairs of the table, in order. ``compact`` (the terminal table) leaves out objective,
    vision and loss, which the arm label already spells out (``align:<vision>/<loss>``, ``audio-only``)."""
    cols = [("Run(s)", "_runs"), ("Arm", "label")]
    if not compact:
        cols += [("Objective", "objective"), ("Vision", "vision"), ("Loss", "loss")]
    cols += [("Init", "init"), ("Train h", "train_hours"), ("Budget (steps × batch)", "budget"),
             ("Align (steps × batch)", "align_steps_batch")]
    for s in result.splits:
        cols += [(f"WER {s} %", f"_wer_{s}"), (f"CER {s} %", f"_cer_{s}")]
    cols += [("ΔWER pp", "_delta"), ("95% CI", "_ci"), ("CI over", "_interval"), ("p", "_p"),
             ("Δ per seed pp", "_seed_deltas"), ("Flags", "_flags")]
    return cols


def _seed_deltas_cell(row: dict) -> str:
    deltas = row.get("seed_deltas") or []
    if len(deltas) < 2:  # one shared seed: that is the ΔWER column
        return DASH
    return ", ".join(f"s{d['seed']} {_pp(d['delta'])}" for d in deltas)


def cells(result, row: dict, compact: bool = False) -> list[str]:
    out = []
    for _, key in columns(result, compact):
        if key == "_runs":
            out.append(_runs_cell(row))
        elif key.startswith("_wer_") or key.startswith("_cer_"):
            k = key[1:]
            out.append(_pct(row.get(k), row.get(f"{k}_std")))
        elif key == "_delta":
            out.append("baseline" if row["baseline"] else _pp(row["delta_wer"]))
        elif key == "_ci":
            out.append(DASH if row["ci_low"] is None else f"[{_pp(row['ci_low'])}, {_pp(row['ci_high'])}]")
        elif key == "_interval":
            out.append(DASH if row["baseline"] or row["ci_low"] is None else _text(row.get("interval")))
        elif key == "_p":
            out.append(_p(row["p_value"], result.n_resamples))
        elif key == "_seed_deltas":
            out.append(_seed_deltas_cell(row))
        elif key == "_flags":
            out.append(", ".join(row["flags"]) or "")
        else:
            out.append(_text(row.get(key)))
    return out


def _interval_kinds(result) -> set[str]:
    return {r["interval"] for r in result.rows if not r["baseline"] and r["ci_low"] is not None and r.get("interval")}


def _caption(result) -> str:
    base = f"baseline: {result.baseline}" if result.baseline else "no baseline"
    kinds = _interval_kinds(result)
    kind = next(iter(kinds)) if len(kinds) == 1 else ""
    if kind.startswith("seed×"):
        what = f"training seeds and test {kind[len('seed×'):]}s resampled"
    elif kind:
        what = f"test {kind}s resampled"
    else:
        what = "'CI over' says what is resampled"
    test = (f"paired bootstrap ({what}), {result.n_resamples} resamples, seed {result.seed}"
            if result.n_resamples else "no bootstrap")
    return f"split {result.split}; {base}; {test}"


def _compact(result) -> tuple[list[tuple[str, str]], list[list[str]]]:
    """Columns and cells of the terminal table: columns empty in every row are left out, and so is
    "CI over" when every row has the same kind of interval (the caption then names it)."""
    cols = columns(result, compact=True)
    body = [cells(result, row, compact=True) for row in result.rows]
    keep = [j for j in range(len(cols)) if any(r[j] not in (DASH, "") for r in body)
            and not (cols[j][1] == "_interval" and len(_interval_kinds(result)) == 1)]
    return [cols[j] for j in keep], [[r[j] for j in keep] for r in body]


# ------------------------------------------------------------------------------------------- formats
def to_rich(result):
    """A rich Table (compact columns, see :func:`_compact`)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="avasr compare", caption=_caption(result), show_lines=False, header_style="bold")
    cols, body = _compact(result)
    for header, key in cols:
        numeric = key.startswith(("_wer", "_cer", "_delta", "_ci", "_p", "_seed")) or key == "train_hours"
        table.add_column(header, justify="right" if numeric else "left", overflow="fold",
                         min_width=None if numeric else 6)
    for row, values in zip(result.rows, body):
        table.add_row(*map(Text, values), style="bold" if row["baseline"] else None)
    return table


def table_width(result) -> int:
    """The width the terminal table needs so that no cell wraps."""
    from rich.cells import cell_len

    cols, body = _compact(result)
    widths = [max([cell_len(cols[j][0])] + [cell_len(r[j]) for r in body]) for j in range(len(cols))]
    return sum(w + 3 for w in widths) + 1


def footnotes(result) -> list[str]:
    return list(result.flags)


def to_markdown(result) -> str:
    """The table (``result.compact``: the terminal table's columns), its caption and footnotes, then the
    alignment stage per row, the runs' provenance and, with ``--by-word``, the by-word report."""
    from avasr_cli.report.sections import alignment_markdown, by_word_markdown, provenance_line

    if result.compact:
        cols, body = _compact(result)
        heads = [h for h, _ in cols]
    else:
        heads = [h for h, _ in columns(result)]
        body = [cells(result, row) for row in result.rows]

    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
    for values in body:
        lines.append("| " + " | ".join(esc(c) for c in values) + " |")
    lines += ["", f"_{_caption(result)}._"]
    if result.flags:
        lines += [""] + [f"- {esc(n)}" for n in result.flags]
    text = "\n".join(lines) + "\n"
    for section in (alignment_markdown(result), by_word_markdown(result)):
        if section:
            text += "\n" + section
    return text + "\n" + provenance_line(result)


def to_csv(result) -> str:
    """One line per row with raw numbers (fractions, not percent); lists joined by spaces/semicolons."""
    buf = io.StringIO()
    keys: list[str] = []
    for row in result.rows:
        keys += [k for k in row if k not in keys]
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for row in result.rows:
        flat = {}
        for k, v in row.items():
            if isinstance(v, dict) or (isinstance(v, list) and any(isinstance(x, dict) for x in v)):
                v = json.dumps(v, ensure_ascii=False) if v else ""
            elif isinstance(v, list):
                v = (";" if k == "flags" else " ").join("" if x is None else str(x) for x in v)
            flat[k] = "" if v is None else v
        writer.writerow(flat)
    return buf.getvalue()


def to_json(result) -> str:
    return json.dumps(result.to_json(), indent=2, ensure_ascii=False)


def render_text(result, fmt: str) -> str:
    return {"markdown": to_markdown, "csv": to_csv, "json": to_json}[fmt](result)


# ---------------------------------------------------------------------------------------------- plot
def plot_compare(result, path: str) -> None:
    """WER per row with 95% bootstrap intervals (dots: single seeds); a second panel plots WER against
    training hours when the rows differ in it. Written atomically; the format follows the extension."""
    import textwrap
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from avasr_cli.run import atomic_path

    rows = result.rows
    split = result.split
    hours = {r["train_hours"] for r in rows if r["train_hours"] is not None}
    two = len(hours) > 1
    fig, axes = plt.subplots(1, 2 if two else 1, figsize=(max(6.0, 1.1 * len(rows) + 3) + (5 if two else 0), 5),
                             squeeze=False, gridspec_kw={"width_ratios": [max(1, len(rows)), 4] if two else [1]})
    ax = axes[0][0]
    xs = range(len(rows))
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    palette = plt.get_cmap("tab10")
    color_of = {arm: palette(i % 10) for i, arm in enumerate(arms)}
    for x, r in zip(xs, rows):
        wer = r.get(f"wer_{split}")
        if wer is None:
            continue
        ax.bar(x, 100 * wer, color=color_of[r["arm"]], alpha=0.75, width=0.6,
               edgecolor="black" if r["baseline"] else "none", hatch="//" if r["baseline"] else None)
        if r["wer_ci_low"] is not None:
            ax.errorbar(x, 100 * wer, yerr=[[100 * max(0.0, wer - r["wer_ci_low"])], [100 * max(0.0, r["wer_ci_high"] - wer)]],
                        fmt="none", ecolor="black", capsize=5, lw=1.2)
        seeds = [w for w in r["run_wers"] if w is not None]
        if len(seeds) > 1:
            ax.scatter([x] * len(seeds), [100 * w for w in seeds], color="black", s=12, zorder=3)
        note = "baseline" if r["baseline"] else (
            f"Δ {100 * r['delta_wer']:+.2f}" + (f"\np{_p_label(r['p_value'], result.n_resamples)}" if r["p_value"] is not None else "")
            if r["delta_wer"] is not None else "")
        top = max([wer] + seeds + ([r["wer_ci_high"]] if r["wer_ci_high"] is not None else []))
        ax.annotate(note, (x, 100 * top), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8)
    base = next((r for r in rows if r["baseline"]), None)
    if base is not None and base.get(f"wer_{split}") is not None:
        ax.axhline(100 * base[f"wer_{split}"], color="black", ls="--", lw=1, alpha=0.6)
    ax.set_xticks(list(xs))
    ticks = ["\n".join(line for part in r["label"].replace(" (", "\n(").split("\n") for line in textwrap.wrap(part, 22))
             for r in rows]
    many = len(rows) > 6
    ax.set_xticklabels(ticks, rotation=30 if many else 0, ha="right" if many else "center", fontsize=8)
    ax.set_ylabel(f"WER on {split} (%)")
    kinds = [r["interval"] for r in rows if r.get("interval")]
    over = next((k for k in kinds if k.startswith("seed×")), kinds[0] if kinds else "speaker")
    ax.set_title(f"WER per arm (95% CI, {result.n_resamples} {over} resamples)" if result.n_resamples else "WER per arm")
    tops = [max([r[f"wer_{split}"]] + [w for w in r["run_wers"] if w is not None]
                + ([r["wer_ci_high"]] if r["wer_ci_high"] is not None else []))
            for r in rows if r.get(f"wer_{split}") is not None]
    ax.set_ylim(0, 100 * max(tops + [0.01]) * 1.2)  # room for the Δ / p labels
    ax.grid(axis="y", alpha=0.3)

    if two:
        ax2 = axes[0][1]
        by_arm: dict[str, list[dict]] = {}
        for r in rows:
            if r["train_hours"] is not None and r.get(f"wer_{split}") is not None:
                by_arm.setdefault(r["arm"], []).append(r)
        for arm, rs in by_arm.items():
            rs = sorted(rs, key=lambda r: float(r["train_hours"]))
            hx = [float(r["train_hours"]) for r in rs]
            wy = [100 * r[f"wer_{split}"] for r in rs]
            lo = [100 * (r[f"wer_{split}"] - r["wer_ci_low"]) if r["wer_ci_low"] is not None else 0 for r in rs]
            hi = [100 * (r["wer_ci_high"] - r[f"wer_{split}"]) if r["wer_ci_high"] is not None else 0 for r in rs]
            ax2.errorbar(hx, wy, yerr=[lo, hi], marker="o", capsize=3, label=arm, color=color_of[arm])
        ax2.set_xlabel("fine-tuning data (hours)")
        ax2.set_ylabel(f"WER on {split} (%)")
        ax2.set_title("WER vs training hours")
        if min(hours) > 0 and max(hours) / min(hours) >= 8:
            ax2.set_xscale("log")
        ax2.set_xticks(sorted(float(h) for h in hours))
        ax2.set_xticklabels([f"{float(h):g}" for h in sorted(float(h) for h in hours)])
        ax2.minorticks_off()
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8)
    fig.tight_layout()
    dest = Path(path)
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format=dest.suffix.lstrip(".").lower(), dpi=150)
    plt.close(fig)
