"""``avasr compare``: the Typer layer over :func:`avasr_cli.stages.compare.run_compare`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("compare")
    def compare(
        runs: Annotated[List[Path], typer.Argument(help="Run directories to compare (each with run.json and reports/).",
                                                   show_default=False)],
        baseline: Annotated[Optional[str], typer.Option(
            "--baseline", help="Baseline: a run directory or an arm label (default: the `direct` arm).")] = None,
        split: Annotated[str, typer.Option("--split", help="Split whose reports are tested (others are shown).")] = "test",
        fmt: Annotated[str, typer.Option("--format", help="Output: rich, markdown, csv or json.")] = "rich",
        plot: Annotated[Optional[Path], typer.Option(
            "--plot", help="Also write a plot of WER per arm with 95% intervals (.png, .pdf or .svg).")] = None,
        resamples: Annotated[int, typer.Option("--resamples", help="Bootstrap resamples (0: no test).")] = 1000,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap.")] = 0,
        by_word: Annotated[bool, typer.Option("--by-word", help="Also per-word error rates: by word class on the built-in corpus (depicted words against the rest) and the words that moved most, with intervals.")] = False,
        compact: Annotated[bool, typer.Option("--compact", help="markdown: only the columns the terminal table shows.")] = False,
    ) -> None:
        """Compare finished runs: WER/CER per split, ΔWER against a baseline with a paired bootstrap
        (95% interval, p-value), seeds of one arm grouped as mean ± std.

        The bootstrap resamples test speakers and, where an arm has several seeds, its training seeds too
        (seed×speaker interval); per-seed differences are listed for the seeds two arms share.

        Stops if the runs were scored on different test sets; flags different fine-tuning budgets,
        tokenizers, hours, and continued-pretraining budgets that differ between the align arms
        (align-budget: steps, batches, lr, schedule, starting encoder, align manifest).

        Reads run.json and reports/ only, never a model; --format json prints rows and flags for scripts.

        Examples:

        \b
            avasr compare runs/*
            avasr compare runs/* --format markdown --plot wer.png
            avasr compare runs/* --baseline audio-only --format json > compare.json
            avasr compare runs/* --by-word --format markdown --compact > by-word.md
        """
        from avasr_cli.cli.common import err, out
        from avasr_cli.stages.compare import CompareConfig, run_compare

        cfg = CompareConfig(runs=tuple(str(p) for p in runs), baseline=baseline, split=split, format=fmt,
                            plot=str(plot) if plot is not None else None, n_resamples=resamples, seed=seed,
                            by_word=by_word, compact=compact)
        result = run_compare(cfg)
        if fmt == "rich":
            from avasr_cli.report.table import table_width, to_rich

            table = to_rich(result)
            if out.is_terminal:
                out.print(table)
            else:  # a pipe or file gets the table unwrapped
                width = out.width
                out.width = max(width, min(table_width(result), 400))
                try:
                    out.print(table)
                finally:
                    out.width = width
            for note in result.flags:
                out.print(f"  • {note}", markup=False, highlight=False, soft_wrap=True)
            from avasr_cli.report.sections import alignment_markdown, by_word_markdown

            for section in (alignment_markdown(result), by_word_markdown(result)):
                if section:  # Markdown tables read well enough in a terminal
                    out.print("\n" + section, markup=False, highlight=False, soft_wrap=True, end="")
        else:
            from avasr_cli.report.table import render_text

            out.print(render_text(result, fmt), markup=False, highlight=False, soft_wrap=True, emoji=False, end="")
        if result.plot:
            err.print(f"plot written to {result.plot}", markup=False, highlight=False)
