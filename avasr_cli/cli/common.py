"""Shared pieces of the Typer layer: the run-directory option, consoles, error rendering, stage runner.

Results go to stdout (``out``); logs, progress and errors go to stderr (``err``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console

from avasr_cli.errors import AvasrError

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

RunDirOption = Annotated[
    Optional[Path],
    typer.Option(
        "--run-dir",
        "-r",
        envvar="AVASR_RUN_DIR",
        help="Run directory to read and write (default: $AVASR_RUN_DIR, else the current directory).",
        show_default=False,
    ),
]
ForceOption = Annotated[bool, typer.Option("--force", help="Redo the stage even if the run already finished it.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (for scripts).")]
GpusOption = Annotated[
    int, typer.Option("--gpus", min=0, help="GPUs per node (0 = CPU). More than one runs Lightning DDP.")
]
NodesOption = Annotated[int, typer.Option("--nodes", min=1, help="Number of nodes (Lightning DDP; torchrun/SLURM).")]


def render_error(exc: AvasrError) -> None:
    err.print(f"[bold red]Error:[/bold red] {exc.message}", highlight=False, soft_wrap=True)
    if exc.hint:
        err.print(f"[bold]Hint:[/bold] {exc.hint}", highlight=False, soft_wrap=True)


def debug() -> bool:
    return os.environ.get("AVASR_DEBUG", "") not in ("", "0")


def reporter():
    from avasr_cli.progress import RichReporter

    return RichReporter(err)


def _recorded_options(name: str, cfg, previous: dict) -> dict:
    """The options a finished stage was run with, as they would read today: options added since it ran
    take the value they had then: their default, unless the config's ``upgrade_record`` says otherwise
    (align: siglip's bias was -10 before ``--siglip-bias``)."""
    import dataclasses

    recorded = previous.get("config") or {}
    upgrade = getattr(type(cfg), "upgrade_record", None)  # a config's own reading of its older records
    if upgrade is not None:
        recorded = upgrade(recorded)
    try:
        defaults = json.loads(json.dumps(dataclasses.asdict(type(cfg)()), default=str))
    except TypeError:  # a config without defaults for every field
        return recorded
    return {**{k: v for k, v in defaults.items() if k not in recorded}, **recorded}


def run_stage(
    name: str,
    run_dir: Optional[Path],
    cfg: Any,
    fn: Callable[..., Any],
    *,
    force: bool = False,
    as_json: bool = False,
    summary: Callable[[Any], str] | None = None,
    inputs: Callable[[Any, Any], dict] | None = None,
) -> Any:
    """Lock the run directory, skip a finished stage with the same config and — when the stage names its
    ``inputs`` (run, cfg → fingerprint, recorded in its result) — the same inputs (unless ``--force``),
    run it, record it, and print the result."""
    import dataclasses

    from avasr_cli.progress import Reporter
    from avasr_cli.run import is_secondary_rank, resolve_run_dir

    run = resolve_run_dir(run_dir)
    if is_secondary_rank():  # a DDP worker process: train, let rank 0 lock, record and print
        fn(run, cfg, Reporter())
        raise SystemExit(0)
    command = " ".join([Path(sys.argv[0]).name] + sys.argv[1:])
    with run.lock(command):
        previous = run.stage(name)
        cfg_dict = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))  # as run.json stores it
        same = previous is not None and not force and _recorded_options(name, cfg, previous) == cfg_dict
        changed = []
        if same and inputs is not None:
            now, then = inputs(run, cfg), (previous.get("result") or {}).get("inputs") or {}
            changed = [k for k in sorted(set(now) | set(then)) if now.get(k) != then.get(k)]
        if same and not changed:
            err.print(f"[green]✓[/green] {name} already finished in {run.root} (use --force to redo it)")
            result = previous["result"]
        else:
            if force:  # start training stages afresh rather than resuming an older run's checkpoints
                import shutil

                shutil.rmtree(run.root / name / "checkpoints", ignore_errors=True)
            if changed:
                err.print(f"{name} finished before with the same options, but its inputs changed since "
                          f"({', '.join(changed)}): running it again")
            err.print(f"[bold]avasr {name}[/bold] → {run.root}")
            result = fn(run, cfg, reporter())
            run.record_stage(name, cfg_dict, result)
            result = json.loads(json.dumps(dataclasses.asdict(result) if dataclasses.is_dataclass(result) else result, default=str))
    if as_json:
        out.print_json(json.dumps(result, ensure_ascii=False))
    elif summary is not None:
        out.print(summary(result))
    return result
