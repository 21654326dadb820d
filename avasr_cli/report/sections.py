"""The sections of an ``avasr compare`` report after its main table, as Markdown: what the alignment stage
reached per row, the stacks the runs were made with (provenance), and the by-word report."""

from __future__ import annotations

from avasr_cli.report.fmt import DASH
from avasr_cli.report.fmt import p_value as _p
from avasr_cli.report.fmt import pct as _pct
from avasr_cli.report.fmt import pp as _pp


def _ms(stat: dict | None, digits: int = 3) -> str:
    if not stat:
        return DASH
    text = f"{stat['mean']:.{digits}f}"
    return text + (f" ± {stat['sd']:.{digits}f}" if stat.get("sd") is not None else "")


def _p(v, n: int) -> str:
    if v is None:
        return DASH
    if v == 0:
        return f"<{1 / max(n, 1):.2g}"
    return f"{v:.3f}" if v >= 0.001 else f"{v:.1e}"


def alignment_markdown(result) -> str:
    rows = result.alignment
    if not rows:
        return ""
    lines = ["| Arm | seeds | held-out a→i R@1 before → after | chance | R@5 after | training pairs R@1 after | "
             "final loss (chance) | verdicts |", "|---|---|---|---|---|---|---|---|"]
    for a in rows:
        image = a["objective"] != "audio-only"
        chance = f" ({a['chance_loss']:.2f})" if a.get("chance_loss") is not None else ""
        verdicts = ", ".join(f"{k} {v}" for k, v in sorted(a["verdicts"].items())) or DASH
        lines.append(f"| {a['label']} | {a['runs']} | "
                     + (f"{_ms(a['heldout_r1_before'])} → {_ms(a['heldout_r1_after'])} | {_ms(a['heldout_chance_r1'])} | "
                        f"{_ms(a['heldout_r5_after'])} | {_ms(a['train_r1_after'])}" if image else f"{DASH} | {DASH} | {DASH} | {DASH}")
                     + f" | {_ms(a['final_loss'], 2)}{chance} | {verdicts} |")
    return ("\n".join(lines) + "\n\n_The alignment stage (run.json): mean ± sd over seeds; held-out pairs are of images "
            "no training pair shows, scored on true pairs (also for the shuffled-pairs control); chance loss: ln of "
            "the contrastive batch, or of the codebook for audio-only._\n")


def provenance_line(result) -> str:
    p = result.provenance or {}
    if not p.get("recorded"):
        return "_Provenance: the runs recorded no environment (made before avasr recorded it)._\n"

    def one(key: str, short: bool = False) -> str:
        vals = p.get(key) or []
        vals = [v[:12] for v in vals] if short else vals
        return " / ".join(vals) if vals else "unknown"

    dirty = "; a checkout had uncommitted changes" if "True" in (p.get("avasr_dirty") or []) else ""
    gpus = f"; GPUs {one('gpus')}" if p.get("gpus") else ""
    ident = (f"; {one('cpu_id')}" if p.get("cpu_id") else "") + (f", flags {one('cpu_flags')}" if p.get("cpu_flags") else "")
    return (f"_Provenance (from the runs' records): avasr {one('avasr')} at commit {one('avasr_commit', True)}{dirty}; "
            f"Python {one('python')}, torch {one('torch')}, NeMo {one('nemo_toolkit')}, Lightning {one('lightning')}; "
            f"CPU {one('cpu')} ({one('cpu_capability')}{ident}), {one('torch_threads')} torch threads{gpus}; deterministic "
            f"algorithms {one('deterministic')}; stages finished {p.get('first_finished')} to {p.get('last_finished')}._\n")


def by_word_markdown(result) -> str:
    bw = result.by_word
    if not bw:
        return ""
    n = result.n_resamples
    out = []
    if bw["classes"]:
        labels = [t["label"] for t in bw["classes"][0]["rows"]]
        head = ["Word class", "depicted", "occurrences", f"{bw['baseline']} error %"]
        head += [f"{lab}: Δ pp [95% CI] p" for lab in labels]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for c in bw["classes"]:
            name = f"**{c['class']}**" if c["class"] in ("depicted", "not depicted") else c["class"]
            cells = [name, "yes" if c["depicted"] else "no", str(c["occurrences"]), _pct(c["baseline_error_rate"])]
            for t in c["rows"]:
                ci = f" [{_pp(t['ci_low'])}, {_pp(t['ci_high'])}]" if t["ci_low"] is not None else ""
                cells.append(f"{_pp(t['delta'])}{ci} {_p(t['p_value'], n)}")
            out.append("| " + " | ".join(cells) + " |")
        out += ["", f"_Per-word error rate: substitutions and deletions of a reference word over its occurrences "
                    f"in the {bw['split']} references (insertions belong to no word), pooled over a row's seeds; Δ "
                    f"against {bw['baseline']}, with the main table's paired bootstrap ({n} resamples)._", ""]
    for ch in bw["changed"]:
        if not ch["words"]:
            continue
        out += [f"Words whose error rate moved most, {ch['label']} against {bw['baseline']} (≥ {bw['min_count']} "
                "occurrences):", "", "| word | class | occurrences | error % | baseline % | Δ pp [95% CI] |",
                "|---|---|---|---|---|---|"]
        for w in ch["words"]:
            ci = f" [{_pp(w['ci_low'])}, {_pp(w['ci_high'])}]" if w["ci_low"] is not None else ""
            out.append(f"| {w['word']} | {w['class'] or DASH} | {w['occurrences']} | {_pct(w['error_rate'])} | "
                       f"{_pct(w['baseline_error_rate'])} | {_pp(w['delta'])}{ci} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
