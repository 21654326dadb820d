"""``avasr prepare``: the Typer layer over :func:`avasr_cli.stages.prepare.run_prepare`."""

from __future__ import annotations

import typer

from avasr_cli.cli.common import ForceOption, JsonOption, RunDirOption, run_stage


def _summary(result: dict) -> str:
    lines = [f"prepared {result['lang']} ({result['source']}) from {result['corpus_dir']}"
             + (" [cached]" if result.get("reused_cache") else "")]
    for split, n in result["counts"].items():
        lines.append(f"  {split:<6} {n:>7} utts  {result['hours'][split]:7.3f} h  "
                     f"{result['speakers'][split]:>4} speakers  {result['manifests'][split]}")
    lines.append(f"data card: {result['data_card']}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("prepare")
    def prepare(
        lang: str = typer.Option("kannada", "--lang", help="Language: kannada or hindi (or kn, hi)."),
        source: str = typer.Option("builtin", "--source", help="Where the data comes from (builtin: procedural "
                                   "images described by synthetic speech; vaani and manifest come later)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the built-in corpus (same seed, same corpus)."),
        num_align: int = typer.Option(800, "--num-align", help="Untranscribed audio-image pairs for alignment."),
        num_train: int = typer.Option(300, "--num-train", help="Transcribed training utterances."),
        num_dev: int = typer.Option(60, "--num-dev", help="Dev utterances (speakers unseen in train/align)."),
        num_test: int = typer.Option(120, "--num-test", help="Test utterances (speakers unseen in train/align)."),
        run_dir: RunDirOption = None,
        force: ForceOption = False,
        as_json: JsonOption = False,
    ) -> None:
        """Write the align/train/dev/test manifests and a data card into the run directory.

        The built-in corpus is cached in $AVASR_HOME/corpora (same language, seed and sizes: same files).

        Dev and test speakers never occur in train or align.

        Examples:

        \b
            avasr prepare --lang kannada
            avasr -r runs/direct prepare --lang hindi --seed 1
        """
        from avasr_cli.stages.prepare import PrepareConfig, run_prepare

        cfg = PrepareConfig(lang=lang, source=source, seed=seed, num_align=num_align, num_train=num_train,
                            num_dev=num_dev, num_test=num_test).validate()
        run_stage("prepare", run_dir, cfg, run_prepare, force=force, as_json=as_json, summary=_summary)
