"""``avasr evaluate``."""

from __future__ import annotations

from typing import Annotated

import typer

from avasr_cli.cli.common import ForceOption, GpusOption, JsonOption, NodesOption, RunDirOption, run_stage


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate(
        split: Annotated[str, typer.Option(help="Comma-separated splits to score.")] = "dev,test",
        batch_size: Annotated[int, typer.Option(help="Transcription batch size.")] = 16,
        device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
        decoder: Annotated[str, typer.Option(help="Hybrid models: default (transducer) or ctc.")] = "default",
        gpus: GpusOption = 0,
        nodes: NodesOption = 1,
        cpu_procs: Annotated[int, typer.Option(help="With --gpus 0: CPU processes (DDP over gloo), mostly for testing.")] = 1,
        run_dir: RunDirOption = None,
        force: ForceOption = False,
        json_out: JsonOption = False,
    ) -> None:
        """Transcribe dev/test with the fine-tuned model and score WER and CER.

        Scores with jiwer after avasr's documented normalisation for Indic scripts (NFC, punctuation and
        Vaani markup removed). Writes reports/wer-<split>.json, hyps-<split>.jsonl and errors-<split>.txt.

        [bold]Examples:[/bold]

            avasr evaluate

            avasr -r runs/align evaluate --split test --json

            avasr evaluate --gpus 4   # each GPU transcribes a quarter of every split
        """
        from avasr_cli.stages.evaluate import EvaluateConfig, describe, run_evaluate

        cfg = EvaluateConfig(splits=tuple(s.strip() for s in split.split(",") if s.strip()), batch_size=batch_size,
                             device=device, decoder=decoder, gpus=gpus, nodes=nodes, cpu_procs=cpu_procs)
        cfg.validate()
        run_stage("evaluate", run_dir, cfg, run_evaluate, force=force, as_json=json_out, summary=describe)
