"""The ``avasr`` command: six commands over one run directory, and ``pretrain`` for the shared start point.

Importing this module must stay cheap (no torch, NeMo or transformers): ``avasr --help`` and
``avasr compare`` start in well under a second.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from avasr_cli import __version__
from avasr_cli.cli import align, compare, embed, evaluate, finetune, prepare, pretrain
from avasr_cli.cli.common import debug, render_error
from avasr_cli.errors import AvasrError

app = typer.Typer(
    name="avasr",
    help=(
        "Align a speech encoder with image representations before ASR fine-tuning.\n\n"
        "Stages read and write one run directory (--run-dir, $AVASR_RUN_DIR, or the current directory):\n\n"
        "prepare → embed-images → align → finetune → evaluate, then compare runs.\n\n"
        "pretrain builds the self-supervised starting encoder once per machine (shared, not per run)."
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"avasr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    run_dir: Optional[Path] = typer.Option(
        None, "--run-dir", "-r", help="Run directory for the command that follows (same as the command's own --run-dir).",
        show_default=False,
    ),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    if run_dir is not None:
        os.environ["AVASR_RUN_DIR"] = str(run_dir)


for _module in (pretrain, prepare, embed, align, finetune, evaluate, compare):
    _module.register(app)


def main() -> None:
    try:
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:  # click turns Ctrl-C into a returned 130 without standalone mode
            from avasr_cli.cli.common import err

            if rc == 130:
                err.print("Interrupted; rerun the same command to resume.")
            sys.exit(rc)
    except AvasrError as exc:
        if debug():
            raise
        render_error(exc)
        sys.exit(exc.exit_code)
    except typer.Abort:
        from avasr_cli.cli.common import err

        err.print("Aborted.")
        sys.exit(130)
    except KeyboardInterrupt:
        from avasr_cli.cli.common import err

        err.print("Interrupted; rerun the same command to resume.")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except SystemExit as exc:  # Lightning turns SIGTERM into SIGTERMException(SystemExit) with no code: exit 0
        if type(exc).__name__ != "SIGTERMException":
            raise
        from avasr_cli.cli.common import err

        err.print("Terminated (SIGTERM); rerun the same command to resume.")
        sys.exit(143)
    except Exception as exc:  # click usage errors, OS errors naming a path, and the unexpected
        import click

        from avasr_cli.errors import from_os_error

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if debug():
            raise
        # a path of the wrong kind, missing, unreadable, unwritable, on a full disk: one line naming it
        mapped = from_os_error(exc) if isinstance(exc, OSError) else None
        if mapped is not None:
            render_error(mapped)
            sys.exit(mapped.exit_code)
        from avasr_cli.cli.common import err

        err.print(f"[bold red]Error:[/bold red] unexpected {type(exc).__name__}: {exc}", highlight=False)
        err.print("[bold]Hint:[/bold] rerun with AVASR_DEBUG=1 for the traceback and report it", highlight=False)
        sys.exit(1)
